"""glibc's malloc settings are the ``lifelong`` command's, never a library call's (issue 17:
process-wide state)."""

from __future__ import annotations

import pytest
import torch

from lifelong.cli import main
from lifelong.composition.plan import plan_runs
from lifelong.execution import allocator
from lifelong.execution.allocator import MMAP_THRESHOLD, TRIM_THRESHOLD
from lifelong.execution.runner import execute
from lifelong.execution.vectorized import run_vectorized

CPU = torch.device("cpu")
RUN = ["run", "split-mnist", "-s", "naive", "--set", "samples_per_task=32", "-q"]


class _Libc:
    """A stand-in for glibc that records ``mallopt`` calls instead of making them."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, parameter: int, value: int) -> int:
        self.calls.append((parameter, value))
        return 1


@pytest.fixture
def libc(monkeypatch) -> _Libc:
    fake = _Libc()
    monkeypatch.setattr(allocator, "_libc", lambda: fake)
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):  # restored afterwards
        monkeypatch.setenv(name, "unset by the test")
    return fake


def test_runs_from_the_library_leave_the_allocator_alone(libc, tmp_path) -> None:
    specs = plan_runs("split-mnist", ["er"], [0, 1], {"samples_per_task": 32})
    streams = [spec.scenario.build(spec.seed) for spec in specs]
    execute(specs[0], streams[0], CPU)
    run_vectorized(specs, streams, CPU)
    assert main([*RUN, "--seeds", "0-1", "--vectorize", "--out", str(tmp_path / "v")]) == 0
    assert libc.calls == []


def test_the_command_pins_the_thresholds_for_itself_and_its_workers(libc, tmp_path) -> None:
    import os

    args = [*RUN, "--seeds", "0-3", "--vectorize", "-j", "1", "--out", str(tmp_path / "v")]
    assert main(args, tune_malloc=True) == 0
    stacked = 4 * MMAP_THRESHOLD  # four seeds in one stack
    assert (allocator._M_MMAP_THRESHOLD, stacked) in libc.calls
    assert (allocator._M_TRIM_THRESHOLD, TRIM_THRESHOLD) in libc.calls
    assert os.environ["MALLOC_MMAP_THRESHOLD_"] == str(stacked)
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == str(TRIM_THRESHOLD)
    libc.calls.clear()
    assert (
        main([*RUN, "--seeds", "0-3", "-j", "1", "--out", str(tmp_path / "s")], tune_malloc=True)
        == 0
    )
    assert (allocator._M_MMAP_THRESHOLD, MMAP_THRESHOLD) in libc.calls


def test_a_conv_net_raises_the_threshold_above_its_step_buffers(libc, tmp_path) -> None:
    """cnn at batch 32 allocates about 3 MB a step (32 x 32 channels x 28 x 28 floats);
    mapped apart at 512 KiB, every step page-faults them anew."""
    args = [*RUN, "--set", "model=cnn", "--set", "batch_size=32", "--seeds", "0"]
    assert main([*args, "--out", str(tmp_path / "c")], tune_malloc=True) == 0
    step = 32 * 32 * 28 * 28 * 4
    assert (allocator._M_MMAP_THRESHOLD, 4 * step) in libc.calls


def test_a_replay_batch_of_the_whole_memory_raises_the_threshold(libc, tmp_path) -> None:
    """GEM passes its batch and its whole memory (replay batch 256, memory 200) through the
    MLP every step: 232 rows of 784 floats, above 512 KiB, so the threshold rises over
    them; ER's 10 + 10 rows leave it at the default."""
    gem = ["run", "split-mnist", "-s", "gem", "--set", "samples_per_task=32", "-q"]
    gem += ["--set", "replay.size=200", "--set", "batch_size=32", "--seeds", "0"]
    assert main([*gem, "--out", str(tmp_path / "g")], tune_malloc=True) == 0
    assert (allocator._M_MMAP_THRESHOLD, 4 * (32 + 200) * 784 * 4) in libc.calls
    (er,) = plan_runs("split-mnist", ["er"], [0], {"batch_size": 10})
    assert er.training_rows() == 20  # its replay batch is the stream's by default
    assert allocator.threshold_for(20 * 784 * 4) == MMAP_THRESHOLD  # ER's step: the default
    (naive,) = plan_runs("split-mnist", ["naive"], [0], {"batch_size": 10})
    assert naive.training_rows() == 10


def test_threshold_rule() -> None:
    assert allocator.threshold_for(4_000) == MMAP_THRESHOLD  # the MLP's step
    assert allocator.threshold_for(4_000, stack=8) == 8 * MMAP_THRESHOLD
    assert allocator.threshold_for(3_000_000) == 12_000_000
    assert allocator.threshold_for(3_000_000, stack=64) == 64 * MMAP_THRESHOLD
    assert allocator.threshold_for(10**9) == allocator.MAX_MMAP_THRESHOLD
