"""Experiment trackers as optional sinks: TensorBoard, Weights & Biases, MLflow.

Each completed run is logged once, as it lands in the results directory (after
``summary.json`` is written): its config as hyperparameters, every evaluation as scalars
at its step, the final metrics, the report's figures for the run, and its summary as an
artifact. A tracker that is not installed or cannot write is refused before any run; one
that fails later says so in one line and stops logging, while the results stay on disk.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path

from lifelong.errors import UserError, closest
from lifelong.evaluation.result import RunResult
from lifelong.trackers.record import RunRecord, run_record
from lifelong.trackers.sinks import SINKS, Sink

__all__ = ["TRACKERS", "RunRecord", "Trackers", "open_trackers", "run_record"]

TRACKERS: tuple[str, ...] = tuple(SINKS)
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


class Trackers:
    """The open sinks of one results directory; :meth:`log` never raises."""

    def __init__(self, sinks: list[Sink], out: Path, say: Callable[[str], None]) -> None:
        self.sinks = sinks
        self.out = out
        self.say = say
        self.failed: list[str] = []

    def log(self, run: RunResult) -> None:
        """Log one completed run to every sink still working (failed runs are not logged)."""
        if run.status == "failed" or not self.sinks:
            return
        try:
            record = run_record(run)
        except Exception as error:  # a figure that cannot be drawn: the run itself is saved
            self._fail(self.sinks[:], run, error)
            return
        for sink in self.sinks[:]:
            try:
                sink.log(record)
            except Exception as error:  # the tracker's own failure must not stop the sweep
                self._fail([sink], run, error)

    def _fail(self, sinks: list[Sink], run: RunResult, error: Exception) -> None:
        for sink in sinks:
            self.sinks.remove(sink)
            self.failed.append(sink.name)
            first = (str(error).strip().splitlines() or [""])[0]
            self.say(
                f"lifelong: --log {sink.name} failed on {run.strategy} seed {run.seed} "
                f"({type(error).__name__}: {first}); it logs no further runs; the results "
                f"in {self.out} are complete"
            )


def open_trackers(
    names: Sequence[str], out: Path, group: str, say: Callable[[str], None] = print
) -> Trackers:
    """Check ``names`` (installed, writable) and open their sinks under ``out``.

    Raises:
        UserError: an unknown name, a library not installed, a directory not writable.
    """
    sinks = []
    for name in dict.fromkeys(names):
        if name not in SINKS:
            raise UserError(f"unknown --log '{name}'{closest(name, SINKS)}; use {', '.join(SINKS)}")
        if importlib.util.find_spec(PACKAGES[name]) is None:
            raise UserError(
                f"--log {name}: the {PACKAGES[name]} package is not installed; "
                f"pip install 'lifelong[{name}]'"
            )
        sinks.append(SINKS[name](out, group))
    return Trackers(sinks, out, say)
