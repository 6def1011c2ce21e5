"""Avalanche interop: its benchmarks as streams, its strategies as baselines in our runner.

Needs the optional extra (pip install 'lifelong[avalanche]'); skipped without it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_one

pytest.importorskip(
    "avalanche", reason="avalanche-lib is an optional extra: pip install 'lifelong[avalanche]'"
)

from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.utils import (
    _make_taskaware_tensor_classification_dataset as tensor_dataset,
)
from conftest import synthetic_stream

from lifelong import Stream, UserError
from lifelong.composition.plan import plan_runs
from lifelong.data.mnist import IDX_FILES, load_dataset, write_idx
from lifelong.execution.runner import execute
from lifelong.interop import (
    ALGORITHMS,
    AvalancheScenario,
    benchmark_from_factory,
    benchmark_from_stream,
    resolve,
    stream_from_avalanche,
)
from lifelong.interop.avalanche_baselines import AvalancheEWC, AvalancheLaMAML

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """mnist5k as the four IDX files where Avalanche's MNIST loaders look (no download)."""
    data = load_dataset("mnist5k")
    root = tmp_path_factory.mktemp("avalanche-data")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    tensors = (data.x_train, data.y_train.to(torch.uint8), data.x_test, data.y_test.to(torch.uint8))
    for name, tensor in zip(IDX_FILES, tensors, strict=True):
        write_idx(raw / name, tensor)
    return str(root)


def small_split(setting: str, per_task: int | None = 100, seed: int = 0) -> Stream:
    (spec,) = plan_runs(
        "split-mnist", ["naive"], [seed], {"setting": setting, "samples_per_task": per_task}
    )
    return spec.scenario.build(seed)


def run(strategy: object, stream: Stream, seed: int = 0, **settings: object):
    base = {"eval_every": 0, "batch_size": 8, **settings}
    return run_one(strategy, base, seed=seed, stream=stream)  # type: ignore[arg-type]


def same_data(a: Stream, b: Stream) -> bool:
    return all(
        torch.equal(s.x_train, t.x_train)
        and torch.equal(s.y_train, t.y_train)
        and torch.equal(s.x_test, t.x_test)
        and torch.equal(s.y_test, t.y_test)
        for s, t in zip(a.tasks, b.tasks, strict=True)
    )


# --- benchmarks as streams ----------------------------------------------------------------


def test_round_trip_keeps_every_tensor_and_the_setting(any_setting: str) -> None:
    stream = synthetic_stream(any_setting)
    back = stream_from_avalanche(benchmark_from_stream(stream))
    assert back.setting == any_setting
    assert (back.n_outputs, back.n_heads, back.input_dim) == (
        stream.n_outputs,
        stream.n_heads,
        stream.input_dim,
    )
    assert same_data(stream, back)


def test_benchmark_of_the_same_tensors_gives_the_same_matrix(any_setting: str) -> None:
    """Built with Avalanche's own API from a native stream's tensors, as images in [0, 1]."""
    native = small_split(any_setting)
    task_ids = any_setting == "task"

    def dataset(x: torch.Tensor, y: torch.Tensor, t: int):
        images = x.view(-1, 1, 28, 28).float() / 255  # what Avalanche's TensorMNIST yields
        return tensor_dataset(images, y, task_labels=t if task_ids else 0)

    benchmark = benchmark_from_datasets(
        train=[dataset(t.x_train, t.y_train, t.id) for t in native.tasks],
        test=[dataset(t.x_test, t.y_test, t.id) for t in native.tasks],
    )
    converted = stream_from_avalanche(benchmark, setting=None if task_ids else any_setting)
    assert converted.setting == any_setting and same_data(native, converted)
    first, second = run("naive", native, seed=3), run("naive", converted, seed=3)
    assert first.matrix == second.matrix and first.init == second.init
    assert first.curves == second.curves


def test_split_mnist_factory_gives_the_native_split(mnist_root: str) -> None:
    """Same images and labels as split-mnist; Avalanche orders each task's samples by class."""
    kwargs = {"n_experiences": 5, "fixed_class_order": list(range(10))}
    benchmark = benchmark_from_factory("SplitMNIST", kwargs, data_dir=mnist_root)
    stream = stream_from_avalanche(benchmark)
    native = small_split("class", per_task=None)
    assert (stream.setting, stream.n_outputs, stream.n_heads) == ("class", 10, 1)
    assert [t.name for t in stream.tasks] == [t.name for t in native.tasks]
    for ours, theirs in zip(native.tasks, stream.tasks, strict=True):
        for x, y, x2, y2 in (
            (ours.x_train, ours.y_train, theirs.x_train, theirs.y_train),
            (ours.x_test, ours.y_test, theirs.x_test, theirs.y_test),
        ):
            order = torch.sort(y, stable=True).indices
            assert torch.equal(x[order], x2) and torch.equal(y[order], y2)


