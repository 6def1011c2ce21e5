"""The model axis: names and fields, the contract of every built-in model, the one builder's
refusals, and every strategy, part and composition with every built-in model on tiny
synthetic images of each shape (28x28x1, 32x32x3, 64x64x3)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from helpers import SMALL_MODELS, image_stream, model_settings, plan_one
from lifelong.strategies.oml import pln_names
from test_conformance import CASES, LIGHTER

from lifelong import MetaInit, UserError
from lifelong.cli import main
from lifelong.composition.registry import parts
from lifelong.contracts.stream import training_data
from lifelong.evaluation.result import run_key
from lifelong.execution.protocol import Protocol
from lifelong.execution.runner import OneSeed, execute
from lifelong.execution.vectorized import vectorizable
from lifelong.models.axis import build_model, default_model, find_model, models
from lifelong.models.convnets import CNN, LaMAMLConv, ResNet18Reduced
from lifelong.models.mlp import MLP

CPU = torch.device("cpu")
SHAPES = [(1, 28, 28), (3, 32, 32), (3, 64, 64)]
META_INITS = tuple(name for name, cls in parts().items() if issubclass(cls, MetaInit))
# Each case runs with one conv model and shape here, in turn (every model on every shape,
# 64x64 included, in every setting: the slow test).
COMBOS = [(m, s) for s in SHAPES[:2] for m in ("cnn", "resnet18-reduced", "lamaml-conv")]


def run(name: str, model: str, shape: tuple[int, int, int], setting: str = "class", **extra):
    used = name.split("+")
    lighter = {k: v for part, more in LIGHTER.items() if part in used for k, v in more.items()}
    settings = {"batch_size": "4", "eval_every": "2", **lighter, **model_settings(model), **extra}
    spec = plan_one(name, settings)
    return spec, execute(spec, image_stream(shape, setting), CPU)


def check_conforms(name: str, model: str, shape: tuple[int, int, int], setting: str) -> None:
    if any(init in name.split("+") for init in META_INITS) and shape != (1, 28, 28):
        with pytest.raises(UserError, match="meta-trains on 28x28 grey images"):
            run(name, model, shape, setting)
        return
    spec, first = run(name, model, shape, setting)
    assert first.ok, first.error
    n = len(first.matrix)
    assert n == 2 and all(len(row) == n for row in first.matrix)
    assert all(math.isfinite(v) for row in first.matrix for v in row)
    again = execute(spec, image_stream(shape, setting), CPU)
    assert first.matrix == again.matrix and first.curves == again.curves


@pytest.mark.parametrize("index", range(len(CASES)), ids=CASES)
def test_every_strategy_runs_with_a_conv_model(index: int) -> None:
    """Each strategy, part and composition with one of the conv models, in turn; the
    meta-learned inits on 28x28 inputs (their pools are 28x28 digits)."""
    name = CASES[index]
    model, shape = COMBOS[index % len(COMBOS)]
    if any(init in name.split("+") for init in META_INITS):
        shape = (1, 28, 28)
    check_conforms(name, model, shape, "class")


@pytest.mark.slow
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("model", sorted(SMALL_MODELS))
@pytest.mark.parametrize("name", CASES)
def test_every_strategy_runs_with_every_model(
    name: str, model: str, shape: tuple[int, int, int], any_setting: str
) -> None:
    check_conforms(name, model, shape, any_setting)


@pytest.mark.parametrize("model", sorted(SMALL_MODELS))
def test_meta_learners_take_functional_steps_on_each_model(model: str) -> None:
    """La-MAML, C-MAML, Sync-La-MAML and MER go through torch.func on every model (batch
    norm's buffers included) in the task-incremental setting: their steps move every layer."""
    stream = image_stream((3, 16, 16), "task")
    for name in ("la-maml", "c-maml", "sync-la-maml", "mer"):
        used = LIGHTER.get(name, {})
        spec = plan_one(name, {"batch_size": "4", **used, **model_settings(model)})
        trainer = OneSeed(spec, stream, CPU, None)
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        for task in (0, 1):
            trainer.before_task(task)
            for batch in trainer.batches(task):
                assert torch.isfinite(trainer.step(batch)).all()
        moved = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
        assert {n.split(".")[0] for n in moved} == {"body", "head"}, name


def test_meta_learned_inits_refuse_colour_images_in_one_line() -> None:
    with pytest.raises(UserError, match="3072 values"):
        run("oml", "resnet18-reduced", (3, 32, 32))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", sorted(SMALL_MODELS))
def test_every_model_keeps_the_contract(name: str, shape: tuple[int, int, int]) -> None:
    entry = find_model(name)
    fields = {"hidden": (8,)} if name == "mlp" else {}
    model = entry.build(shape, 3, 2, fields)
    x = torch.rand(5, *shape)
    flat = x.flatten(1)
    features = model.body(flat) if name == "mlp" else model.body(x)
    assert features.shape == (5, model.feature_dim)
    assert model.head(features).shape == (5, 3 * 2)
    assert (model.n_outputs, model.n_heads) == (3, 2)
    assert all(n.startswith(("body.", "head.")) for n, _ in model.named_parameters())
    ids = torch.tensor([0, 1, 1, 0, 1])
    out = model(flat, ids)
    assert torch.equal(out, model(x, ids))  # flat rows or images: the same logits
    every = model.head(features).view(5, 2, 3)
    assert torch.allclose(out, every[torch.arange(5), ids])


def test_the_reduced_resnet_is_gems() -> None:
    model = ResNet18Reduced((3, 32, 32), 100)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(convs) == 1 + 16 + 3 and len(bns) == len(convs)  # stem, 8 blocks, 3 shortcuts
    assert convs[0].out_channels == 20 and convs[-1].out_channels == 160
    assert all(c.bias is None for c in convs)
    assert model.feature_dim == 160 and model.head.in_features == 160
    assert ResNet18Reduced((3, 64, 64), 200).feature_dim == 160  # global average pool


@pytest.mark.parametrize(
    ("shape", "convs", "hidden"), [((3, 32, 32), 3, 320), ((3, 64, 64), 4, 640)]
)
def test_lamaml_conv_is_la_mamls_pc_cnn(
    shape: tuple[int, int, int], convs: int, hidden: int
) -> None:
    torch.manual_seed(0)
    model = LaMAMLConv(shape, 100)
    conv = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(conv) == convs and all(c.stride == (2, 2) and c.out_channels == 160 for c in conv)
    assert [m.in_features for m in linear] == [16 * 160, hidden, hidden]
    assert model.feature_dim == hidden and not any(
        isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()
    )
    assert all(float(m.bias.detach().abs().sum()) == 0 for m in conv + linear)
    std = float(linear[0].weight.detach().std())  # Kaiming normal: sqrt(2 / fan_in)
    assert abs(std - math.sqrt(2 / (16 * 160))) < 0.05 * std


def test_cnn_has_two_conv_layers() -> None:
    model = CNN((1, 28, 28), 10)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) == 2
    assert model.feature_dim == 128


