"""Sweeps and checkpoints: resume without loss or duplication, failures, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import crashing_at_task

from lifelong.cli import main
from lifelong.composition.plan import plan_runs
from lifelong.evaluation.results_dir import load_runs
from lifelong.execution.runner import execute
from lifelong.execution.sweep import plan_requests, sweep

CPU = torch.device("cpu")
SMALL = {"samples_per_task": 96, "eval_every": 2}

PLUGIN = '''
from dataclasses import dataclass, field
from typing import ClassVar
import torch
import torch.nn.functional as F
from lifelong import Strategy, param


@dataclass
class Fragile(Strategy):
    """Learns with SGD; can be told to break at a task (raise) or to diverge (NaN loss)."""
    name: ClassVar[str] = "fragile"
    lr: float = param(0.1, "learning rate", gt=0)
    raise_at: int = param(-1, "task at which train_step raises (-1: never)")
    nan_at: int = param(-1, "task from which the loss is NaN (-1: never)")
    model: torch.nn.Module = field(init=False)

    def setup(self, model, info, generator):
        self.model = model
        self.optimizer = torch.optim.SGD(model.parameters(), lr=self.lr)

    def train_step(self, batch):
        if batch.task == self.raise_at:
            raise RuntimeError("fragile broke on purpose")
        self.optimizer.zero_grad()
        loss = F.cross_entropy(self.model(batch.x, batch.task_ids), batch.y)
        if batch.task >= self.nan_at >= 0:
            loss = loss * float("nan")
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def predict(self, x, task_ids):
        return self.model(x, task_ids)
'''


@pytest.fixture
def fragile(tmp_path: Path) -> str:
    path = tmp_path / "fragile.py"
    path.write_text(PLUGIN)
    return f"{path}:Fragile"


def fragile_with_before_task(tmp_path: Path, name: str, body: str) -> str:
    """The plug-in above renamed ``name``, with ``body`` as its ``before_task(self, data)``."""
    path = tmp_path / f"{name.lower()}.py"
    hook = "".join(f"        {line}\n" for line in body.splitlines())
    path.write_text(
        PLUGIN.replace("class Fragile", f"class {name}").replace('"fragile"', f'"{name.lower()}"')
        + f"\n    def before_task(self, data):\n{hook}"
    )
    return f"{path}:{name}"


def comparable(results: list) -> list:
    return [(r.key, r.matrix, r.init, r.curves, r.status) for r in results]


@pytest.mark.parametrize(
    ("strategy", "settings"),
    [
        ("naive", {"momentum": 0.9}),
        ("der++", {}),  # replay through the objective: its joined-batch cache is not state
        ("er", {"setting": "task"}),
        ("er+lwf", {}),
        ("mir", {}),  # the memory reads the model it is bound to again on resume
        ("gss", {}),  # and its per-slot scores are state
        ("gem", {}),
        ("er-ace", {}),
        ("x-der", {}),  # rewritten stored logits and update counters are state
        ("meta-sgd+er", {"meta-sgd.meta_steps": 2, "meta-sgd.source": "permuted"}),
    ],
)
def test_checkpoint_resume_gives_the_uninterrupted_result(
    tmp_path: Path, monkeypatch, strategy: str, settings: dict
) -> None:
    import warnings

    warnings.simplefilter("error")  # a resume that fell back to a fresh start would warn
    (spec,) = plan_runs("split-mnist", [strategy], [3], {**SMALL, **settings})
    stream = spec.scenario.build(3)
    whole = execute(spec, stream, CPU)
    checkpoint = tmp_path / "run.pt"
    with crashing_at_task(3), pytest.raises(KeyboardInterrupt):
        execute(spec, stream, CPU, checkpoint=checkpoint)
    assert checkpoint.exists()
    assert torch.load(checkpoint, weights_only=True)["next_task"] == 3
    resumed = execute(spec, stream, CPU, checkpoint=checkpoint)
    assert resumed.matrix == whole.matrix
    assert resumed.curves == whole.curves


def test_interrupted_sweep_resumes_without_losing_or_duplicating(tmp_path: Path) -> None:
    requests = plan_requests("split-mnist", ["naive", "joint"], [0, 1], SMALL)
    reference = sweep(requests, None, jobs=1)
    landed: list[str] = []

    def interrupt_after_two(text: str) -> None:
        landed.append(text)
        if len(landed) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep(requests, tmp_path, jobs=1, report=interrupt_after_two)
    assert len(load_runs(tmp_path)) == 2  # exactly the completed ones
    messages: list[str] = []
    results = sweep(requests, tmp_path, jobs=1, report=messages.append)
    assert sum("skipped" in m for m in messages) == 2
    saved = load_runs(tmp_path)
    assert len(saved) == 4 and len({r.key for r in saved}) == 4
    assert comparable(results) == comparable(reference)


def test_diverged_and_failed_runs_are_recorded_and_the_sweep_goes_on(
    tmp_path: Path, fragile: str
) -> None:
    requests = (
        plan_requests("split-mnist", [fragile], [0], {**SMALL, "nan_at": 1})
        + plan_requests("split-mnist", [fragile], [0], {**SMALL, "raise_at": 2})
        + plan_requests("split-mnist", ["naive"], [0], SMALL)
    )
    results = sweep(requests, tmp_path, jobs=1)
    diverged, failed, fine = results
    assert diverged.status == "diverged"
    assert "task 1, step 4" in diverged.error  # 96 samples / 32 = 3 batches per task
    assert len(diverged.matrix) == 1
    assert all(c.step < 4 for c in diverged.curves)  # none of the broken model
    ends = {row["after_task"] for row in diverged.rows() if row["point"] == "task_end"}
    assert ends == {0}  # task 1 never ended
    assert failed.status == "failed" and "fragile broke on purpose" in failed.error
    assert "Traceback" in failed.error
    assert fine.ok
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [r["status"] for r in summary["runs"]] == ["diverged", "failed", "ok"]


def test_failed_runs_are_retried_on_resume_and_diverged_ones_are_not(
    tmp_path: Path, fragile: str
) -> None:
    requests = plan_requests("split-mnist", [fragile], [0], {**SMALL, "nan_at": 0})
    requests += plan_requests("split-mnist", [fragile], [0], {**SMALL, "raise_at": 0})
    sweep(requests, tmp_path, jobs=1)
    messages: list[str] = []
    sweep(requests, tmp_path, jobs=1, report=messages.append)
    assert sum("skipped" in m for m in messages) == 1
    assert len(load_runs(tmp_path)) == 2


def test_pool_and_in_process_give_bit_identical_results(tmp_path: Path) -> None:
    requests = plan_requests("split-mnist", ["naive", "joint"], [0, 1], SMALL)
    in_process = sweep(requests, None, jobs=1)
    pooled = sweep(requests, tmp_path, jobs=2)
    assert comparable(pooled) == comparable(in_process)


@pytest.mark.slow  # starts a local Ray cluster
def test_ray_executor_gives_the_same_results(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray", reason="the optional extra lifelong[ray] is not installed")
    requests = plan_requests("split-mnist", ["naive"], [0, 1], SMALL)
    local = sweep(requests, None, jobs=1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = sweep(requests, tmp_path, executor="ray")
    finally:
        ray.shutdown()
    assert comparable(remote) == comparable(local)
    assert len(load_runs(tmp_path)) == 2


def test_sweep_command_runs_a_suite_and_skips_on_rerun(tmp_path: Path, capsys) -> None:
    suite = tmp_path / "tiny.toml"
    suite.write_text(
        "# lifelong sweep tiny.toml\n[suite]\ndescription = 'tiny'\n"
        "scenarios = ['split-mnist']\nstrategies = ['naive']\nseeds = [0]\n"
        "[settings]\nsamples_per_task = 64\n[grid]\nsetting = ['class', 'task']\n"
    )
    out = tmp_path / "out"
    assert main(["sweep", str(suite), "--out", str(out), "-j", "1"]) == 0
    runs = json.loads((out / "summary.json").read_text())["runs"]
    assert sorted(r["config"]["scenario"]["setting"] for r in runs) == ["class", "task"]
    assert main(["run", str(suite), "--out", str(out), "-j", "1"]) == 0
    assert capsys.readouterr().err.count("skipped") == 2


def test_builtin_suites_parse_and_plan() -> None:
    from lifelong.execution.suite import load_suite, suite_dir, suite_names

    assert {"split-mnist", "permuted-mnist", "rotated-mnist"} <= set(suite_names())
    for name in suite_names():
        suite = load_suite(suite_dir() / f"{name}.toml")
        assert suite.command.startswith("lifelong ")
        for scenario, settings in suite.points():
            assert plan_runs(scenario, list(suite.strategies), list(suite.seeds), settings)


def test_vectorized_group_that_raises_is_recorded_as_failed_and_the_sweep_goes_on(
    tmp_path: Path, monkeypatch
) -> None:
    import lifelong.execution.vectorized

    def broken(*args: object, **kwargs: object) -> list:
        raise RuntimeError("a part broke on purpose")

    requests = plan_requests("split-mnist", ["er"], [0, 1], SMALL)
    requests += plan_requests("split-mnist", ["naive"], [0, 1], SMALL)
    real = lifelong.execution.vectorized.run_vectorized
    monkeypatch.setattr(
        lifelong.execution.vectorized,
        "run_vectorized",
        lambda specs, *a, **k: broken() if specs[0].strategy.name == "er" else real(specs, *a, **k),
    )
    results = sweep(requests, tmp_path, vectorize=True, jobs=1)  # the patch is in this process
    assert [(r.strategy, r.seed, r.status) for r in results] == [
        ("er", 0, "failed"),
        ("er", 1, "failed"),
        ("naive", 0, "ok"),
        ("naive", 1, "ok"),
    ]
    assert "a part broke on purpose" in results[0].error and "Traceback" in results[0].error
    assert results[2].device == "cpu (vectorized x2)"


@pytest.mark.slow  # starts a local Ray cluster
def test_ray_refuses_runs_no_node_can_hold_and_bad_addresses(tmp_path: Path, capsys) -> None:
    ray = pytest.importorskip("ray", reason="the optional extra lifelong[ray] is not installed")
    from lifelong import UserError

    requests = plan_requests("split-mnist", ["naive"], [0], SMALL, threads=3)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with pytest.raises(UserError, match="--threads 3: no node of the Ray cluster has more"):
            sweep(requests, tmp_path, executor="ray")
    finally:
        ray.shutdown()
    args = ["run", "split-mnist", "-s", "naive", "--executor", "ray", "--address", "garbage"]
    assert main([*args, "--out", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot start or reach the Ray cluster at garbage" in err[0]
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_that_cannot_be_resumed_restarts_the_run(tmp_path: Path) -> None:
    (spec,) = plan_runs("split-mnist", ["er"], [0], SMALL)
    stream = spec.scenario.build(0)
    whole = execute(spec, stream, CPU)
    checkpoint = tmp_path / "run.pt"
    checkpoint.write_bytes(b"not a checkpoint: a machine died while writing it")
    with pytest.warns(RuntimeWarning, match="cannot be resumed from"):
        resumed = execute(spec, stream, CPU, checkpoint=checkpoint)
    assert resumed.matrix == whole.matrix


def test_state_a_checkpoint_cannot_hold_runs_on_without_checkpoints(tmp_path: Path) -> None:
    import random

    from lifelong.execution.checkpoint import capture

    with pytest.raises(TypeError, match="keys are not strings"):
        capture({0: torch.zeros(1)})
    with pytest.raises(TypeError, match=r"random\.Random"):
        capture(random.Random(0))
    plugin = fragile_with_before_task(
        tmp_path,
        "Counting",
        "self.counts = getattr(self, 'counts', {})\n"
        "self.counts[data.id] = len(data.y)  # int keys: no checkpoint holds them",
    )
    (spec,) = plan_runs("split-mnist", [plugin], [0], SMALL)
    stream = spec.scenario.build(0)
    whole = execute(spec, stream, CPU)
    with pytest.warns(RuntimeWarning, match="cannot be checkpointed .*keys are not strings"):
        checked = execute(spec, stream, CPU, checkpoint=tmp_path / "run.pt")
    assert checked.matrix == whole.matrix
    assert not (tmp_path / "run.pt").exists()


def test_a_second_sweep_into_the_same_out_is_refused_while_one_runs(tmp_path: Path) -> None:
    import fcntl
    import os

    from lifelong import UserError

    requests = plan_requests("split-mnist", ["naive"], [0], SMALL)
    handle = os.open(tmp_path, os.O_RDONLY)
    fcntl.flock(handle, fcntl.LOCK_EX)  # what a running sweep holds
    try:
        with pytest.raises(UserError, match="another lifelong process is saving into"):
            sweep(requests, tmp_path, jobs=1)
    finally:
        os.close(handle)
    assert [r.status for r in sweep(requests, tmp_path, jobs=1)] == ["ok"]
    empty = tmp_path / "never-saved"
    with pytest.raises(UserError):
        sweep(requests, empty, executor="nowhere")
    assert not empty.exists()  # made for the lock, removed again


@pytest.mark.slow  # each run the killed worker took down goes again in a new process
def test_a_run_that_kills_its_worker_fails_alone_and_the_sweep_goes_on(tmp_path: Path) -> None:
    plugin = fragile_with_before_task(
        tmp_path,
        "Killer",
        "if data.id == 2:\n"
        "    import os, signal\n"
        "    os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer",
    )
    requests = plan_requests("split-mnist", [plugin, "naive"], [0, 1], SMALL)
    results = sweep(requests, tmp_path / "out", jobs=2)
    assert [(r.strategy, r.status) for r in results] == [
        ("killer", "failed"),
        ("killer", "failed"),
        ("naive", "ok"),
        ("naive", "ok"),
    ]
    assert "worker process died" in results[0].error
    assert len(load_runs(tmp_path / "out")) == 4
