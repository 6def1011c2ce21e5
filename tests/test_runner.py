"""The runner and the Python API: determinism, evaluation schedule, results, strategies."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import ClassVar

import pytest
import torch
from helpers import run_one
from torch import nn

import lifelong
from lifelong import Batch, Strategy, StreamInfo, UserError
from lifelong.composition.plan import plan_runs
from lifelong.evaluation.results_dir import load_runs, save_runs
from lifelong.execution.runner import execute, resolve_device

CPU = torch.device("cpu")


def synthetic_stream(setting: str = "class"):
    from conftest import synthetic_stream as make

    return make(setting)


def run_synthetic(strategy: str, setting: str, seed: int = 0, **settings: object):
    settings = {"eval_every": 2, "batch_size": 8, **settings}
    return run_one(strategy, settings, seed=seed, stream=synthetic_stream(setting))


def test_same_seed_gives_the_same_matrix(any_setting: str) -> None:
    first = run_synthetic("naive", any_setting, seed=4)
    second = run_synthetic("naive", any_setting, seed=4)
    other = run_synthetic("naive", any_setting, seed=5)
    assert first.matrix == second.matrix and first.init == second.init
    assert first.curves == second.curves
    assert first.matrix != other.matrix


def test_evaluation_schedule_and_shapes() -> None:
    result = run_synthetic("naive", "class", epochs=2)
    assert len(result.matrix) == 3 and all(len(row) == 3 for row in result.matrix)
    assert result.curves[0].step == 0 and result.curves[0].task == -1
    assert result.curves[0].accuracies == result.init
    # 24 samples per task, batch 8, 2 epochs: 6 batches per task, curve every 2 batches
    steps = [c.step for c in result.curves]
    assert steps == [0, 2, 4, 6, 6, 8, 10, 12, 12, 14, 16, 18, 18]
    task_ends = [c for c in result.curves[1:] if c.step % 6 == 0][1::2]
    assert [c.accuracies for c in task_ends] == result.matrix
    points = {row["point"] for row in result.rows()}
    assert points == {"init", "curve", "task_end"}


def test_glances_repeat_each_batch() -> None:
    seen: list[int] = []

    @dataclass
    class Counting(Strategy):
        """Records the glance index of every step."""

        name: ClassVar[str] = "counting"
        model: nn.Module = field(init=False)

        def setup(self, model: nn.Module, info: StreamInfo, generator: torch.Generator) -> None:
            self.model = model

        def train_step(self, batch: Batch) -> torch.Tensor:
            seen.append(batch.glance)
            return torch.zeros(())

        def predict(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
            return self.model(x, task_ids)

    (spec,) = plan_runs("split-mnist", [Counting()], [0], {"glances": 3, "batch_size": 24})
    execute(spec, synthetic_stream(), CPU)
    assert seen == [0, 1, 2] * 3


def test_naive_forgets_and_joint_does_not_on_synthetic_class_incremental() -> None:
    naive = run_synthetic("naive", "class", lr=0.2, epochs=5)
    joint = run_synthetic("joint", "class", lr=0.2, epochs=5)
    assert naive.metrics["bwt"] < -0.5
    assert joint.metrics["acc"] > naive.metrics["acc"] + 0.3


def test_strategy_object_is_not_mutated_and_runs_do_not_leak_state() -> None:
    strategy = lifelong.strategies.naive.Naive(lr=0.1)  # type: ignore[attr-defined]
    (spec,) = plan_runs("split-mnist", [strategy], [0], {})
    a = execute(spec, synthetic_stream(), CPU)
    b = execute(spec, synthetic_stream(), CPU)
    assert a.matrix == b.matrix
    assert not hasattr(strategy, "model")


def test_results_round_trip_through_the_results_directory(tmp_path) -> None:
    result = run_synthetic("naive", "task")
    save_runs(tmp_path, [result])
    summary = json.loads((tmp_path / "summary.json").read_text())
    entry = summary["runs"][0]
    for key in (
        "strategy",
        "seed",
        "scenario",
        "config",
        "matrix",
        "init",
        "acc",
        "bwt",
        "fwt",
        "forgetting",
        "la",
        "wall_s",
    ):
        assert key in entry
    assert entry["config"]["strategy"] == {"name": "naive", "lr": 0.1, "momentum": 0.0}
    (loaded,) = load_runs(tmp_path)
    assert loaded.matrix == result.matrix and loaded.metrics == pytest.approx(result.metrics)
    lines = (tmp_path / "results.csv").read_text().splitlines()
    assert lines[0] == "strategy,seed,scenario,point,after_task,step,eval_task,accuracy"
    assert len(lines) == 1 + 3 * len(result.curves)
    assert not list(tmp_path.glob(".*tmp"))


def test_one_task_stream_labels_undefined_metrics_as_nan() -> None:
    result = lifelong.run(
        "split-mnist", "naive", device="cpu", settings={"n_tasks": 1, "samples_per_task": 64}
    )
    assert result.metrics["acc"] == result.matrix[0][0]
    for name in ("bwt", "fwt", "forgetting"):
        assert result.metrics[name] != result.metrics[name]  # NaN, never a silent 0
    assert lifelong.RunResult.from_summary(result.summary()).metrics["bwt"] != 0


def test_python_api_runs_the_embedded_default_and_gives_a_frame() -> None:
    result = lifelong.run(
        "split-mnist",
        "naive",
        seed=0,
        device="cpu",
        settings={"samples_per_task": 400, "setting": "task"},
    )
    assert result.metrics["acc"] > 0.8  # task-incremental: one binary head per task
    frame = result.to_frame()
    assert set(frame["point"]) == {"init", "curve", "task_end"}
    assert len(frame) == len(result.rows())


def test_device_resolution() -> None:
    assert resolve_device("cpu") == CPU
    assert resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(UserError, match="unknown device"):
        resolve_device("tpu9")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_the_cpu_closely() -> None:
    cpu = lifelong.run("split-mnist", "naive", device="cpu", settings={"samples_per_task": 200})
    gpu = lifelong.run("split-mnist", "naive", device="cuda", settings={"samples_per_task": 200})
    assert gpu.device.startswith("cuda")
    assert abs(cpu.metrics["acc"] - gpu.metrics["acc"]) < 0.05


def test_plugged_in_strategy_with_typed_field(tmp_path) -> None:
    path = tmp_path / "mine.py"
    path.write_text(PLUGIN)
    result = lifelong.run(
        "split-mnist",
        f"{path}:Frozen",
        device="cpu",
        settings={"samples_per_task": 64, "scale": "2.0"},
    )
    assert result.matrix[-1] == result.init  # it never learns
    assert result.config["strategy"] == {"name": "frozen", "scale": 2.0}


PLUGIN = '''
from dataclasses import dataclass, field
from typing import ClassVar
import torch
from lifelong import Strategy, param


@dataclass
class Frozen(Strategy):
    """Never learns."""
    name: ClassVar[str] = "frozen"
    scale: float = param(1.0, "logit scale", gt=0)
    model: torch.nn.Module = field(init=False)

    def setup(self, model, info, generator):
        self.model = model

    def train_step(self, batch):
        return torch.zeros(())

    def predict(self, x, task_ids):
        return self.scale * self.model(x, task_ids)
'''


def test_evaluation_inputs_kept_or_converted_batch_by_batch_give_each_tasks_own_floats() -> None:
    import dataclasses

    from lifelong.data.inputs import InputTransform
    from lifelong.execution.runner import EvaluationInputs

    stream = synthetic_stream("class")
    normalised = InputTransform((1, 28, 28), (0.5,), (0.25,))
    tasks = list(stream.tasks)
    tasks[1] = dataclasses.replace(tasks[1], inputs=normalised)  # a task of its own transform
    stream = dataclasses.replace(stream, tasks=tuple(tasks))
    expected = torch.cat(
        [
            t.x_test.float() / 255 if t.inputs is None else t.inputs.test(t.x_test)
            for t in stream.tasks
        ]
    )
    kept, converted = EvaluationInputs(), EvaluationInputs(limit=0)
    for inputs in (kept, converted):
        for batch_size in (5, 7, len(expected) + 1):  # batches across tasks' ends, and one
            batches = [(s, x.clone()) for s, x in inputs.batches(stream, batch_size)]
            assert [s for s, _ in batches] == list(range(0, len(expected), batch_size))
            assert torch.equal(torch.cat([x for _, x in batches]), expected)
    assert kept.kept is not None and converted.kept is None
    held = converted.buffer
    list(converted.batches(stream, 5))
    assert converted.buffer is held  # a smaller batch reuses the buffer


def test_a_diverged_tasks_last_curve_point_is_no_task_end() -> None:
    from lifelong.evaluation.result import Curve, RunResult

    run = RunResult(
        scenario="s",
        strategy="naive",
        seed=0,
        config={},
        key="k",
        task_names=["a", "b"],
        matrix=[[0.9, 0.1]],  # task 1 never ended
        init=[0.5, 0.5],
        metrics={},
        curves=[Curve(0, -1, [0.5, 0.5]), Curve(3, 0, [0.9, 0.1]), Curve(5, 1, [0.7, 0.6])],
        status="diverged",
        error="loss became NaN or infinite at task 1, step 6",
    )
    points = {(row["after_task"], row["point"]) for row in run.rows()}
    assert points == {(-1, "init"), (0, "task_end"), (1, "curve")}


THREADS_SEEN: list[int] = []


@dataclass
class ThreadCounter(Strategy):
    """Never learns; records torch's thread count at every step."""

    name: ClassVar[str] = "thread-counter"
    model: nn.Module = field(init=False)

    def setup(self, model: nn.Module, info: StreamInfo, generator: torch.Generator) -> None:
        self.model = model

    def train_step(self, batch: Batch) -> torch.Tensor:
        THREADS_SEEN.append(torch.get_num_threads())
        return torch.zeros(())

    def predict(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        return self.model(x, task_ids)


@pytest.mark.parametrize(("threads", "inside"), [((), 1), ((3,), 3), ((None,), 2)])
def test_python_api_runs_on_the_clis_one_thread_and_restores_the_callers(
    threads: tuple[int | None, ...], inside: int
) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    THREADS_SEEN.clear()
    try:
        lifelong.run(
            "split-mnist",
            ThreadCounter(),
            device="cpu",
            settings={"samples_per_task": 32, "n_tasks": 2},
            **dict(zip(["threads"], threads, strict=False)),
        )
        assert set(THREADS_SEEN) == {inside}
        assert torch.get_num_threads() == 2  # the caller's count, restored
    finally:
        torch.set_num_threads(before)


def test_python_api_refuses_a_thread_count_below_one() -> None:
    with pytest.raises(UserError, match="threads=0"):
        lifelong.run("split-mnist", "naive", device="cpu", threads=0)


def test_a_tasks_first_nonfinite_loss_is_found_per_seed() -> None:
    """The runner checks a task's losses once, at its end: each seed's first NaN or
    infinite step (-1 when none), as the per-step check found it."""
    from lifelong.execution.runner import _first_nonfinite

    nan, inf = float("nan"), float("inf")
    losses = [
        torch.tensor(row)
        for row in ([1.0, 2.0, 0.5], [nan, 1.0, 0.4], [1.0, inf, 0.3], [nan, nan, 0.2])
    ]
    assert _first_nonfinite(losses, 3) == [1, 2, -1]
    assert _first_nonfinite([], 2) == [-1, -1]


NAN_AT_STEP = '''
from dataclasses import dataclass, field
from typing import ClassVar
import torch
from lifelong import Strategy, param


@dataclass
class NanAt(Strategy):
    """Never learns; its loss is NaN from its ``step``-th training step on (1-based)."""
    name: ClassVar[str] = "nan-at"
    step: int = param(5, "first step whose loss is NaN", ge=1)
    model: torch.nn.Module = field(init=False)
    taken: int = field(init=False, default=0)

    def setup(self, model, info, generator):
        self.model = model

    def train_step(self, batch):
        self.taken += 1
        return torch.tensor(float("nan") if self.taken >= self.step else 1.0)

    def predict(self, x, task_ids):
        return self.model(x, task_ids)
'''


@pytest.mark.parametrize(("step", "task"), [(2, 0), (3, 1), (6, 2)])
def test_a_run_reports_the_step_and_task_its_loss_first_became_nan(tmp_path, step, task) -> None:
    """64 samples a task at batch 32: two steps a task; the first NaN is named where it was."""
    path = tmp_path / "nan_at.py"
    path.write_text(NAN_AT_STEP)
    result = lifelong.run(
        "split-mnist",
        f"{path}:NanAt",
        device="cpu",
        settings={"samples_per_task": 64, "batch_size": 32, "step": step},
    )
    assert result.status == "diverged"
    assert result.error == f"loss became NaN or infinite at task {task}, step {step}"
    assert len(result.matrix) == task  # the tasks completed before it