def test_task_labels_carry_over_unless_told_otherwise(mnist_root: str) -> None:
    kwargs = {"n_experiences": 5, "return_task_id": True, "fixed_class_order": list(range(10))}
    benchmark = benchmark_from_factory("SplitMNIST", kwargs, data_dir=mnist_root)
    task = stream_from_avalanche(benchmark)
    assert (task.setting, task.n_outputs, task.n_heads) == ("task", 2, 5)
    assert all(set(t.y_train.tolist()) == {0, 1} for t in task.tasks)
    forced = stream_from_avalanche(benchmark, setting="class")
    assert (forced.setting, forced.n_outputs, forced.n_heads) == ("class", 10, 1)
    assert forced.tasks[3].classes == (6, 7)


def test_permuted_mnist_is_domain_incremental_with_exact_pixels(mnist_root: str) -> None:
    benchmark = benchmark_from_factory(
        "PermutedMNIST", {"n_experiences": 2}, data_dir=mnist_root, seed=0
    )
    stream = stream_from_avalanche(benchmark)
    data = load_dataset("mnist5k")
    order = torch.sort(data.y_test, stable=True).indices  # Avalanche groups samples by class
    original = data.x_test.flatten(1)[order]
    assert (stream.setting, stream.n_outputs, stream.n_heads) == ("domain", 10, 1)
    for task in stream.tasks:  # a pixel permutation keeps every image's values
        assert torch.equal(task.y_test, data.y_test[order])
        assert torch.equal(task.x_test.sort(1).values, original.sort(1).values)
        assert not torch.equal(task.x_test, original)
    assert not torch.equal(stream.tasks[0].x_test, stream.tasks[1].x_test)


@pytest.mark.slow
def test_rotated_mnist_stays_exact(mnist_root: str) -> None:
    """Nearest-neighbour rotations keep 8-bit values, so the conversion accepts them."""
    benchmark = benchmark_from_factory(
        "RotatedMNIST", {"n_experiences": 2}, data_dir=mnist_root, seed=0
    )
    stream = stream_from_avalanche(benchmark)
    original = load_dataset("mnist5k").x_test.flatten(1)
    assert (stream.setting, stream.n_outputs) == ("domain", 10)
    for task in stream.tasks:  # same ink, moved: the brightest pixel of each image survives
        assert task.x_test.dtype == torch.uint8 and not torch.equal(task.x_test, original)
        assert task.x_test.max() == original.max()


def test_normalised_inputs_are_refused() -> None:
    x = (torch.rand(20, 1, 4, 4) - 0.1307) / 0.3081
    data = tensor_dataset(x, torch.arange(20) % 2)
    benchmark = benchmark_from_datasets(train=[data], test=[data])
    with pytest.raises(UserError, match="not 8-bit images scaled to"):
        stream_from_avalanche(benchmark)


def test_benchmark_shape_errors() -> None:
    data = tensor_dataset(torch.zeros(4, 3), torch.tensor([0, 1, 0, 1]), task_labels=0)
    with pytest.raises(UserError, match="one test experience per train experience"):
        stream_from_avalanche(benchmark_from_datasets(train=[data, data], test=[data]))
    with pytest.raises(UserError, match="not an Avalanche benchmark"):
        stream_from_avalanche(object())


def test_factory_errors_name_the_fix() -> None:
    with pytest.raises(UserError, match="did you mean 'SplitMNIST'"):
        benchmark_from_factory("SplitMnist", {})
    unknown = r"no argument 'n_experience'.*did you mean 'n_experiences'"
    with pytest.raises(UserError, match=unknown):
        benchmark_from_factory("SplitMNIST", {"n_experience": 5})


def test_avalanche_scenario_builds_and_runs(mnist_root: str) -> None:
    scenario = AvalancheScenario(benchmark="SplitMNIST", args='{"n_experiences": 2}')
    (spec,) = plan_runs(scenario, ["naive"], [0], {"eval_every": 0})
    stream = spec.scenario.build(0, mnist_root)
    assert stream.n_tasks == 2 and stream.name == "avalanche:SplitMNIST"
    result = execute(spec, stream, CPU)
    assert np.diag(result.matrix).min() > 0.6  # 5 classes a task, one epoch
    with pytest.raises(UserError, match="is not JSON"):
        AvalancheScenario(args="n_experiences=5")


# --- strategies as baselines --------------------------------------------------------------


