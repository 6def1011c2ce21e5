"""Seeds trained together as one batched model equal the seeds run one by one."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pytest
import torch
from helpers import crashing_at_task

from lifelong import Batch, Memory, Replay, StreamInfo, UserError
from lifelong.cli import main
from lifelong.composition.compose import configure
from lifelong.composition.plan import plan_runs
from lifelong.execution.runner import execute
from lifelong.execution.vectorized import run_vectorized

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("strategy", "settings"),
    [
        ("naive", {}),
        ("naive", {"momentum": 0.9}),
        ("naive", {"eval_batch_size": 7}),  # test sets in chunks
        ("er", {"replay.size": 50, "replay.batch": 16}),
        ("ewc", {"ewc.lam": 50.0, "ewc.fisher_samples": 64}),
        ("er+ewc", {"replay.size": 50, "ewc.fisher_samples": 64}),
        ("si", {"si.lam": 5.0}),  # observes every step; a quadratic from the start
        ("mas", {"mas.lam": 5.0, "mas.samples": 64}),
        ("lwf", {}),  # an explicit penalty: the vmap path, logits kept
        ("er", {"glances": 3, "replay.size": 50}),  # a repeated glance is stored once
        ("er", {"setting": "task", "replay.size": 50}),  # several heads: the vmap path
        ("er", {"replay.size": 50, "replay.balanced": True}),
        ("der++", {"replay.size": 50}),  # the replay's stored logits, in the vmap path
    ],
)
def test_vectorized_seeds_equal_sequential_runs(strategy: str, settings: dict) -> None:
    common = {"samples_per_task": 96, "eval_every": 2, **settings}
    specs = plan_runs("split-mnist", [strategy], [0, 1, 2], common)
    streams = [spec.scenario.build(spec.seed) for spec in specs]
    one_by_one = [execute(spec, stream, CPU) for spec, stream in zip(specs, streams, strict=True)]
    together = run_vectorized(specs, streams, CPU)
    for a, b in zip(one_by_one, together, strict=True):
        assert a.key == b.key and a.seed == b.seed
        np.testing.assert_allclose(a.matrix, b.matrix, atol=1e-6)
        np.testing.assert_allclose(a.init, b.init, atol=1e-6)
        assert [c.step for c in a.curves] == [c.step for c in b.curves]
    assert together[0].matrix != together[1].matrix  # seeds really differ


def test_unsupported_strategies_are_refused_with_one_line() -> None:
    specs = plan_runs("split-mnist", ["joint"], [0, 1], {})
    with pytest.raises(UserError, match="not a composite of parts"):
        run_vectorized(specs, [s.scenario.build(s.seed) for s in specs], CPU)
    specs = plan_runs("split-mnist", ["agem"], [0, 1], {})
    with pytest.raises(UserError, match="does not stack over seeds"):
        run_vectorized(specs, [s.scenario.build(s.seed) for s in specs], CPU)


def test_streams_with_tasks_of_different_sizes_are_refused_with_one_line() -> None:
    specs = plan_runs("split-mnist", ["naive"], [0, 1], {"samples_per_task": 64})
    (other,) = plan_runs("split-mnist", ["naive"], [1], {"samples_per_task": 32})
    streams = [specs[0].scenario.build(0), other.scenario.build(1)]
    with pytest.raises(UserError, match="tasks of different sizes"):
        run_vectorized(specs, streams, CPU)


def test_cli_vectorize_writes_one_result_per_seed(tmp_path, capsys) -> None:
    out = tmp_path / "vec"
    args = [
        "run",
        "split-mnist",
        "-s",
        "naive",
        "--seeds",
        "0-3",
        "--vectorize",
        "--set",
        "samples_per_task=64",
        "--out",
        str(out),
        "-q",
        "-j",
        "1",
    ]
    assert main(args) == 0
    sequential = tmp_path / "seq"
    args_seq = [a if a != str(out) else str(sequential) for a in args if a != "--vectorize"]
    assert main(args_seq) == 0
    from lifelong.evaluation.results_dir import load_runs

    vec, seq = load_runs(out), load_runs(sequential)
    assert [r.key for r in vec] == [r.key for r in seq]
    for a, b in zip(vec, seq, strict=True):
        np.testing.assert_allclose(a.matrix, b.matrix, atol=1e-6)
        assert a.device == "cpu (vectorized x4)" and b.device == "cpu"


def test_cli_vectorize_refuses_a_strategy_it_cannot_batch_before_any_run(tmp_path, capsys) -> None:
    out = tmp_path / "vec"
    args = ["run", "split-mnist", "-s", "naive", "-s", "la-maml", "--seeds", "0,1"]
    code = main([*args, "--vectorize", "--set", "samples_per_task=32", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "--vectorize cannot batch 'la-maml'" in err[0] and "without --vectorize" in err[0]
    assert not out.exists()


def test_vectorize_uses_one_thread_unless_threads_are_given() -> None:
    import argparse

    from lifelong.cli import _threads

    assert _threads(argparse.Namespace(threads=None, vectorize=True)) == 1
    assert _threads(argparse.Namespace(threads=None, vectorize=False)) == 1
    assert _threads(argparse.Namespace(threads=3, vectorize=True)) == 3


def test_stacked_batches_are_the_sequential_batches_in_any_gathering_span() -> None:
    from lifelong.contracts.stream import training_data
    from lifelong.execution.runner import _batches, generator
    from lifelong.execution.vectorized import _per_seed, _stacked_batches

    specs = plan_runs("split-mnist", ["naive"], [0, 1], {"samples_per_task": 100})
    data = [training_data(spec.scenario.build(spec.seed).tasks[1]) for spec in specs]
    expected = [list(_batches(d, 32, generator(CPU, s, 2))) for s, d in enumerate(data)]
    for span in (32, 64, 4096):  # one batch, two batches, the whole task per gathering
        stacked = list(_stacked_batches(data, 32, [generator(CPU, s, 2) for s in (0, 1)], span))
        assert [len(b.y[0]) for b in stacked] == [32, 32, 32, 4]
        for step, batch in enumerate(stacked):
            for s, seed_batch in enumerate(_per_seed(batch)):
                want = expected[s][step]
                assert torch.equal(seed_batch.x, want.x) and torch.equal(seed_batch.y, want.y)
                assert torch.equal(seed_batch.task_ids, want.task_ids)
                assert seed_batch.task == want.task == 1


@dataclass
class _Latest(Memory):
    """A memory of the latest ``size`` samples, replayed whole (its replay grows)."""

    name: ClassVar[str] = "latest"
    size: int = 20
    x: torch.Tensor = field(init=False, repr=False)
    y: torch.Tensor = field(init=False, repr=False)
    task_ids: torch.Tensor = field(init=False, repr=False)
    task: int = field(init=False, default=0)

    def setup(self, info: StreamInfo, device: torch.device, generator: torch.Generator) -> None:
        self.x = torch.zeros(0, info.input_dim)
        self.y = self.task_ids = torch.zeros(0, dtype=torch.long)

    def add(self, batch: Batch, logits: torch.Tensor | None) -> None:
        self.x = torch.cat([self.x, batch.x])[-self.size :]
        self.y = torch.cat([self.y, batch.y])[-self.size :]
        self.task_ids = torch.cat([self.task_ids, batch.task_ids])[-self.size :]
        self.task = batch.task

    def joined(self, batch: Batch, replay: Replay) -> Batch:
        stored = replay.batch
        x, y = torch.cat([batch.x, stored.x]), torch.cat([batch.y, stored.y])
        return Batch(x, y, torch.cat([batch.task_ids, stored.task_ids]), batch.task)

    def sample(self) -> Replay | None:
        if not len(self):
            return None
        stored = Batch(self.x, self.y, self.task_ids, self.task)
        return Replay(stored, torch.zeros(len(self), 10))

    def __len__(self) -> int:
        return len(self.y)


def test_strategies_whose_parts_it_would_not_honour_are_refused() -> None:
    from lifelong.composition.compose import Composite
    from lifelong.execution.vectorized import vectorizable

    sgd, _ = configure("sgd", {})
    fields = {f.name: getattr(sgd, f.name) for f in dataclasses.fields(sgd) if f.init}

    @dataclass
    class Seen(Composite):  # trains on every task so far: a method of its own
        def objective(self, params, batch, replay):  # type: ignore[no-untyped-def]
            return super().objective(params, batch, replay)

    (subclass,) = plan_runs("split-mnist", [Seen(**fields)], [0])
    assert "subclass of Composite" in vectorizable(subclass)
    other_memory = dataclasses.replace(sgd, memory=_Latest(), spec="sgd+latest")
    (spec,) = plan_runs("split-mnist", [other_memory], [0])
    assert vectorizable(spec) == "its memory 'latest', as configured, offers no stacked form"
    (plain,) = plan_runs("split-mnist", ["naive"], [0])
    assert vectorizable(plain) == ""


def test_runs_that_differ_in_more_than_the_seed_are_refused() -> None:
    (a,) = plan_runs("split-mnist", ["naive"], [0], {"samples_per_task": 64})
    (b,) = plan_runs("split-mnist", ["naive"], [1], {"samples_per_task": 64, "lr": 0.01})
    with pytest.raises(UserError, match="differ in more than their seed"):
        run_vectorized([a, b], [a.scenario.build(0), b.scenario.build(1)], CPU)


@pytest.mark.parametrize(
    ("strategy", "settings"),
    [
        ("naive", {}),
        ("ewc", {"sgd.proximal": False, "ewc.lam": 5.0, "ewc.fisher_samples": 64}),
        ("er+si", {"sgd.proximal": False, "si.lam": 1.0, "replay.size": 100}),
        ("er", {"replay.size": 100}),  # the plain step, formed by no gradient
        ("sgd+ewc", {"ewc.lam": 5.0, "ewc.fisher_samples": 64}),  # and a proximal penalty
    ],
)
def test_closed_form_runs_equal_sequential_ones_exactly_over_whole_tasks(
    strategy: str, settings: dict
) -> None:
    """One-head MLPs with no penalty or quadratic ones take the same hand-written
    gradients, or the same in-place plain step, as the sgd learner: no rounding apart,
    however long the run."""
    specs = plan_runs("split-mnist", [strategy], [0, 1], {"eval_every": 0, **settings})
    streams = [spec.scenario.build(spec.seed) for spec in specs]
    one_by_one = [execute(spec, stream, CPU) for spec, stream in zip(specs, streams, strict=True)]
    for a, b in zip(one_by_one, run_vectorized(specs, streams, CPU), strict=True):
        assert a.matrix == b.matrix and a.metrics == b.metrics


def test_vectorized_run_shows_a_progress_bar_on_a_terminal(monkeypatch) -> None:
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    specs = plan_runs("split-mnist", ["naive"], [0, 1], {"samples_per_task": 64})
    run_vectorized(specs, [s.scenario.build(s.seed) for s in specs], CPU, progress=True)
    shown = terminal.getvalue()
    assert "naive seeds 0,1 vectorized:" in shown and " 0/10 " in shown  # 5 tasks x 2 batches


@pytest.mark.parametrize("lr", [1e6, 1e10])  # seed 0 diverges alone; every seed diverges
def test_a_diverging_seed_stops_as_in_its_sequential_run(lr: float) -> None:
    settings = {"samples_per_task": 96, "eval_every": 2, "naive.lr": lr}
    specs = plan_runs("split-mnist", ["naive"], [0, 1, 2], settings)
    streams = [spec.scenario.build(spec.seed) for spec in specs]
    one_by_one = [execute(spec, stream, CPU) for spec, stream in zip(specs, streams, strict=True)]
    together = run_vectorized(specs, streams, CPU)
    assert one_by_one[0].status == "diverged"
    for a, b in zip(one_by_one, together, strict=True):
        assert (a.status, a.error) == (b.status, b.error)
        assert len(a.matrix) == len(b.matrix)
        np.testing.assert_allclose(a.matrix, b.matrix, atol=1e-6)
        assert [(c.step, c.task) for c in a.curves] == [(c.step, c.task) for c in b.curves]
        np.testing.assert_allclose(
            [list(a.metrics.values())], [list(b.metrics.values())], atol=1e-6
        )


@pytest.mark.parametrize(
    ("strategy", "settings"),
    [
        ("er+ewc", {"replay.size": 50, "ewc.fisher_samples": 64, "momentum": 0.9}),
        ("der++", {"replay.size": 50}),  # stored logits, the vmap path
    ],
)
def test_a_vectorized_group_resumes_after_its_last_completed_task_with_identical_numbers(
    tmp_path, monkeypatch, strategy: str, settings: dict
) -> None:

    common = {"samples_per_task": 96, "eval_every": 2, **settings}
    specs = plan_runs("split-mnist", [strategy], [0, 1], common)
    streams = [spec.scenario.build(spec.seed) for spec in specs]
    whole = run_vectorized(specs, streams, CPU)
    checkpoint = tmp_path / "group.pt"
    with crashing_at_task(3), pytest.raises(KeyboardInterrupt):
        run_vectorized(specs, streams, CPU, checkpoint=checkpoint)
    assert torch.load(checkpoint, weights_only=True)["next_task"] == 3
    resumed = run_vectorized(specs, streams, CPU, checkpoint=checkpoint)
    for a, b in zip(whole, resumed, strict=True):
        assert a.matrix == b.matrix and a.init == b.init
        assert [(c.step, c.task, c.accuracies) for c in a.curves] == [
            (c.step, c.task, c.accuracies) for c in b.curves
        ]
    other = plan_runs("split-mnist", [strategy], [0, 2], common)  # another group's checkpoint
    fresh = run_vectorized(
        other, [s.scenario.build(s.seed) for s in other], CPU, checkpoint=checkpoint
    )
    np.testing.assert_allclose(fresh[0].matrix, whole[0].matrix, atol=1e-6)


def test_cli_vectorize_resumes_an_interrupted_group_from_its_checkpoint(
    tmp_path, monkeypatch
) -> None:
    from lifelong.evaluation.results_dir import load_runs

    out = tmp_path / "vec"
    args = ["run", "split-mnist", "-s", "er", "--seeds", "0,1", "--vectorize", "-q", "-j", "1"]
    args += ["--set", "samples_per_task=64", "--out", str(out)]
    with crashing_at_task(3):
        assert main(args) != 0  # interrupted: the completed tasks are in the checkpoint
    assert len(list((out / "checkpoints").glob("*.pt"))) == 1
    assert main(args) == 0
    assert not (out / "checkpoints").exists()
    whole = tmp_path / "whole"
    assert main([a if a != str(out) else str(whole) for a in args]) == 0
    assert [r.matrix for r in load_runs(out)] == [r.matrix for r in load_runs(whole)]


def test_vectorize_splits_each_configuration_over_the_jobs() -> None:
    from lifelong.execution.sweep import _vectorized_stacks, plan_requests

    requests = plan_requests("split-mnist", ["naive", "er"], [0, 1, 2], {})
    stacks = _vectorized_stacks(requests, 2)
    assert [[(r.strategy, r.seed) for r in s] for s in stacks] == [
        [("naive", 0), ("naive", 1)],
        [("naive", 2)],
        [("er", 0), ("er", 1)],
        [("er", 2)],
    ]
    assert [len(s) for s in _vectorized_stacks(requests, 1)] == [3, 3]
    assert [len(s) for s in _vectorized_stacks(requests, 8)] == [1] * 6


def test_cli_vectorize_with_two_jobs_runs_two_stacks_with_the_same_numbers(tmp_path) -> None:
    from lifelong.evaluation.results_dir import load_runs

    common = ["run", "split-mnist", "-s", "er", "--seeds", "0-3", "-q"]
    common += ["--set", "samples_per_task=64"]
    assert main([*common, "--vectorize", "--jobs", "2", "--out", str(tmp_path / "v")]) == 0
    assert main([*common, "--jobs", "1", "--out", str(tmp_path / "s")]) == 0
    vec, seq = load_runs(tmp_path / "v"), load_runs(tmp_path / "s")
    assert [r.seed for r in vec] == [0, 1, 2, 3]
    assert {r.device for r in vec} == {"cpu (vectorized x2)"}
    for a, b in zip(vec, seq, strict=True):
        np.testing.assert_allclose(a.matrix, b.matrix, atol=1e-6)


@pytest.mark.parametrize("background", [True, False])
def test_stacked_evaluations_equal_the_sequential_curves_exactly(monkeypatch, background) -> None:
    """The stacked MLPs' evaluations (all tasks' test sets in one pass, on a spare core
    beside training or in place) give every seed the numbers of its own run, curves
    included, bit for bit."""
    import lifelong.execution.vectorized as vectorized

    monkeypatch.setattr(vectorized, "spare_core", lambda device: background)
    specs = plan_runs(
        "permuted-mnist",
        ["er"],
        [0, 1, 2],
        {"n_tasks": 3, "samples_per_task": 96, "eval_every": 1, "eval_batch_size": 50},
    )
    streams = [spec.scenario.build(spec.seed) for spec in specs]
    one_by_one = [execute(spec, stream, CPU) for spec, stream in zip(specs, streams, strict=True)]
    for a, b in zip(one_by_one, run_vectorized(specs, streams, CPU), strict=True):
        assert a.init == b.init and a.matrix == b.matrix
        assert [(c.step, c.task, c.accuracies) for c in a.curves] == [
            (c.step, c.task, c.accuracies) for c in b.curves
        ]


def test_an_evaluation_reuses_the_buffers_of_the_one_before() -> None:
    from lifelong.execution.vectorized import Scratch, StackedTests, mlp_logits

    specs = plan_runs("split-mnist", ["naive"], [0, 1], {"samples_per_task": 32})
    streams = [spec.scenario.build(spec.seed) for spec in specs]
    tests = StackedTests(streams, chunk=100)
    weights = [torch.randn(2, 100, 784), torch.randn(2, 100)]
    weights += [torch.randn(2, 10, 100), torch.randn(2, 10)]
    scratch = Scratch()
    first = tests.accuracy(lambda x, _: mlp_logits(weights, x, scratch), scratch).clone()
    held = {name: t.data_ptr() for name, t in scratch.held.items()}
    second = tests.accuracy(lambda x, _: mlp_logits(weights, x, scratch), scratch)
    assert {name: t.data_ptr() for name, t in scratch.held.items()} == held
    assert torch.equal(first, second)


def test_an_error_in_a_background_evaluation_reaches_the_run(monkeypatch) -> None:
    import lifelong.execution.vectorized as vectorized

    monkeypatch.setattr(vectorized, "spare_core", lambda device: True)

    def broken(*args):
        raise RuntimeError("evaluation failed")

    monkeypatch.setattr(vectorized, "mlp_logits", broken)
    specs = plan_runs("split-mnist", ["naive"], [0, 1], {"samples_per_task": 32})
    streams = [spec.scenario.build(spec.seed) for spec in specs]
    with pytest.raises(RuntimeError, match="evaluation failed"):
        run_vectorized(specs, streams, CPU)
