"""The init axis: OML freezes its representation, MAML and Reptile start from meta-trained
weights (deterministic per seed, cached on disk), and a hand-built stream is refused.
The inits live in strategies/random_init.py, maml.py, reptile.py and oml.py."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from lifelong.scenarios.split import SplitScenario
from lifelong.strategies.maml import MamlInit
from lifelong.strategies.oml import OmlInit
from lifelong.strategies.random_init import RandomInit
from lifelong.strategies.reptile import ReptileInit

from lifelong import MetaInit, RunResult, Stream, StreamInfo, UserError, compose
from lifelong.composition.compose import Composite, configure
from lifelong.composition.plan import plan_runs
from lifelong.composition.registry import parts
from lifelong.contracts.init_axis import Init
from lifelong.contracts.params import as_config
from lifelong.execution.runner import execute
from lifelong.execution.suite import find_suite, load_suite
from lifelong.meta.meta_tasks import meta_tasks
from lifelong.meta.metatrain import cache_root
from lifelong.models.mlp import MLP

CPU = torch.device("cpu")
TINY = {"hidden": "16", "samples_per_task": 40, "batch_size": 10}
META: dict[str, Any] = {"meta_steps": 3, "source": "permuted"}  # permuted: no Fashion-MNIST to load
HEAD = {"head.weight", "head.bias"}
INITS: dict[str, type[MamlInit | ReptileInit | OmlInit]] = {
    "maml": MamlInit,
    "reptile": ReptileInit,
    "oml": OmlInit,
}


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """A private init cache (conftest keeps every test on one torch thread)."""
    monkeypatch.setenv("LIFELONG_CACHE", str(tmp_path / "cache"))


def run(spec: str, seed: int = 0, **settings: Any) -> RunResult:
    """One run on a tiny split-mnist stream (40 digits a task, hidden width 16)."""
    meta = META if spec.split("+")[0] in ("oml", "maml", "reptile") else {}
    (plan,) = plan_runs("split-mnist", [spec], [seed], {**TINY, **meta, **settings})
    return execute(plan, plan.scenario.build(seed), CPU)


def info_for(seed: int = 0) -> tuple[StreamInfo, MLP]:
    scenario = SplitScenario(samples_per_task=40)
    stream: Stream = scenario.build(seed)
    info = StreamInfo.of(stream, scenario, seed)
    torch.manual_seed(seed)
    return info, MLP(stream.input_dim, (16,), stream.n_outputs, stream.n_heads)


def test_init_parts_are_registered_and_compose_with_any_axis() -> None:
    assert parts()["random"] is RandomInit
    for name, cls in INITS.items():
        assert parts()[name] is cls and issubclass(cls, Init)
    for spec, init in [("oml+er", "oml"), ("maml+ewc", "maml"), ("reptile+er", "reptile")]:
        composite = compose(spec)
        assert composite.init is not None and composite.init.name == init
        assert composite.name == spec and composite.parts()[0] is composite.init
    assert compose("er").init is None and Composite().init is None


def test_two_inits_are_refused_in_one_line() -> None:
    with pytest.raises(UserError, match="two inits") as error:
        compose("oml+maml+er")
    assert "\n" not in str(error.value)


def test_settings_reach_the_init_whose_fields_are_its_config() -> None:
    composite, used = configure("oml+er", {"oml.meta_steps": 7, "lr": 0.05, "reset_head": False})
    assert composite.init == OmlInit(meta_steps=7, reset_head=False)
    assert used == {"oml.meta_steps", "lr", "reset_head"}
    for cls in INITS.values():  # one declaration: the fields, in the order of the old configs
        assert list(as_config(cls()))[:2] == ["source", "meta_steps"]
    assert list(as_config(MamlInit()))[2:] == [
        "tasks_per_batch",
        "inner_steps",
        "inner_batch",
        "query_size",
        "inner_lr",
        "outer_lr",
        "first_order",
    ]


@pytest.mark.parametrize("reset_head", [True, False])
def test_oml_freezes_the_meta_trained_representation(reset_head: bool) -> None:
    info, model = info_for()
    oml = OmlInit(**META, reset_head=reset_head)
    trainable = oml.prepare(model, info, torch.Generator().manual_seed(0))
    assert trainable == HEAD
    meta = oml.load_meta_trained(MLP(784, (16,), 10), info)
    for name, p in model.named_parameters():
        assert p.requires_grad == (name in HEAD)
        if name not in HEAD:
            assert torch.equal(p.detach(), meta[name])
    assert torch.equal(model.head.weight.detach(), meta["head.weight"]) != reset_head
    assert (torch.count_nonzero(model.head.bias) == 0) == reset_head


def trained_by_the_stream(
    monkeypatch: pytest.MonkeyPatch, spec: str, **settings: Any
) -> tuple[set[str], dict[str, bool]]:
    """Run ``spec``; the names its composite trains, and by name whether a weight moved."""
    starts: dict[str, torch.Tensor] = {}
    models: list[torch.nn.Module] = []
    learned: set[str] = set()
    setup = Composite.setup

    def spy(self: Composite, model: torch.nn.Module, info: StreamInfo, g: torch.Generator) -> None:
        setup(self, model, info, g)
        starts.update({n: p.detach().clone() for n, p in model.named_parameters()})
        models.append(model)
        learned.update(self.params)

    monkeypatch.setattr(Composite, "setup", spy)
    result = run(spec, **settings)
    assert result.status == "ok", result.error
    moved = {n: not torch.equal(p.detach(), starts[n]) for n, p in models[0].named_parameters()}
    return learned, moved


def test_oml_stream_changes_only_the_head(monkeypatch: pytest.MonkeyPatch) -> None:
    learned, moved = trained_by_the_stream(monkeypatch, "oml+er")
    assert learned == HEAD
    for name, changed in moved.items():
        assert changed == (name in HEAD), name


@pytest.mark.parametrize("regularizer", ["ewc", "online-ewc", "si", "mas", "lwf"])
def test_oml_combines_with_every_regularizer(regularizer: str) -> None:
    """The regularizers see only the PLN that learns (SI once indexed the frozen RLN too)."""
    result = run(f"oml+er+{regularizer}")
    assert result.status == "ok", result.error
    assert all(0.0 <= v <= 1.0 for row in result.matrix for v in row)


def test_vectorize_refuses_an_init_that_freezes_part_of_the_network() -> None:
    from lifelong.execution.vectorized import run_vectorized

    specs = plan_runs("split-mnist", ["oml+er"], [0, 1], {**TINY, **META})
    with pytest.raises(UserError, match="trains only part of the network"):
        run_vectorized(specs, [s.scenario.build(s.seed) for s in specs], CPU)


@pytest.mark.parametrize("kind", ["maml", "reptile"])
def test_meta_inits_change_the_start_deterministically_and_are_cached(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    cls: type[MetaInit] = INITS[kind]
    train = cls.meta_train

    def counted(self: MetaInit, *args: Any, **kwargs: Any) -> Any:
        calls.append(kind)
        return train(self, *args, **kwargs)

    monkeypatch.setattr(cls, "meta_train", counted)
    random_init = run("er")
    first = run(f"{kind}+er")
    again = run(f"{kind}+ewc")  # another strategy, same init config and seed: cached
    assert calls == [kind]
    assert first.init == again.init != random_init.init
    other = run(f"{kind}+er", seed=1)
    assert calls == [kind, kind] and other.init != first.init
    info, model = info_for()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert INITS[kind](**META).prepare(model, info, torch.Generator()) is None
    assert all(not torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert all(p.requires_grad for p in model.parameters())


def test_random_init_is_the_runner_init_bit_for_bit() -> None:
    plain = run("er")
    explicit = run("random+er")
    assert plain.init == explicit.init and plain.matrix == explicit.matrix


@pytest.mark.parametrize("kind", ["oml", "maml", "reptile"])
def test_a_hand_built_stream_is_refused_in_one_line(kind: str) -> None:
    info, model = info_for()
    bare = StreamInfo(info.n_tasks, info.setting, info.n_outputs, info.n_heads, info.input_dim)
    with pytest.raises(UserError, match="needs a scenario") as error:
        INITS[kind]().prepare(model, bare, torch.Generator())
    assert "\n" not in str(error.value)


TWO = {"body.2.weight", "body.2.bias", *HEAD}  # pln_layers=2 on MLP(784, (16, 16), 10)


@pytest.mark.parametrize("reset_head", [True, False])
def test_oml_with_a_two_layer_pln_freezes_only_the_first_layer(reset_head: bool) -> None:
    info, _ = info_for()
    torch.manual_seed(0)
    model = MLP(784, (16, 16), info.n_outputs)
    oml = OmlInit(**META, pln_layers=2, reset_head=reset_head)
    assert oml.pln_layers == 2
    assert oml.prepare(model, info, torch.Generator().manual_seed(0)) == TWO
    meta = oml.load_meta_trained(MLP(784, (16, 16), 10), info)
    for name, p in model.named_parameters():
        assert p.requires_grad == (name in TWO), name
        assert torch.equal(p.detach(), meta[name]) == (name not in TWO or not reset_head), name
    if reset_head:  # the whole PLN re-drawn: Kaiming-normal weights, zero biases
        assert torch.count_nonzero(model.body[2].bias) == 0
        assert torch.count_nonzero(model.head.bias) == 0


def test_oml_stream_with_a_two_layer_pln_trains_the_last_hidden_layer_and_the_head(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = {"hidden": "16,16", "oml.pln_layers": 2}
    learned, moved = trained_by_the_stream(monkeypatch, "oml+er", **settings)
    assert learned == TWO
    for name, changed in moved.items():
        assert changed == (name in TWO), name


@pytest.mark.parametrize("layers", [2, 5])
def test_oml_refuses_a_pln_that_leaves_no_rln_in_one_line(layers: int) -> None:
    info, model = info_for()  # MLP(784, (16,), 10): two Linear layers
    with pytest.raises(UserError, match=f"pln_layers={layers} leaves no representation") as error:
        OmlInit(**META, pln_layers=layers).prepare(model, info, torch.Generator())
    assert "\n" not in str(error.value) and "at most 1" in str(error.value)


def test_oml_meta_trains_on_the_uci_digits() -> None:
    pytest.importorskip("sklearn", reason="the UCI digits ship with scikit-learn")
    result = run("oml+er", source="uci-digits")
    assert result.status == "ok", result.error
    info, _ = info_for()
    assert isinstance(info.scenario, SplitScenario)
    source = meta_tasks(info.scenario, info, 0, source="uci-digits")
    (path,) = cache_root().glob("*.pt")
    assert f'"source": "{source.key}"' in torch.load(path, weights_only=True)["key"]


@pytest.mark.slow
def test_oml_er_with_the_meta_init_suite_settings_is_at_least_er_on_split_mnist() -> None:
    """Issue criterion: ``oml+er`` at least as good as ``er`` from a random init, same
    memory, Split-MNIST class-IL. The suite's OML settings (meta-trained on the UCI digits,
    a two-layer PLN) on seed 0 against ``er`` at its default lr and at its best (0.3);
    reports/meta-init.md has the three-seed figures. Meta-training takes about 2 minutes."""
    pytest.importorskip("sklearn", reason="the UCI digits ship with scikit-learn")
    path = find_suite("meta-init")
    assert path is not None
    suite = load_suite(path)
    oml = {k: v for k, v in suite.settings.items() if k.startswith(("oml.", "oml+er."))}
    (oml_er,) = plan_runs("split-mnist", ["oml+er"], [0], oml)
    ers = plan_runs("split-mnist", ["er"], [0], {}) + plan_runs(
        "split-mnist", ["er"], [0], {"er.lr": 0.3}
    )
    stream = oml_er.scenario.build(0)
    got = execute(oml_er, stream, CPU).metrics["acc"]
    best_er = max(execute(spec, stream, CPU).metrics["acc"] for spec in ers)
    assert got >= best_er, (got, best_er)