def test_default_model_follows_the_input_shape() -> None:
    assert default_model((1, 28, 28)) == "mlp" and default_model((784,)) == "mlp"
    assert default_model((3, 32, 32)) == default_model((3, 64, 64)) == "resnet18-reduced"
    assert isinstance(build_model(Protocol(), image_stream((3, 32, 32))), ResNet18Reduced)
    assert isinstance(build_model(Protocol(), image_stream((1, 28, 28))), MLP)


def test_model_and_its_fields_are_settings_of_the_run() -> None:
    spec = plan_one("naive", {"model": "cnn", "model.hidden": "16", "model.channels": "4,8"})
    assert dict(spec.protocol.model_fields) == {"channels": (4, 8), "hidden": 16}
    model = build_model(spec.protocol, image_stream((1, 28, 28)))
    assert isinstance(model, CNN) and model.feature_dim == 16
    config = spec.config()["protocol"]
    assert config["model"] == "cnn" and config["model_fields"] == {"channels": [4, 8], "hidden": 16}
    other = plan_one("naive", {"model": "cnn", "model.hidden": "32"})
    assert run_key(spec.config()) != run_key(other.config())
    assert set(models()) == {"mlp", "cnn", "resnet18-reduced", "lamaml-conv"}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"model": "resnet18"}, "unknown model 'resnet18' (did you mean 'resnet18-reduced'?)"),
        ({"model.nf": "4"}, "name the model too"),
        ({"model": "cnn", "model.chanels": "4,8"}, "no field 'chanels' (did you mean 'channels'?)"),
        ({"model": "cnn", "model.hidden": "wide"}, "hidden='wide' is not a valid int"),
        ({"model": "mlp", "model.hidden": "8"}, "set it with --set hidden="),
        ({"model": "nowhere/nets.py:make"}, "model file nowhere/nets.py does not exist"),
        ({"model": "json:loads"}, "standard library"),
    ],
)
def test_bad_model_settings_are_one_line(settings: dict[str, str], message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        plan_one("naive", settings)


NETS = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, input_shape, n_outputs, n_heads=1, *, width: int = 8):
        """A tiny net.

        Args:
            width: hidden units
        """
        super().__init__()
        size = 1
        for s in input_shape:
            size *= s
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(size, width), nn.ReLU())
        self.head = nn.Linear(width, n_outputs * n_heads)
        self.n_outputs, self.n_heads, self.feature_dim = n_outputs, n_heads, width

    def forward(self, x, task_ids=None):
        return self.head(self.body(x))


