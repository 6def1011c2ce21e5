"""Resident memory over a long stream: does anything grow with the number of tasks?"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["memory_profile", "rss_mib", "rss_per_task"]


def rss_mib() -> float:
    """This process's resident set size in MiB (Linux /proc; NaN elsewhere)."""
    status = Path("/proc/self/status")
    if not status.exists():
        return float("nan")
    for line in status.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_profile(
    strategy: str = "er", n_tasks: int = 100, samples_per_task: int = 200
) -> list[tuple[float, float]]:
    """RSS sampled every 0.1 s while ``strategy`` trains a ``n_tasks`` permuted stream.

    Returns:
        ``(fraction of the run elapsed, RSS MiB)`` pairs; the stream is built first, so a
        flat profile means nothing grows with the tasks seen.
    """
    from lifelong.composition.plan import plan_runs
    from lifelong.execution.runner import execute

    settings = {
        "n_tasks": n_tasks,
        "samples_per_task": samples_per_task,
        "batch_size": 10,
        "eval_every": 0,
        "replay.size": 500,
        "replay.batch": 10,
    }
    if strategy != "er":
        settings = {k: v for k, v in settings.items() if not k.startswith("replay.")}
    (spec,) = plan_runs("permuted-mnist", [strategy], [0], settings)
    stream = spec.scenario.build(0)
    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append((time.perf_counter(), rss_mib()))
            time.sleep(0.1)

    watcher = threading.Thread(target=sample, daemon=True)
    start = time.perf_counter()
    watcher.start()
    execute(spec, stream, torch.device("cpu"))
    done.set()
    watcher.join()
    total = time.perf_counter() - start
    return [((t - start) / total, mib) for t, mib in samples]


def rss_per_task(workload: Any) -> list[float]:
    """RSS MiB at every evaluation of one lifelong run of ``workload`` (a
    :class:`~lifelong.bench.harness.Workload`): before training, then after each task."""
    from lifelong.composition.plan import plan_runs
    from lifelong.execution import runner

    (spec,) = plan_runs(workload.scenario, [workload.strategy], [0], workload.lifelong_settings())
    stream = workload.stream(spec)
    seen: list[float] = []
    evaluate = runner.evaluate

    def recorded(*args: Any, **kwargs: Any) -> torch.Tensor:
        seen.append(rss_mib())
        return evaluate(*args, **kwargs)

    runner.evaluate = recorded
    try:
        runner.execute(spec, stream, torch.device("cpu"))
    finally:
        runner.evaluate = evaluate
    return seen
