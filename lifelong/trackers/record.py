"""What a tracker logs of one run, worked out once for every sink."""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lifelong.evaluation.result import RunResult

__all__ = ["RunRecord", "run_record"]

METRICS = ("acc", "bwt", "fwt", "forgetting", "la", "bti")


@dataclass(frozen=True)
class RunRecord:
    """One run as trackers take it.

    Attributes:
        name: ``strategy-seedN-KEY8``: unique per configuration and seed.
        params: the config flattened to ``section.key`` -> a number, bool or string.
        scalars: ``(tag, step, value)`` for every evaluation: ``accuracy/task_j`` per task
            and ``accuracy/average`` over the tasks trained so far, at the batches trained.
        metrics: the final metrics that are defined (NaN ones left out).
        figures: the report's accuracy matrix and curves for this run alone, PNG bytes.
        summary: the run's ``summary.json`` entry as JSON text.
    """

    name: str
    key: str
    status: str
    params: dict[str, Any]
    scalars: list[tuple[str, int, float]]
    metrics: dict[str, float]
    final_step: int
    figures: dict[str, bytes]
    summary: str


def run_record(run: RunResult) -> RunRecord:
    """The record of ``run`` (draws its figures: about a second)."""
    scalars = []
    for curve in run.curves:
        seen = curve.accuracies[: max(curve.task, 0) + 1]
        for j, value in enumerate(curve.accuracies):
            if value is not None and not math.isnan(value):
                scalars.append((f"accuracy/task_{j}", curve.step, float(value)))
        finite = [v for v in seen if v is not None and not math.isnan(v)]
        if finite:
            scalars.append(("accuracy/average", curve.step, sum(finite) / len(finite)))
    metrics = {m: float(run.metrics[m]) for m in METRICS if not math.isnan(run.metrics[m])}
    return RunRecord(
        name=f"{run.strategy}-seed{run.seed}-{run.key[:8]}",
        key=run.key,
        status=run.status,
        params=_flat(run.config),
        scalars=scalars,
        metrics=metrics,
        final_step=max((c.step for c in run.curves), default=0),
        figures=_figures(run) if run.ok else {},
        summary=json.dumps(run.summary(), indent=1),
    )


def _figures(run: RunResult) -> dict[str, bytes]:
    """The report's accuracy matrix (with the init row b) and curves, for this run alone."""
    from lifelong.evaluation import plots
    from lifelong.evaluation.report import runs_frame

    frame = runs_frame([run])
    figures = {
        "accuracy.png": plots.matrix_figure(frame, frame["label"].iloc[0], "accuracy"),
        "curves.png": plots.curves_figure(frame),
    }
    with tempfile.TemporaryDirectory(prefix="lifelong-figures-") as tmp:
        for name, figure in figures.items():
            plots.save_figure(figure, Path(tmp) / name, "png")
        return {name: (Path(tmp) / name).read_bytes() for name in figures}


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float, bool, str)):
            out[f"{prefix}{key}"] = value
        else:  # lists and None: as the config writes them
            out[f"{prefix}{key}"] = json.dumps(value)
    return out
