"""Split CIFAR-10 / CIFAR-100 / TinyImageNet streams, their input transform (normalisation,
seeded crop and flip on the device) and MNIST's inputs left exactly as they were."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import CPU, plan_one
from image_files import write_cifar10, write_cifar100, write_tiny_imagenet

from lifelong import InputTransform, UserError, to_floats
from lifelong.cli import main
from lifelong.composition.registry import find_scenario
from lifelong.contracts.stream import training_data
from lifelong.execution.runner import _batches, execute

pytestmark = pytest.mark.usefixtures("fresh_image_data")


@pytest.fixture(scope="module")
def cifar10(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("cifar10")
    write_cifar10(root, per_class=40)
    return str(root)


@pytest.mark.parametrize(
    ("setting", "n_outputs", "n_heads", "targets"),
    [("class", 10, 1, (2, 3)), ("domain", 2, 1, (0, 1)), ("task", 2, 5, (0, 1))],
)
def test_split_cifar10_forms(
    cifar10: str, setting: str, n_outputs: int, n_heads: int, targets: tuple[int, ...]
) -> None:
    stream = find_scenario("split-cifar10")(setting=setting).build(0, cifar10)
    assert (stream.n_tasks, stream.n_outputs, stream.n_heads) == (5, n_outputs, n_heads)
    assert stream.input_shape == (3, 32, 32) and stream.input_dim == 3072
    task = stream.tasks[1]
    assert task.classes == (2, 3) and task.targets == targets
    assert task.x_train.shape == (400, 3072) and task.x_train.dtype == torch.uint8
    assert stream.inputs is not None and stream.inputs.augments


def test_class_seed_shuffles_the_class_order_the_same_way_every_time(cifar10: str) -> None:
    family = find_scenario("split-cifar10")
    orders = [[t.classes for t in family(class_seed=s).build(0, cifar10).tasks] for s in (1, 1, 2)]
    assert orders[0] == orders[1] != orders[2]
    assert sorted(c for task in orders[0] for c in task) == list(range(10))
    assert orders[0] != [t.classes for t in family().build(0, cifar10).tasks]


def test_split_cifar100_tasks_of_classes_or_of_superclasses(tmp_path: Path) -> None:
    write_cifar100(tmp_path, per_class=1)
    family = find_scenario("split-cifar100")
    default, twenty = family().build(0, str(tmp_path)), family(n_tasks=20).build(0, str(tmp_path))
    assert (default.n_tasks, len(default.tasks[0].classes)) == (10, 10)
    assert (twenty.n_tasks, len(twenty.tasks[0].classes)) == (20, 5)
    coarse = family(superclass=True, setting="task").build(0, str(tmp_path))
    assert coarse.n_tasks == 20 and coarse.n_outputs == 5
    assert coarse.tasks[3].classes == (3, 23, 43, 63, 83)  # fine class c is in superclass c % 20
    paired = family(superclass=True, n_tasks=10).build(0, str(tmp_path))
    assert paired.tasks[0].classes == (0, 20, 40, 60, 80, 1, 21, 41, 61, 81)
    with pytest.raises(UserError, match="n_tasks=3 does not divide the 20 superclasses"):
        family(superclass=True, n_tasks=3).build(0, str(tmp_path))


def test_split_tinyimagenet_from_its_folder_tree(tmp_path: Path) -> None:
    write_tiny_imagenet(tmp_path, n_classes=4, per_class=5)
    stream = find_scenario("split-tinyimagenet")(n_tasks=2).build(0, str(tmp_path))
    assert stream.input_shape == (3, 64, 64) and stream.n_outputs == 4
    assert [t.classes for t in stream.tasks] == [(0, 1), (2, 3)]
    with pytest.raises(UserError, match="n_tasks=10 does not divide the 4 classes"):
        find_scenario("split-tinyimagenet")().build(0, str(tmp_path))


# Without augmentation: an MLP on flat-coloured images learns from the crops' black borders
# a rule that fails on the uncropped test images (a conv net does not; models' tests).
LEARNS = {"setting": "task", "naive.lr": 0.01, "augment": False, "model": "mlp"}


def test_a_short_run_learns_the_class_colours(cifar10: str, tmp_path: Path) -> None:
    spec = plan_one("naive", LEARNS, scenario="split-cifar10")
    result = execute(spec, spec.scenario.build(0, cifar10), CPU, data_dir=cifar10)
    just_trained = [result.matrix[t][t] for t in range(5)]
    assert min(just_trained) > 0.9 and max(result.init) < 0.9  # chance is 0.5


def test_a_short_tinyimagenet_run_learns(tmp_path: Path) -> None:
    write_tiny_imagenet(tmp_path, n_classes=4, per_class=12)
    data = str(tmp_path)
    settings = {**LEARNS, "n_tasks": 2, "epochs": 3}
    spec = plan_one("naive", settings, scenario="split-tinyimagenet")
    result = execute(spec, spec.scenario.build(0, data), CPU, data_dir=data)
    assert result.matrix[0][0] > 0.8 and result.matrix[1][1] > 0.8


def test_a_resumed_augmenting_run_draws_the_same_crops(
    cifar10: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lifelong.execution.runner import _Run

    spec = plan_one("er", {"setting": "task", "er.lr": 0.01}, scenario="split-cifar10")
    stream = spec.scenario.build(0, cifar10)
    whole = execute(spec, stream, CPU)
    original = _Run.train_task

    def crash_at_task_2(self: _Run, task_id: int, bar: object) -> None:
        if task_id == 2:
            raise KeyboardInterrupt
        original(self, task_id, bar)

    monkeypatch.setattr(_Run, "train_task", crash_at_task_2)
    with pytest.raises(KeyboardInterrupt):
        execute(spec, stream, CPU, checkpoint=tmp_path / "run.pt")
    monkeypatch.setattr(_Run, "train_task", original)
    resumed = execute(spec, stream, CPU, checkpoint=tmp_path / "run.pt")
    assert resumed.matrix == whole.matrix and resumed.curves == whole.curves


def _transform(pad: int = 4, flip: bool = True) -> InputTransform:
    return InputTransform((3, 4, 5), (0.5, 0.25, 0.75), (0.2, 0.4, 0.1), pad, flip)


def _images(n: int = 6) -> torch.Tensor:
    return torch.randint(0, 256, (n, 60), generator=torch.Generator().manual_seed(0)).byte()


def test_normalisation_is_per_channel_and_test_batches_are_not_augmented() -> None:
    raw = _images()
    mean, std = torch.tensor([0.5, 0.25, 0.75]), torch.tensor([0.2, 0.4, 0.1])
    expected = (raw.view(6, 3, 4, 5).float() / 255 - mean[:, None, None]) / std[:, None, None]
    assert torch.allclose(to_floats(raw, _transform()), expected.view(6, 60), atol=1e-5)
    unaugmented = _transform(0, False).train(raw, torch.Generator().manual_seed(1))
    assert torch.allclose(unaugmented, expected.view(6, 60), atol=1e-5)


def test_augmentation_is_seeded_and_keeps_the_shape() -> None:
    raw, transform = _images(32), _transform()
    draws = [transform.train(raw, torch.Generator().manual_seed(s)) for s in (3, 3, 4)]
    assert draws[0].shape == (32, 60) and draws[0].dtype == torch.float32
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])


def test_each_augmented_image_is_a_flipped_or_plain_window_of_the_padded_image() -> None:
    raw, transform = _images(40), _transform(pad=2)
    out = transform.train(raw, torch.Generator().manual_seed(5)).view(40, 3, 4, 5)
    padded = torch.nn.functional.pad(raw.view(40, 3, 4, 5), (2, 2, 2, 2))
    windows = [
        transform.test((w.flip(-1) if flip else w).flatten(1)).view(40, 3, 4, 5)
        for flip in (False, True)
        for w in (padded[:, :, dy : dy + 4, dx : dx + 5] for dy in range(5) for dx in range(5))
    ]
    matches = torch.stack([(w == out).flatten(1).all(1) for w in windows])  # [50, 40]
    assert matches.any(0).all()  # every sample is one of the 50 windows
    chosen = matches.float().argmax(0)
    assert len(set(chosen.tolist())) > 10  # offsets and flips vary across samples
    assert (chosen >= 25).any() and (chosen < 25).any()


def test_flip_alone_mirrors_half_the_batch_and_leaves_the_rest() -> None:
    raw, transform = _images(64), _transform(pad=0, flip=True)
    out = transform.train(raw, torch.Generator().manual_seed(0)).view(64, 3, 4, 5)
    plain = transform.test(raw).view(64, 3, 4, 5)
    same = (out == plain).flatten(1).all(1)
    mirrored = (out == plain.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all() and 16 < int(mirrored.sum()) < 48


def test_training_batches_are_augmented_from_the_augment_generator(cifar10: str) -> None:
    family = find_scenario("split-cifar10")
    data = training_data(family().build(0, cifar10).tasks[0])
    order = torch.Generator().manual_seed(0)

    def first(seed: int | None) -> torch.Tensor:
        augment = None if seed is None else torch.Generator().manual_seed(seed)
        return next(_batches(data, 8, order.manual_seed(0), augment)).x

    assert torch.equal(first(1), first(1)) and not torch.equal(first(1), first(2))
    plain = training_data(family(augment=False).build(0, cifar10).tasks[0])
    assert torch.equal(first(None), next(_batches(plain, 8, order.manual_seed(0))).x)


def test_fisher_and_importance_samples_are_normalised_not_augmented(cifar10: str) -> None:
    from lifelong import task_sample

    data = training_data(find_scenario("split-cifar10")().build(0, cifar10).tasks[0])
    sample = task_sample(data, 500, torch.Generator().manual_seed(0))
    assert data.inputs is not None and len(sample.y) == len(data.y)
    order = torch.randperm(len(data.y), generator=torch.Generator().manual_seed(0))
    assert torch.equal(sample.x, data.inputs.test(data.x[order]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_augmentation_runs_on_the_device_seeded() -> None:
    raw, transform = _images(64).cuda(), _transform()
    draws = [transform.train(raw, torch.Generator("cuda").manual_seed(7)) for _ in range(2)]
    assert draws[0].is_cuda and torch.equal(draws[0], draws[1])
    assert torch.allclose(transform.test(raw).cpu(), transform.test(raw.cpu()), atol=1e-6)


def test_mnist_inputs_are_still_exactly_x_over_255() -> None:
    stream = find_scenario("split-mnist")().build(0)
    assert stream.inputs is None
    data = training_data(stream.tasks[0])
    batch = next(_batches(data, 16, torch.Generator().manual_seed(0), torch.Generator()))
    idx = torch.randperm(len(data.y), generator=torch.Generator().manual_seed(0))[:16]
    assert torch.equal(batch.x, data.x[idx].float() / 255)


def test_vectorize_refuses_an_augmenting_stream_in_one_line(
    cifar10: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["run", "split-cifar10", "-s", "naive", "--seeds", "0-1", "--data-dir", cifar10]
    assert main([*args, "--vectorize"]) == 2
    err = capsys.readouterr().err.strip()
    assert "split-cifar10 augments its training images (add --set augment=false)" in err
    assert len(err.splitlines()) == 1


@pytest.mark.slow
def test_split_fashion_mnist_full_data_learns() -> None:
    from lifelong.data.mnist import DEBIAN_FASHION_MNIST_DIR

    if not Path(DEBIAN_FASHION_MNIST_DIR).is_dir():
        pytest.skip("apt-get install dataset-fashion-mnist")
    settings = {"dataset": "fashion-mnist", "setting": "task", "eval_every": 0}
    spec = plan_one("naive", settings)
    stream = spec.scenario.build(0)
    assert sum(len(t.y_train) for t in stream.tasks) == 60_000
    result = execute(spec, stream, CPU)
    assert result.metrics["acc"] > 0.85 and min(result.init) < 0.7  # chance 0.5


def test_vectorized_seeds_match_one_by_one_on_normalised_images(cifar10: str) -> None:
    import numpy as np

    from lifelong.composition.plan import plan_runs
    from lifelong.execution.vectorized import run_vectorized

    settings = {"augment": False, "setting": "task", "er.lr": 0.01, "samples_per_task": 60}
    settings["model"] = "mlp"  # the stacked path needs a closed-form model
    specs = plan_runs("split-cifar10", ["er"], [0, 1], settings)
    streams = [spec.scenario.build(spec.seed, cifar10) for spec in specs]
    together = run_vectorized(specs, streams, CPU, cifar10)
    for spec, stream, batched in zip(specs, streams, together, strict=True):
        alone = execute(spec, stream, CPU, data_dir=cifar10)
        np.testing.assert_allclose(batched.matrix, alone.matrix, atol=1e-6)