def test_wrapped_naive_equals_native_naive_with_full_batches(any_setting: str) -> None:
    """One full-batch step per epoch leaves no data order: the two must agree exactly."""
    stream = small_split(any_setting, per_task=60)
    avalanche = resolve("avalanche:Naive")(train_mb_size=60, train_epochs=8)
    native, wrapped = (
        run(s, stream, seed=1, batch_size=60, epochs=8) for s in ("naive", avalanche)
    )
    assert wrapped.matrix == native.matrix and wrapped.init == native.init
    assert 0.5 < np.mean(np.diag(native.matrix)) < 1  # learned, not trivially


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm_fills_the_matrix(algorithm: str) -> None:
    if algorithm == "GEM":
        qpsolvers = pytest.importorskip("qpsolvers")
        if "quadprog" not in qpsolvers.available_solvers:
            pytest.skip("avalanche:GEM needs the QP solver quadprog (pip install quadprog)")
    strategy = resolve(f"avalanche:{algorithm}")(
        train_epochs=4, train_mb_size=10, mem_size=60, patterns_per_exp=12
    )
    result = run(strategy, synthetic_stream("task"))
    matrix = np.array(result.matrix)
    assert matrix.shape == (3, 3) and ((matrix >= 0) & (matrix <= 1)).all()
    assert np.diag(matrix).min() >= 0.9, matrix  # each task learned when trained
    assert result.strategy == f"avalanche:{algorithm}"


def test_curves_are_flat_inside_a_task_and_a_seed_gives_one_matrix() -> None:
    stream = small_split("class", per_task=40)
    replay = resolve("avalanche:Replay")(mem_size=20)
    first, second = (run(replay, stream, seed=2, eval_every=1) for _ in range(2))
    assert first.matrix == second.matrix and first.curves == second.curves
    previous = first.init
    for curve in first.curves[1:]:
        if curve.accuracies != previous:  # only a task end may move the accuracies
            assert curve.accuracies == first.matrix[curve.task]
        previous = curve.accuracies


def test_a_wrapped_strategy_is_never_checkpointed(tmp_path: Path) -> None:
    """Task-boundary checkpoints cannot hold Avalanche's state, so none is written or read:
    an interrupted run of a wrapped strategy starts again from the first task."""
    stream, checkpoint = synthetic_stream("class"), tmp_path / "run.pt"
    (spec,) = plan_runs("split-mnist", [resolve("avalanche:EWC")()], [0], {"eval_every": 0})
    assert not AvalancheEWC.resumable
    fresh = execute(spec, stream, CPU)
    assert execute(spec, stream, CPU, checkpoint=checkpoint).matrix == fresh.matrix
    assert not checkpoint.exists()
    checkpoint.write_bytes(b"left by another run")  # a stale file is not even opened
    assert execute(spec, stream, CPU, checkpoint=checkpoint).matrix == fresh.matrix


def test_strategy_names_and_prefixed_settings() -> None:
    (spec,) = plan_runs(
        "split-mnist", [AvalancheEWC()], [0], {"avalanche:EWC.ewc_lambda": "5", "lr": "0.05"}
    )
    strategy = spec.strategy
    assert isinstance(strategy, AvalancheEWC) and strategy.name == "avalanche:EWC"
    assert (strategy.algorithm, strategy.ewc_lambda, strategy.lr) == ("EWC", 5.0, 0.05)
    assert resolve("avalanche:lwf").name == "avalanche:LwF"  # case is forgiven
    with pytest.raises(UserError, match="did you mean 'AGEM'"):
        resolve("avalanche:AGEN")
    with pytest.raises(UserError, match="leaving the last one empty"):
        AvalancheLaMAML(train_mb_size=12, n_inner_updates=5)


def test_missing_avalanche_is_one_line_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "avalanche", None)  # makes `import avalanche` fail
    with pytest.raises(UserError) as error:
        resolve("avalanche:EWC")
    assert str(error.value) == (
        "avalanche:EWC needs the optional extra: pip install 'lifelong[avalanche]' "
        "(torch 2.14.1 + torchvision)"
    )
    with pytest.raises(UserError, match="needs the optional extra"):
        benchmark_from_factory("SplitMNIST", {})


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["task", "class"])
def test_wrapped_naive_matches_native_naive_on_minibatches(setting: str) -> None:
    """Mini-batch orders differ (our generator vs Avalanche's DataLoader), so compare means.

    Over 10 seeds (500 samples per task, 2 epochs, batch 32) ACC and LA of either had a
    per-seed std of at most 0.024 and means within 0.012; the std of a 5-seed mean
    difference is then about 0.012, and 0.04 is over 3 of them.
    """
    scores: dict[str, list[tuple[float, float]]] = {"naive": [], "avalanche": []}
    for seed in range(5):
        stream = small_split(setting, per_task=500, seed=seed)
        for key, strategy in (
            ("naive", "naive"),
            ("avalanche", resolve("avalanche:Naive")(train_epochs=2)),
        ):
            matrix = np.array(run(strategy, stream, seed=seed, batch_size=32, epochs=2).matrix)
            scores[key].append((matrix[-1].mean(), np.diag(matrix).mean()))
    ours, theirs = np.mean(scores["naive"], axis=0), np.mean(scores["avalanche"], axis=0)
    assert np.abs(ours - theirs).max() < 0.04, (ours, theirs)


def test_runs_on_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    stream = small_split("task", per_task=40)
    (spec,) = plan_runs("split-mnist", [resolve("avalanche:Replay")()], [0], {"eval_every": 0})
    result = execute(spec, stream, torch.device("cuda"))
    assert np.array(result.matrix).shape == (5, 5) and result.device.startswith("cuda")