def wrong_size(input_shape, n_outputs, n_heads):
    return Net(input_shape, n_outputs + 1, n_heads)


def breaks(input_shape, n_outputs, n_heads):
    return Net((5,), n_outputs, n_heads)


def not_a_module(input_shape, n_outputs, n_heads):
    return "a net"
'''


def test_a_users_factory_trains_and_its_fields_are_typed(tmp_path, capsys) -> None:
    path = tmp_path / "nets.py"
    path.write_text(NETS)
    entry = find_model(f"{path}:Net")
    assert entry.fields["width"].type is int and entry.fields["width"].doc == "hidden units"
    out = tmp_path / "out"
    argv = [
        "run",
        "split-mnist",
        "-s",
        "naive",
        "--set",
        "n_tasks=2",
        "--set",
        "samples_per_task=20",
    ]
    assert (
        main(
            [*argv, "--set", f"model={path}:Net", "--set", "model.width=4", "-q", "--out", str(out)]
        )
        == 0
    )
    (run,) = json.loads((out / "summary.json").read_text())["runs"]
    assert run["config"]["protocol"]["model_fields"] == {"width": 4}  # through the pool too
    spec = plan_one("naive", {"model": f"{path}:Net"})
    assert "code" in spec.config()  # editing the file makes new runs


def test_the_documented_factory_runs(tmp_path) -> None:
    docs = (Path(__file__).parents[1] / "docs" / "models.md").read_text()
    code = docs.split("```python\n# my_nets.py\n", 1)[1].split("```", 1)[0]
    (tmp_path / "my_nets.py").write_text(code)
    settings = {"model": f"{tmp_path / 'my_nets.py'}:Net", "model.width": "8", "setting": "task"}
    spec = plan_one("naive", settings)
    result = execute(spec, image_stream((1, 28, 28), "task"), CPU)
    assert result.ok and find_model(settings["model"]).fields["width"].doc == "hidden units"


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (
            "wrong_size",
            r"model .*wrong_size gives outputs \(2, 3\) for 2 inputs; .* needs \[B, 2\]",
        ),
        ("breaks", r"its forward fails on this stream's inputs \[1, 28, 28\].*RuntimeError"),
        ("not_a_module", "returned str, not a torch.nn.Module"),
        ("missing", "defines no 'missing'"),
    ],
)
def test_a_model_that_does_not_fit_is_refused_before_training(
    tmp_path, capsys, factory: str, message: str
) -> None:
    path = tmp_path / "nets.py"
    path.write_text(NETS)
    out = tmp_path / "out"
    argv = ["run", "split-mnist", "-s", "naive", "--set", "setting=domain", "-q"]
    assert main([*argv, "--set", f"model={path}:{factory}", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
    assert not (out / "summary.json").exists()


def test_evaluation_runs_in_eval_mode_and_leaves_batch_norm_alone() -> None:
    stream = image_stream((3, 32, 32))
    spec = plan_one("naive", model_settings("resnet18-reduced"))
    trainer = OneSeed(spec, stream, CPU, None)
    before = {n: b.clone() for n, b in trainer.model.named_buffers()}
    trainer.evaluate()
    assert trainer.model.training
    assert all(torch.equal(b, before[n]) for n, b in trainer.model.named_buffers())
    batch = next(iter(trainer.batches(0)))
    trainer.step(batch)  # training mode: the running statistics move
    assert not torch.equal(trainer.model.body.bn1.running_mean, before["body.bn1.running_mean"])


def test_amp_bf16_autocasts_the_step_and_channels_last_formats_conv_weights() -> None:
    stream = image_stream((3, 32, 32))
    settings = {**model_settings("resnet18-reduced"), "amp": "bf16", "channels_last": "true"}
    trainer = OneSeed(plan_one("naive", settings), stream, CPU, None)
    weight = trainer.model.body.conv1.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and weight.dtype == torch.float32
    seen = []
    hook = trainer.model.head.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    trainer.step(next(iter(trainer.batches(0))))
    trainer.evaluate()
    hook.remove()
    assert seen and set(seen) == {torch.bfloat16}
    plain = OneSeed(plan_one("naive", model_settings("resnet18-reduced")), stream, CPU, None)
    hook = plain.model.head.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    plain.step(next(iter(plain.batches(0))))
    assert seen[-1] == torch.float32


def test_amp_bf16_runs_the_default_mlp_through_the_reference_path() -> None:
    """The closed-form gradients are float32: under autocast the reference path runs."""
    stream = image_stream((1, 28, 28))
    for name in ("naive", "er", "ewc", "la-maml", "mer", "gem"):
        spec = plan_one(name, {"amp": "bf16", "hidden": "16", "batch_size": "4"})
        result = execute(spec, stream, CPU)
        assert result.ok, result.error


def test_gem_steps_channels_last_conv_weights() -> None:
    """GEM's step runs on flat views of the weights where they have them; channels-last
    conv weights have none, and it steps them as they are."""
    settings = {**model_settings("cnn"), "channels_last": "true", "batch_size": "4"}
    result = execute(plan_one("gem", settings), image_stream((1, 28, 28)), CPU)
    assert result.ok, result.error


def test_vectorize_takes_only_models_that_declare_closed_form(capsys) -> None:
    spec = plan_one("naive", model_settings("cnn"))
    model = build_model(spec.protocol, image_stream((1, 28, 28)))
    assert "ClosedFormModel" in vectorizable(spec, model)
    argv = ["run", "split-mnist", "-s", "naive", "--seeds", "0-1", "--vectorize", "-q"]
    assert main([*argv, "--set", "model=cnn"]) == 2
    assert "does not declare lifelong.ClosedFormModel" in capsys.readouterr().err


def test_oml_splits_any_model_into_body_and_head() -> None:
    model = ResNet18Reduced((3, 32, 32), 4)
    assert pln_names(model, 1) == ["head.weight", "head.bias"]
    assert pln_names(model, 2) == pln_names(model, 1)  # its convolutions are the RLN
    conv = LaMAMLConv((3, 32, 32), 4, channels=4, hidden=8)
    assert pln_names(conv, 2) == ["body.10.weight", "body.10.bias", "head.weight", "head.bias"]


def test_explicit_mlp_is_the_default_bit_for_bit() -> None:
    stream = plan_one("naive").scenario.build(0)
    default = execute(plan_one("naive", {"hidden": "16"}), stream, CPU)
    named = execute(plan_one("naive", {"hidden": "16", "model": "mlp"}), stream, CPU)
    assert default.matrix == named.matrix and default.curves == named.curves


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_conv_models_train_on_cuda_with_amp_and_channels_last() -> None:
    cuda = torch.device("cuda")
    for model in ("resnet18-reduced", "lamaml-conv"):
        settings = {**model_settings(model), "amp": "bf16", "channels_last": "true"}
        for name in ("er", "la-maml"):
            spec = plan_one(name, {"batch_size": "4", **settings})
            result = execute(spec, image_stream((3, 32, 32)), cuda)
            assert result.ok, result.error
            assert result.device.startswith("cuda")


def test_training_data_is_flat_whatever_the_task_layout() -> None:
    stream = image_stream((3, 32, 32))
    data = training_data(stream.tasks[0])
    assert data.x.shape == (len(data.y), 3 * 32 * 32)


def test_a_run_with_batch_norm_resumes_from_its_checkpoint_exactly(tmp_path) -> None:
    """The running statistics are part of the checkpoint (the module's state_dict)."""
    stream = image_stream((3, 16, 16), n_tasks=3)
    spec = plan_one("er", {"batch_size": "4", **model_settings("resnet18-reduced")})
    whole = execute(spec, stream, CPU)
    checkpoint = tmp_path / "run.pt"
    execute(spec, stream, CPU, checkpoint=checkpoint)  # leaves the state after task 1
    resumed = execute(spec, stream, CPU, checkpoint=checkpoint)
    assert checkpoint.exists() and resumed.matrix == whole.matrix
    assert resumed.curves == whole.curves


def test_activation_bytes_is_the_largest_module_output_for_one_sample() -> None:
    from lifelong.models.axis import activation_bytes

    stream = image_stream((1, 28, 28))
    cnn = build_model(Protocol(model="cnn"), stream)
    assert activation_bytes(cnn, stream) == 32 * 28 * 28 * 4  # the first conv's output
    mlp = build_model(Protocol(model="mlp"), stream)
    assert activation_bytes(mlp, stream) == 784 * 4  # the input is the widest


def test_conv_nets_evaluate_in_small_batches_on_a_cpu_with_the_same_accuracies() -> None:
    from lifelong.strategies.naive import Naive

    from lifelong.contracts.strategy import StreamInfo
    from lifelong.execution.runner import evaluate, evaluation_rows

    stream = image_stream((1, 28, 28), per_class=200)  # 200 test samples a task
    protocol = Protocol(model="cnn", batch_size=32)
    torch.manual_seed(0)
    cnn = build_model(protocol, stream)
    assert evaluation_rows(protocol, cnn, stream, "cpu") == 64
    assert evaluation_rows(protocol, cnn, stream, "cuda") == protocol.eval_batch_size
    mlp = build_model(Protocol(model="mlp"), stream)
    assert evaluation_rows(protocol, mlp, stream, "cpu") == protocol.eval_batch_size
    naive = Naive()
    naive.setup(cnn, StreamInfo.of(stream, None, 0), torch.Generator())  # type: ignore[arg-type]
    cnn.eval()
    assert torch.equal(evaluate(naive, stream, 64), evaluate(naive, stream, 2048))
