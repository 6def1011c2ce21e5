"""The Python entry points: ``lifelong.run(scenario, strategy, ...)``, ``save``, ``report``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from lifelong.composition.plan import check_memory, plan_runs
from lifelong.contracts.scenario import ScenarioFamily
from lifelong.contracts.strategy import Strategy
from lifelong.errors import UserError
from lifelong.evaluation.report import (
    make_report,  # imported here, so that lifelong.report stays report()
)
from lifelong.evaluation.result import RunResult
from lifelong.execution.runner import execute, resolve_device

__all__ = ["report", "run", "save"]


def run(
    scenario: str | ScenarioFamily,
    strategy: str | Strategy,
    *,
    seed: int = 0,
    device: str = "auto",
    settings: Mapping[str, Any] | None = None,
    data_dir: str | None = None,
    progress: bool = False,
    threads: int | None = 1,
) -> RunResult:
    """Run one strategy on one scenario and return its matrix, metrics and curves.

    Args:
        scenario: a registered name (``"split-mnist"``) or a configured family instance.
        strategy: a short name, ``"file.py:Class"``, ``"module:Class"`` or an instance.
        seed: fixes the stream, the initial weights, the data order and all sampling.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        settings: parameter overrides, as with ``--set`` (``{"setting": "task", "lr": 0.1}``).
        data_dir: where the IDX files of ``mnist`` or ``fashion-mnist`` lie.
        progress: show a progress bar on a terminal.
        threads: torch's CPU threads during the run, 1 by default as in ``lifelong run``
            (small models train fastest on one, and the numbers match the CLI's bit for
            bit); the caller's setting is restored afterwards. ``None`` keeps it.

    Returns:
        The :class:`RunResult`; ``result.to_frame()`` gives the long-format DataFrame.
    """
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise UserError(f"threads={threads!r}: give a whole number >= 1, or None to keep torch's")
    (spec,) = plan_runs(scenario, [strategy], [seed], settings)
    target = resolve_device(device)
    check_memory(spec, data_dir, target)
    stream = spec.build_stream(data_dir)
    with torch_threads(threads):
        return execute(spec, stream, target, progress=progress, data_dir=data_dir)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with torch at ``threads`` CPU threads (``None``: unchanged), then
    restore the caller's count."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def save(
    results: RunResult | Iterable[RunResult],
    out_dir: str | os.PathLike[str],
    *,
    log: Sequence[str] = (),
    group: str | None = None,
) -> Path:
    """Write results as ``lifelong run --out`` does: ``summary.json`` and ``results.csv``.

    Runs already in ``out_dir`` (from the CLI or an earlier ``save``) stay; a run with
    the same run key (same configuration and seed) is replaced, so the directory is
    one results directory that ``lifelong report`` and a resumed sweep read as their own.

    Args:
        results: what :func:`run` returned (one result or several).
        out_dir: the results directory (created if missing).
        log: trackers to log the given runs to as well: ``"tensorboard"``, ``"wandb"``,
            ``"mlflow"`` (under ``out_dir``, as ``--log`` does).
        group: the trackers' group or experiment name (default: ``out_dir``'s name).

    Returns:
        ``out_dir`` as a Path.
    """
    from lifelong.evaluation.results_dir import check_out_dir, load_runs, save_runs
    from lifelong.trackers import open_trackers

    runs = [results] if isinstance(results, RunResult) else list(results)
    strays = [type(r).__name__ for r in runs if not isinstance(r, RunResult)]
    if strays:
        raise UserError(f"save takes what lifelong.run returns, not {strays[0]}")
    out = check_out_dir(out_dir)
    trackers = open_trackers(log, out, group or out.resolve().name) if log else None
    merged = {run.key: run for run in load_runs(out)}
    merged.update((run.key, run) for run in runs)
    save_runs(out, merged.values())
    for run in runs:
        if trackers is not None:
            trackers.log(run)
    return out


def report(
    out_dir: str | os.PathLike[str],
    report_dir: str | os.PathLike[str] | None = None,
    *,
    fmt: str = "png",
) -> Path:
    """Plots, matrix CSVs and ``report.md`` for a results directory, as ``lifelong report``.

    Returns:
        The path of ``report.md`` (in ``out_dir/report`` unless ``report_dir`` is given).
    """
    return make_report(out_dir, report_dir, fmt=fmt)
