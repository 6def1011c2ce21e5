"""Meta-learned inits on colour image streams (split-cifar10, split-cifar100,
split-tinyimagenet): pools of classes disjoint from the stream (the classes the stream
leaves out, or the other CIFAR), normalised as the stream is, seeded, cached, refused in one
line where no disjoint source exists, and meta-training that helps few-step adaptation."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from helpers import CPU, model_settings, plan_one
from image_files import write_cifar10, write_cifar100, write_tiny_imagenet
from lifelong.strategies.maml import MamlInit

from lifelong import UserError
from lifelong.composition.registry import find_scenario
from lifelong.contracts.strategy import StreamInfo
from lifelong.execution.runner import execute
from lifelong.meta.meta_tasks import MetaTaskSource, meta_tasks
from lifelong.meta.metatrain import cache_root
from lifelong.models.convnets import CNN
from lifelong.training.functional import Params, forward, loss_fn, sgd_inner_loop

META = {"meta_steps": "2"}

pytestmark = pytest.mark.usefixtures("fresh_image_data")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("colour")
    write_cifar10(root, per_class=8)
    write_cifar100(root, per_class=2)
    write_tiny_imagenet(root, n_classes=8, per_class=6)
    return str(root)


def pool(name: str, data: str, seed: int = 0, source: str = "auto", **settings: Any):
    scenario = find_scenario(name)(**settings)
    stream = scenario.build(seed, data)
    info = StreamInfo.of(stream, scenario, seed, data)
    return stream, meta_tasks(scenario, info, seed, data, source=source)


def stream_classes(stream: Any) -> set[int]:
    return {c for task in stream.tasks for c in task.classes}


@pytest.mark.parametrize(
    ("name", "settings", "kind", "dataset"),
    [
        ("split-cifar100", {}, "cifar10", "cifar10"),
        ("split-cifar10", {}, "cifar100", "cifar100"),
        ("split-cifar100", {"n_classes": 50, "n_tasks": 5}, "rest", "cifar100"),
        ("split-tinyimagenet", {"n_classes": 4, "n_tasks": 2}, "rest", "tinyimagenet"),
    ],
)
def test_auto_source_is_disjoint_from_the_stream(
    data: str, name: str, settings: dict[str, Any], kind: str, dataset: str
) -> None:
    stream, source = pool(name, data, **settings)
    assert (source.kind, source.dataset) == (kind, dataset)
    pooled = {c for task in source.tasks for c in task.classes}
    if dataset == find_scenario(name).dataset:  # the same dataset: the classes left out
        assert not pooled & stream_classes(stream)
        total = len(torch.unique(source.labels))
        assert pooled == set(range(total)) - stream_classes(stream)
    per_task = len(stream.tasks[0].classes)
    assert all(len(task.classes) == per_task for task in source.tasks)
    assert source.images.shape[1:] == stream.shape  # colour images of the stream's size
    batch = source.sample(0, 6, torch.Generator().manual_seed(0))
    assert batch.x.shape == (6, stream.input_dim)
    assert batch.x.min() < 0  # normalised as the stream's inputs are, not x / 255
    assert set(batch.y.tolist()) <= set(source.tasks[0].targets)


def test_the_pool_is_seeded_and_its_key_follows_the_source(data: str) -> None:
    settings = {"n_classes": 50, "n_tasks": 5}
    _, first = pool("split-cifar100", data, **settings)
    _, again = pool("split-cifar100", data, **settings)
    _, other_seed = pool("split-cifar100", data, seed=1, **settings)
    _, other_source = pool("split-cifar100", data, source="cifar10", **settings)
    assert [t.classes for t in first.tasks] == [t.classes for t in again.tasks]
    assert first.key == again.key
    assert [t.classes for t in first.tasks] != [t.classes for t in other_seed.tasks]
    assert len({first.key, other_seed.key, other_source.key}) == 3


@pytest.mark.parametrize(
    ("name", "settings", "source", "message"),
    [
        ("split-cifar100", {}, "rest", "holds every class of cifar100.*or use source=cifar10"),
        ("split-cifar100", {}, "cifar100", "holds the classes of the split-cifar100 stream"),
        ("split-cifar10", {}, "fashion-mnist", "holds 28x28 grey images"),
        ("split-cifar10", {}, "cifar", "unknown.*did you mean"),
        ("split-tinyimagenet", {"n_tasks": 2}, "auto", "holds every class of tinyimagenet"),
        ("split-tinyimagenet", {"n_tasks": 2}, "cifar100", "do not fit"),
    ],
)
def test_a_source_that_cannot_be_disjoint_is_refused_in_one_line(
    data: str, name: str, settings: dict[str, Any], source: str, message: str
) -> None:
    with pytest.raises(UserError, match=message) as error:
        pool(name, data, source=source, **settings)
    assert "\n" not in str(error.value)


def test_a_grey_stream_refuses_a_colour_source_in_one_line() -> None:
    scenario = find_scenario("split-mnist")(samples_per_task=10)
    stream = scenario.build(0)
    info = StreamInfo.of(stream, scenario, 0)
    with pytest.raises(UserError, match="is for colour image streams"):
        meta_tasks(scenario, info, 0, source="cifar10")


@pytest.mark.parametrize(
    ("init", "model"),
    [
        ("maml", "cnn"),
        ("reptile", "lamaml-conv"),
        ("oml", "resnet18-reduced"),
        ("meta-sgd", "cnn"),
        ("protonet", "lamaml-conv"),
    ],
)
def test_meta_learned_inits_run_on_colour_streams_with_conv_models(
    data: str, init: str, model: str
) -> None:
    settings = {**META, **model_settings(model), "batch_size": "8"}
    if init == "oml":  # the body is the representation (RLN), the head the PLN
        settings["pln_layers"] = "1"
    spec = plan_one(init, settings, scenario="split-cifar10")
    result = execute(spec, spec.scenario.build(0, data), CPU, data_dir=data)
    assert result.status == "ok", result.error
    assert len(list(cache_root().glob("*.pt"))) == 1  # meta-trained once, cached
    again = execute(spec, spec.scenario.build(0, data), CPU, data_dir=data)
    assert again.matrix == result.matrix  # the cached init starts the run alike


def few_step_accuracy(model: torch.nn.Module, params: Params, held_out: MetaTaskSource) -> float:
    """Mean query accuracy after 2 SGD steps of 8 samples on 20 held-out tasks."""
    loss, g = loss_fn(model), torch.Generator().manual_seed(123)
    start = {n: p.detach().requires_grad_(True) for n, p in params.items()}
    correct = []
    for _ in range(20):
        task = held_out.sample_task(g)
        support = [held_out.sample(task, 8, g) for _ in range(2)]
        fast = sgd_inner_loop(loss, start, support, 0.1, only=None)[-1]
        query = held_out.sample(task, 50, g)
        with torch.no_grad():
            logits = forward(model, fast, query.x, query.task_ids)
        correct.append((logits.argmax(1) == query.y).double().mean())
    return float(torch.stack(correct).mean())


def test_maml_on_cifar10_classes_adapts_faster_on_held_out_tasks(data: str) -> None:
    """Split-CIFAR-100 (domain, 20 x 5) meta-trains on CIFAR-10's classes; the held-out
    pool (another seed: other 5-class groups) adapts better from the meta-trained init."""
    settings = {"setting": "domain", "n_tasks": 20}
    _, source = pool("split-cifar100", data, **settings)
    _, held_out = pool("split-cifar100", data, seed=7, **settings)
    torch.manual_seed(0)
    model = CNN((3, 32, 32), 5, channels=(4, 8), hidden=16)
    random = {n: p.detach().clone() for n, p in model.named_parameters()}
    meta = MamlInit(meta_steps=30).meta_trained_weights(model, source, seed=0)
    before, after = (
        few_step_accuracy(model, random, held_out),
        few_step_accuracy(model, meta, held_out),
    )
    assert after > before + 0.05, (after, before)


def test_n_classes_keeps_the_first_classes_of_the_order_in_the_stream(data: str) -> None:
    scenario = find_scenario("split-cifar100")(n_classes=20, n_tasks=4, class_seed=3)
    stream = scenario.build(0, data)
    order = scenario.class_order(100)
    assert [c for task in stream.tasks for c in task.classes] == order[:20]
    assert stream.n_outputs == 20 and all(len(task.classes) == 5 for task in stream.tasks)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"n_classes": 101}, "n_classes=101, but cifar100 has 100; use at most 100"),
        ({"n_classes": 50, "n_tasks": 3}, "n_tasks=3 does not divide the 50 classes"),
        ({"n_classes": 50, "superclass": True}, "superclass=true takes whole superclasses"),
    ],
)
def test_bad_n_classes_is_refused_in_one_line(
    data: str, settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(UserError, match=message):
        find_scenario("split-cifar100")(**settings).build(0, data)
