"""The Markdown report of ``lifelong bench`` (``reports/performance.md``)."""

from __future__ import annotations

import platform
import statistics
from importlib import metadata
from pathlib import Path

from lifelong.bench.harness import Timing, Workload

__all__ = ["BenchRow", "render"]

LOOP_TARGET = 1.2  # lifelong's loop within 1.2x of the hand-written loop
AVALANCHE_TARGETS = {"naive": 3.0, "er": 3.0, "ewc": 5.0}
E2E_TARGET = 2.0


class BenchRow:
    """Measurements of one workload."""

    def __init__(
        self, workload: Workload, samples: int, loop: dict[str, Timing], e2e: dict[str, float]
    ) -> None:
        self.workload, self.samples, self.loop, self.e2e = workload, samples, loop, e2e

    def ratio(self, slower: str, faster: str) -> float:
        if slower not in self.loop or faster not in self.loop:
            return float("nan")
        return self.loop[slower].median / self.loop[faster].median


def render(
    rows: list[BenchRow],
    *,
    command: str,
    repeat: int,
    profile: str,
    threads: int,
    memory: list[tuple[float, float]] | None = None,
) -> str:
    """The whole report as Markdown."""
    lines = [
        "# Performance: lifelong against a hand-written loop and Avalanche",
        "",
        f"Regenerate with: `{command}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {_cores()} cores, "
        f"torch threads per run: {threads}; Python {platform.python_version()}, "
        f"torch {_version('torch')}, avalanche-lib {_version('avalanche-lib')}. "
        f"Medians of {repeat} interleaved repetitions in one process; CPU only.",
        "",
        "The loop time covers building the model, the evaluation of every task before "
        "training, training, and the evaluation of every task after each task. All three "
        "implementations get the same stream tensors, MLP 784-100-100-10 with the same initial "
        "weights, batch size 32, one epoch, SGD lr 0.1 and the same hyperparameters. ACC is "
        "the mean of the last row of R (the data order and sampling differ between "
        "implementations, so ACC agrees only up to seed noise).",
        "",
        "## Training + evaluation loop",
        "",
        "| workload | implementation | loop s | samples/s | x hand loop | ACC |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        hand = row.loop["hand loop"].median
        for name, timing in row.loop.items():
            lines.append(
                f"| {row.workload.name} | {name} | {timing.median:.3f} | "
                f"{row.samples / timing.median:,.0f} | {timing.median / hand:.2f} | "
                f"{statistics.fmean(timing.acc):.3f} |"
            )
    lines += [
        "",
        "## End to end (a fresh process: imports, data, training, evaluation)",
        "",
        "| workload | lifelong s | hand loop s | avalanche s | avalanche / lifelong |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        ava = row.e2e.get("avalanche", float("nan"))
        lines.append(
            f"| {row.workload.name} | {row.e2e['lifelong']:.2f} | "
            f"{row.e2e['hand loop']:.2f} | {ava:.2f} | {ava / row.e2e['lifelong']:.2f} |"
        )
    lines += ["", "## Targets", "", "| target | workload | measured | met |", "|---|---|---:|---|"]
    lines += _targets(rows)
    lines += [
        "",
        "## Where lifelong's loop spends its time (cProfile, own time)",
        "",
        "```",
        profile,
        "```",
        "",
    ]
    return "\n".join(lines)


def _targets(rows: list[BenchRow]) -> list[str]:
    out = []
    for row in rows:
        name = row.workload.name
        loop = row.ratio("lifelong", "hand loop")
        out.append(_target(f"loop <= {LOOP_TARGET}x hand loop", name, loop, loop <= LOOP_TARGET))
        goal = AVALANCHE_TARGETS.get(row.workload.strategy)
        speedup = row.ratio("avalanche", "lifelong")
        if goal is not None and speedup == speedup:
            out.append(
                _target(f"loop >= {goal}x faster than Avalanche", name, speedup, speedup >= goal)
            )
        if "avalanche" in row.e2e:
            e2e = row.e2e["avalanche"] / row.e2e["lifelong"]
            out.append(
                _target(
                    f"process >= {E2E_TARGET}x faster than Avalanche", name, e2e, e2e >= E2E_TARGET
                )
            )
    return out


def _target(what: str, workload: str, value: float, met: bool) -> str:
    verdict = "yes" if met else "**no**"
    return f"| {what} | {workload} | {value:.2f}x | {verdict} |"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def write(path: Path, text: str) -> None:
    """Write the report atomically."""
    from lifelong.results_dir import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text)
