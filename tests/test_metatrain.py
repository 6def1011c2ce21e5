"""Meta-training: task sources disjoint from the stream, determinism, the disk cache, and
whether a meta-trained initialization adapts faster than a random one."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from lifelong.scenarios.rotated import RotatedScenario

from lifelong import ImageScenario, Stream, UserError
from lifelong.data import load_dataset, load_uci_digits
from lifelong.functional import Params, forward, loss_fn, params_of, sgd_inner_loop
from lifelong.metatrain import (
    MIN_ANGLE_GAP,
    MAMLConfig,
    MetaTaskSource,
    OMLConfig,
    ReptileConfig,
    cache_root,
    cached_init,
    meta_init,
    meta_tasks,
    meta_train_maml,
    meta_train_oml,
    meta_train_reptile,
    model_shape,
    pln_names,
)
from lifelong.model import MLP
from lifelong.registry import find_scenario
from lifelong.strategy import StreamInfo

HEAD = ("head.weight", "head.bias")


def info_of(stream: Stream) -> StreamInfo:
    return StreamInfo(stream.n_tasks, stream.setting, stream.n_outputs, stream.n_heads, 784)


def make(name: str, **settings: object) -> ImageScenario:
    return cast(ImageScenario, find_scenario(name)(**settings))


def setup(
    name: str, seed: int = 0, **settings: object
) -> tuple[ImageScenario, Stream, MetaTaskSource]:
    scenario = make(name, **settings)
    stream = scenario.build(seed)
    return scenario, stream, meta_tasks(scenario, info_of(stream), seed)


def fashion_installed() -> bool:
    try:
        load_dataset("fashion-mnist")
    except UserError:
        return False
    return True


def test_permuted_meta_tasks_are_new_permutations_of_training_images_only() -> None:
    _, stream, source = setup("permuted-mnist", seed=3, n_tasks=5, samples_per_task=50)
    data = load_dataset("mnist5k")
    assert source.kind == "permuted" and source.images is data.x_train
    flat_test = data.x_test.flatten(1)
    for task in source.tasks:
        assert task.permutation is not None
        assert not any(torch.equal(flat_test[:, task.permutation], t.x_test) for t in stream.tasks)
    train = {bytes(img.numpy()) for img in data.x_train.flatten(1)}
    test_only = {bytes(img.numpy()) for img in flat_test} - train
    g = torch.Generator().manual_seed(0)
    for t in range(3):
        perm = source.tasks[t].permutation
        assert perm is not None
        batch = source.sample(t, 40, g)
        images = batch.x.mul(255).round().to(torch.uint8)[:, perm.argsort()]
        seen = {bytes(img.numpy()) for img in images}
        assert seen <= train and not seen & test_only
    assert all(int(pool.max()) < len(data.y_train) for pool in source.pools.values())


def test_source_is_a_function_of_the_seed() -> None:
    scenario, stream, source = setup("permuted-mnist", seed=1, n_tasks=3, samples_per_task=10)
    again = meta_tasks(scenario, info_of(stream), 1)
    other = meta_tasks(scenario, info_of(stream), 2)
    assert again.key == source.key != other.key
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(source.sample(1, 8, g1).x, again.sample(1, 8, g2).x)


def test_rotated_meta_angles_avoid_the_evaluation_angles() -> None:
    scenario, _, source = setup("rotated-mnist", seed=4, n_tasks=20, samples_per_task=10)
    assert isinstance(scenario, RotatedScenario)
    evaluation = scenario.task_angles(4)
    assert source.kind == "rotated"
    for task in source.tasks:
        assert task.angle is not None and 180.0 <= task.angle < 360.0
        gaps = [abs((task.angle - a + 180.0) % 360.0 - 180.0) for a in evaluation]
        assert min(gaps) >= MIN_ANGLE_GAP
    batch = source.sample(0, 4, torch.Generator().manual_seed(0))
    assert batch.x.shape == (4, 784) and 0.0 <= float(batch.x.min()) <= float(batch.x.max()) <= 1


@pytest.mark.parametrize("setting", ["class", "domain", "task"])
def test_split_meta_tasks_follow_the_stream_layout(setting: str) -> None:
    scenario = make("split-mnist", setting=setting, samples_per_task=10)
    stream = scenario.build(0)
    info = info_of(stream)
    source = meta_tasks(scenario, info, 0, source="permuted")
    g = torch.Generator().manual_seed(0)
    for i, task in enumerate(source.tasks):
        assert len(task.classes) == 2 and task.permutation is not None
        assert all(0 <= t < info.n_outputs for t in task.targets)
        assert 0 <= task.head < info.n_heads
        batch = source.sample(i, 16, g)
        assert set(batch.y.tolist()) <= set(task.targets)
        assert (batch.task_ids == task.head).all()
    if setting == "class":
        assert {t for task in source.tasks for t in task.targets} == set(range(10))
    model = MLP(784, (8,), info.n_outputs, info.n_heads)
    batch = source.sample_mixed(12, g)
    assert forward(model, params_of(model), batch.x, batch.task_ids).shape == (12, info.n_outputs)


@pytest.mark.parametrize(("setting", "count"), [("class", 3), ("class", 10), ("task", 3)])
def test_oml_trajectories_span_classes_across_small_tasks(setting: str, count: int) -> None:
    from lifelong.metatrain import _episode_classes, _output_row

    scenario = make("split-mnist", setting=setting, samples_per_task=10)
    source = meta_tasks(scenario, info_of(scenario.build(0)), 0, source="permuted")
    g = torch.Generator().manual_seed(0)
    for task in range(len(source.tasks)):
        chosen = _episode_classes(source, task, count, g)
        rows = [_output_row(source, t, i) for t, i in chosen]
        assert chosen[0][0] == task and len(set(rows)) == len(rows)
        heads = {source.tasks[t].head for t, _ in chosen}
        assert heads == {source.tasks[task].head}
        # class-IL: every output row is free for other tasks; task-IL: one 2-class head
        assert len(chosen) == (min(count, 10) if setting == "class" else 2)


def test_oml_trajectories_stay_within_a_task_with_enough_classes() -> None:
    from lifelong.metatrain import _episode_classes

    _, _, source = setup("permuted-mnist", n_tasks=2, samples_per_task=20)
    chosen = _episode_classes(source, 1, 3, torch.Generator().manual_seed(0))
    assert [t for t, _ in chosen] == [1, 1, 1] and len({i for _, i in chosen}) == 3


def sklearn_installed() -> bool:
    try:
        load_uci_digits()
    except UserError:
        return False
    return True


def test_split_auto_source_holds_out_the_stream_images() -> None:
    _, _, source = setup("split-mnist", samples_per_task=10)
    if sklearn_installed():
        assert (source.kind, source.dataset) == ("uci-digits", "uci-digits")
        assert all(task.permutation is None and task.angle is None for task in source.tasks)
    elif fashion_installed():
        assert (source.kind, source.dataset) == ("fashion-mnist", "fashion-mnist")
        assert all(task.permutation is None and task.angle is None for task in source.tasks)
    else:
        assert source.kind == "permuted"
        assert all(task.permutation is not None for task in source.tasks)
    if fashion_installed():  # a Fashion-MNIST stream meta-trains on the embedded digits
        _, _, clothes = setup("split-mnist", samples_per_task=10, dataset="fashion-mnist")
        assert clothes.kind == "mnist5k"


def test_split_auto_source_falls_back_without_scikit_learn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    from lifelong import data

    monkeypatch.setattr(data, "_UCI_CACHE", [])
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    _, _, source = setup("split-mnist", samples_per_task=10)
    assert source.kind == ("fashion-mnist" if fashion_installed() else "permuted")


def test_bad_sources_fail_early() -> None:
    scenario = make("split-mnist", samples_per_task=10)
    info = info_of(scenario.build(0))
    with pytest.raises(UserError, match="did you mean 'fashion-mnist'"):
        meta_tasks(scenario, info, 0, source="fashon-mnist")
    with pytest.raises(UserError, match="classes of the mnist5k stream"):
        meta_tasks(scenario, info, 0, source="mnist5k")


TINY: dict[str, tuple[Callable[..., Params], Any]] = {
    "maml": (meta_train_maml, MAMLConfig(meta_steps=3, tasks_per_batch=2, query_size=8)),
    "reptile": (meta_train_reptile, ReptileConfig(meta_steps=3, tasks_per_batch=2)),
    "oml": (meta_train_oml, OMLConfig(meta_steps=3, samples_per_class=2, random_batch=6)),
}


@pytest.mark.parametrize("kind", sorted(TINY))
def test_meta_training_is_deterministic(kind: str) -> None:
    _, _, source = setup("permuted-mnist", n_tasks=3, samples_per_task=10)
    train, cfg = TINY[kind]
    model = MLP(784, (16,), 10)
    before = params_of(model)
    a, b = train(model, source, cfg, seed=0), train(model, source, cfg, seed=0)
    c = train(model, source, cfg, seed=1)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not all(torch.equal(a[n], c[n]) for n in a)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # untouched
    assert all(not t.requires_grad for t in a.values())


def test_cache_hit_returns_identical_tensors_without_recomputing(tmp_path: Path) -> None:
    calls = []

    def compute() -> Params:
        calls.append(1)
        g = torch.Generator().manual_seed(len(calls))
        return {"w": torch.randn(3, 2, generator=g), "b": torch.randn(2, generator=g)}

    cfg, shape = MAMLConfig(), {"w": "float32[3, 2]", "b": "float32[2]"}
    first = cached_init("maml", cfg, "src", shape, compute, seed=0, cache_dir=tmp_path)
    second = cached_init("maml", cfg, "src", shape, compute, seed=0, cache_dir=tmp_path)
    assert len(calls) == 1 and all(torch.equal(first[n], second[n]) for n in first)
    (path,) = tmp_path.glob("*.pt")
    stored = torch.load(path, weights_only=True)
    assert all(torch.equal(stored["params"][n], first[n]) for n in first)
    assert '"kind": "maml"' in stored["key"] and '"seed": 0' in stored["key"]
    for other_cfg, source, seed in (
        (MAMLConfig(first_order=True), "src", 0),
        (cfg, "src", 1),
        (cfg, "other", 0),
    ):
        cached_init("maml", other_cfg, source, shape, compute, seed=seed, cache_dir=tmp_path)
    assert len(calls) == 4 and len(list(tmp_path.glob("*.pt"))) == 4
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporary behind


def test_oml_pln_layers_are_part_of_the_cache_key(tmp_path: Path) -> None:
    _, _, source = setup("permuted-mnist", n_tasks=3, samples_per_task=10)
    model = MLP(784, (16, 16), 10)
    one = OMLConfig(meta_steps=2, samples_per_class=1, random_batch=4)
    two = OMLConfig(meta_steps=2, samples_per_class=1, random_batch=4, pln_layers=2)
    a = meta_init("oml", model, source, one, seed=0, cache_dir=tmp_path)
    b = meta_init("oml", model, source, two, seed=0, cache_dir=tmp_path)
    keys = sorted(torch.load(p, weights_only=True)["key"] for p in tmp_path.glob("*.pt"))
    assert len(keys) == 2 and ['"pln_layers": 1' in k for k in keys].count(True) == 1
    assert not torch.equal(a["body.2.weight"], b["body.2.weight"])


def test_oml_pln_is_the_last_linear_layers_in_module_order() -> None:
    model = MLP(784, (16, 16), 10)
    assert pln_names(model, 1) == list(HEAD)
    assert pln_names(model, 2) == ["body.2.weight", "body.2.bias", *HEAD]
    with pytest.raises(UserError, match="pln_layers=3 leaves no representation"):
        pln_names(model, 3)
    with pytest.raises(ValueError, match="ending with the output layer"):
        pln_names(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)), 1)


def test_oml_inner_loop_adapts_the_whole_pln(monkeypatch: pytest.MonkeyPatch) -> None:
    """With pln_layers=2 the inner SGD steps move body.2.* and head.*, never body.0.*."""
    import lifelong.metatrain as metatrain

    seen: list[list[str]] = []
    inner = metatrain.sgd_inner_loop

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(list(kwargs["only"]))
        return inner(*args, **kwargs)

    monkeypatch.setattr(metatrain, "sgd_inner_loop", spy)
    _, _, source = setup("permuted-mnist", n_tasks=3, samples_per_task=10)
    cfg = OMLConfig(meta_steps=2, samples_per_class=1, random_batch=4, pln_layers=2)
    meta_train_oml(MLP(784, (16, 16), 10), source, cfg, seed=0)
    assert seen == [["body.2.weight", "body.2.bias", *HEAD]] * 2


def test_cache_root_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIFELONG_CACHE", str(tmp_path))
    assert cache_root() == tmp_path / "inits"
    monkeypatch.delenv("LIFELONG_CACHE")
    assert cache_root() == Path.home() / ".cache" / "lifelong" / "inits"


def test_meta_init_loads_the_cached_weights_into_the_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, source = setup("permuted-mnist", n_tasks=3, samples_per_task=10)
    model = MLP(784, (16,), 10)
    cfg = TINY["reptile"][1]
    params = meta_init("reptile", model, source, cfg, seed=0, progress=True, cache_dir=tmp_path)
    assert all(torch.equal(p, params[n]) for n, p in model.named_parameters())
    assert capsys.readouterr().err == ""  # no bar when stderr is not a terminal
    other = MLP(784, (16,), 10)
    again = meta_init("reptile", other, source, cfg, seed=0, cache_dir=tmp_path)
    assert all(torch.equal(again[n], params[n]) for n in params)
    assert len(list(tmp_path.glob("*.pt"))) == 1
    assert model_shape(model)["body.0.weight"] == "float32[16, 784]"
    with pytest.raises(UserError, match="did you mean 'maml'"):
        meta_init("mamll", model, source, cfg, seed=0, cache_dir=tmp_path)


def few_shot_accuracy(
    model: MLP,
    params: Params,
    held_out: MetaTaskSource,
    *,
    steps: int,
    batch: int,
    lr: float,
    only: tuple[str, ...] | None = None,
) -> float:
    """Mean query accuracy after ``steps`` SGD steps on 30 held-out tasks."""
    loss, g = loss_fn(model), torch.Generator().manual_seed(123)
    start = {n: p.detach().requires_grad_(True) for n, p in params.items()}
    correct = []
    for _ in range(30):
        task = held_out.sample_task(g)
        support = [held_out.sample(task, batch, g) for _ in range(steps)]
        fast = sgd_inner_loop(loss, start, support, lr, only=only)[-1]
        query = held_out.sample(task, 100, g)
        with torch.no_grad():
            logits = forward(model, fast, query.x, query.task_ids)
        correct.append((logits.argmax(1) == query.y).double().mean())
    return float(torch.stack(correct).mean())


def random_init(model: MLP) -> Params:
    torch.manual_seed(0)
    return params_of(MLP(784, (32,), model.n_outputs, model.n_heads))


def test_maml_adapts_to_held_out_permutations_faster_than_random_init() -> None:
    scenario, stream, source = setup("permuted-mnist", n_tasks=3, samples_per_task=10)
    held_out = meta_tasks(scenario, info_of(stream), 7)
    model = MLP(784, (32,), 10)
    meta = meta_train_maml(model, source, MAMLConfig(meta_steps=30), seed=0)
    random = few_shot_accuracy(model, random_init(model), held_out, steps=3, batch=10, lr=0.1)
    trained = few_shot_accuracy(model, meta, held_out, steps=3, batch=10, lr=0.1)
    assert trained > random + 0.03, (trained, random)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["maml-first-order", "reptile", "oml"])
def test_meta_initializations_adapt_to_held_out_fashion_pairs(kind: str) -> None:
    if not fashion_installed():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    scenario = make("split-mnist", setting="domain", samples_per_task=10)
    info = info_of(scenario.build(0))
    source = meta_tasks(scenario, info, 0, source="fashion-mnist")
    held_out = meta_tasks(scenario, info, 7, source="fashion-mnist")
    model = MLP(784, (32,), 2)
    adapt = partial(few_shot_accuracy, steps=3, batch=10, lr=0.1)
    if kind == "oml":  # RLN frozen: only the head learns, one sample per step
        meta = meta_train_oml(model, source, OMLConfig(meta_steps=100), seed=0)
        adapt = partial(few_shot_accuracy, steps=10, batch=1, lr=0.03, only=HEAD)
    elif kind == "reptile":
        meta = meta_train_reptile(model, source, ReptileConfig(meta_steps=100), seed=0)
    else:
        meta = meta_train_maml(model, source, MAMLConfig(meta_steps=100, first_order=True), seed=0)
    random, trained = adapt(model, random_init(model), held_out), adapt(model, meta, held_out)
    assert trained > random + 0.05, (trained, random)


def test_uci_digits_source_lays_out_the_split_stream_tasks() -> None:
    pytest.importorskip("sklearn", reason="the UCI digits ship with scikit-learn")
    scenario = make("split-mnist", samples_per_task=10)
    info = info_of(scenario.build(0))
    assert (info.setting, info.n_tasks, info.n_outputs) == ("class", 5, 10)
    source = meta_tasks(scenario, info, 0, source="uci-digits", n_tasks=5)
    assert (source.kind, source.dataset) == ("uci-digits", "uci-digits")
    assert source.images.shape == (1797, 28, 28) and len(source.tasks) == 5
    assert sorted(c for task in source.tasks for c in task.classes) == list(range(10))
    assert [task.targets for task in source.tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    assert all(task.permutation is None and task.angle is None for task in source.tasks)
    batch = source.sample(3, 16, torch.Generator().manual_seed(0))
    assert batch.x.shape == (16, 784) and 0 <= float(batch.x.min()) <= float(batch.x.max()) <= 1
    assert set(batch.y.tolist()) <= {6, 7}
    pool = meta_tasks(scenario, info, 0, source="uci-digits")  # the default pool of 20
    assert len(pool.tasks) == 20 and {t.classes for t in pool.tasks} != {pool.tasks[0].classes}
    permuted = meta_tasks(scenario, info, 0, source="permuted", n_tasks=5)
    assert source.key != permuted.key  # the init cache keys on the source


def test_uci_digits_source_without_scikit_learn_fails_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    from lifelong import data

    monkeypatch.setattr(data, "_UCI_CACHE", [])
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    scenario = make("split-mnist", samples_per_task=10)
    with pytest.raises(UserError, match="pip install scikit-learn") as error:
        meta_tasks(scenario, info_of(scenario.build(0)), 0, source="uci-digits")
    assert "\n" not in str(error.value)
