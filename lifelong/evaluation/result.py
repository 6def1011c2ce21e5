"""The result of one run: accuracy matrix, init row, metrics, curves and how to save them."""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CSV_COLUMNS", "Curve", "RunResult", "code_hash", "run_key", "same_setup"]

CSV_COLUMNS = (
    "strategy",
    "seed",
    "scenario",
    "point",
    "after_task",
    "step",
    "eval_task",
    "accuracy",
)


ONLINE_METRICS = ("a_auc", "a_last", "lca", "few_shot_1", "few_shot_5", "few_shot_10")
"""The metrics of the stream options, in a run's metrics only when measured."""


@dataclass(frozen=True)
class Curve:
    """Accuracy on every task at one point of training.

    Attributes:
        step: batches trained so far (0 before training).
        task: the task being trained (-1 before training).
        accuracies: one accuracy per task of the stream.
    """

    step: int
    task: int
    accuracies: list[float]


@dataclass
class RunResult:
    """Everything one run produced. Accuracies are fractions in [0, 1].

    Attributes:
        matrix: R, ``T x T``; ``matrix[i][j]`` is the accuracy on task j after task i.
        init: b, length T: the accuracy of the untrained model on every task.
        metrics: acc, bwt, fwt, forgetting, la, bti (see :mod:`lifelong.evaluation.metrics`).
        curves: evaluations in training order: before training, every ``eval_every``
            batches, and at the end of every task.
        chance: the accuracy of guessing, 1 / the outputs a head chooses among (NaN:
            unknown, a summary written before lifelong recorded it).
        online: what the stream options asked to measure (:mod:`lifelong.evaluation.anytime`):
            ``anytime`` ``[[samples seen, accuracy], ...]``, ``task_ends`` (samples seen at
            each true boundary), ``lca`` (``[T, beta + 1]``), ``few_shot`` (``[T, 3]``,
            after 1, 5, 10 steps), ``detected`` (samples seen at detected boundaries);
            only those measured. Their metrics are in ``metrics``.
    """

    scenario: str
    strategy: str
    seed: int
    config: dict[str, Any]
    key: str
    task_names: list[str]
    matrix: list[list[float]]
    init: list[float]
    metrics: dict[str, float]
    curves: list[Curve] = field(default_factory=list)
    wall_s: float = 0.0
    device: str = "cpu"
    status: str = "ok"
    error: str = ""
    chance: float = math.nan
    online: dict[str, Any] = field(default_factory=dict)
    version: str = field(default_factory=lambda: _lifelong_version())

    @property
    def ok(self) -> bool:
        """Whether the run completed (not diverged, not failed)."""
        return self.status == "ok"

    def not_learned(self) -> str:
        """Why this run looks like it learned nothing ("" when it does not): the tasks whose
        accuracy right after training them is near chance, and LA when it is near chance
        too (:func:`lifelong.evaluation.metrics.near_chance`)."""
        from lifelong.evaluation import metrics

        if math.isnan(self.chance) or self.chance >= 1 or not self.matrix:
            return ""  # one output per head: every answer is right, nothing to learn
        tasks = metrics.unlearned_tasks(self.matrix, self.chance)
        la = self.metrics.get("la", math.nan)
        la_low = not math.isnan(la) and metrics.near_chance(la, self.chance)
        if not tasks and not la_low:
            return ""
        parts = []
        if tasks:
            names = ", ".join(self.task_names[k] for k in tasks)
            n = len(self.matrix)
            parts.append(f"{len(tasks)} of {n} tasks near chance right after training ({names})")
        if la_low:
            parts.append(f"LA {la:.3f}")
        return f"{'; '.join(parts)}; chance is {self.chance:.3f}"

    @classmethod
    def failed(
        cls, scenario: str, strategy: str, seed: int, config: dict[str, Any], error: str
    ) -> RunResult:
        """The record of a run whose strategy raised: no numbers, the traceback kept."""
        nan = math.nan
        names = ("acc", "bwt", "fwt", "forgetting", "la", "bti", *ONLINE_METRICS)
        return cls(
            scenario=scenario,
            strategy=strategy,
            seed=seed,
            config=config,
            key=run_key(config),
            task_names=[],
            matrix=[],
            init=[],
            metrics=dict.fromkeys(names, nan),
            status="failed",
            error=error,
        )

    def summary(self) -> dict[str, Any]:
        """This run as one JSON-ready object of ``summary.json`` (NaN written as null)."""
        return {
            "strategy": self.strategy,
            "seed": self.seed,
            "scenario": self.scenario,
            "key": self.key,
            "config": self.config,
            "task_names": self.task_names,
            "matrix": self.matrix,
            "init": self.init,
            **{name: _json_number(value) for name, value in self.metrics.items()},
            "wall_s": round(self.wall_s, 4),
            "device": self.device,
            "status": self.status,
            "error": self.error,
            "chance": _json_number(self.chance),
            "lifelong": self.version,
            "curves": [[c.step, c.task, c.accuracies] for c in self.curves],
            **({"online": self.online} if self.online else {}),
        }

    @classmethod
    def from_summary(cls, entry: dict[str, Any]) -> RunResult:
        """Rebuild a result from its ``summary.json`` object.

        Raises:
            ValueError: the object is not a run as lifelong writes it (a field missing or
                of the wrong type, rows of the wrong length), saying which field.
        """
        _check_entry(entry)
        names = ("acc", "bwt", "fwt", "forgetting", "la", "bti", *ONLINE_METRICS)
        return cls(
            scenario=entry["scenario"],
            strategy=entry["strategy"],
            seed=entry["seed"],
            config=entry["config"],
            key=entry["key"],
            task_names=entry["task_names"],
            matrix=entry["matrix"],
            init=entry["init"],
            metrics={
                n: math.nan if entry.get(n) is None else entry[n]
                for n in names
                if n in entry or n not in ONLINE_METRICS
            },
            curves=[Curve(s, t, a) for s, t, a in entry.get("curves", [])],
            wall_s=entry.get("wall_s", 0.0),
            device=entry.get("device", "cpu"),
            status=entry.get("status", "ok"),
            error=entry.get("error", ""),
            chance=math.nan if entry.get("chance") is None else entry["chance"],
            version=str(entry.get("lifelong", "unknown")),
            online=entry.get("online", {}),
        )

    def rows(self) -> list[dict[str, Any]]:
        """Long format, one row per (evaluation point, task): the results.csv rows.

        ``point`` is ``init`` (before training), ``curve`` (every ``eval_every``
        batches) or ``task_end`` (after a task: a row of R).
        """
        last = {c.task: i for i, c in enumerate(self.curves)}  # a task's last one is its end
        out = []
        for i, c in enumerate(self.curves):
            ended = last[c.task] == i and c.task < len(self.matrix)  # not a diverged task's
            point = "init" if c.task < 0 else ("task_end" if ended else "curve")
            for j, accuracy in enumerate(c.accuracies):
                values = (
                    self.strategy,
                    self.seed,
                    self.scenario,
                    point,
                    c.task,
                    c.step,
                    j,
                    accuracy,
                )
                out.append(dict(zip(CSV_COLUMNS, values, strict=True)))
        return out

    def to_frame(self) -> pd.DataFrame:
        """The rows as a pandas DataFrame (pandas is imported only here)."""
        import pandas as pd

        return pd.DataFrame(self.rows(), columns=list(CSV_COLUMNS))


def _check_entry(entry: Any) -> None:
    """The checks of :meth:`RunResult.from_summary`."""
    if not isinstance(entry, dict):
        raise ValueError(f"a run is {type(entry).__name__}, not an object")
    for name, kind in (("scenario", str), ("strategy", str), ("key", str), ("config", dict)):
        if not isinstance(entry.get(name), kind):
            raise ValueError(f"'{name}' is missing or not a {kind.__name__}")
    if not isinstance(entry.get("seed"), int) or isinstance(entry["seed"], bool):
        raise ValueError("'seed' is missing or not an integer")
    names = entry.get("task_names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError("'task_names' is missing or not a list of names")
    status = entry.get("status", "ok")
    if status not in ("ok", "diverged", "failed"):
        raise ValueError(f"'status' {status!r} is none of ok, diverged, failed")
    width = len(names) if status != "failed" else None

    def numbers(values: Any, what: str, allow_null: bool = False) -> None:
        if not isinstance(values, list) or (width is not None and len(values) != width):
            raise ValueError(f"{what} is not a list of {width} accuracies")
        for v in values:
            null = v is None and allow_null
            if not null and (not isinstance(v, int | float) or isinstance(v, bool)):
                raise ValueError(f"{what} holds {v!r}, not a number")

    matrix = entry.get("matrix")
    if not isinstance(matrix, list) or (status == "ok" and len(matrix) != len(names)):
        raise ValueError("'matrix' is missing or has not one row per task")
    for i, row in enumerate(matrix):
        numbers(row, f"'matrix' row {i}", allow_null=True)
        if any(v is None for v in row[: i + 1]):  # only cells of tasks not yet trained
            raise ValueError(f"'matrix' row {i} has no accuracy for a task already trained")
    if status != "failed":
        numbers(entry.get("init"), "'init'")
    for name in ("acc", "bwt", "fwt", "forgetting", "la", "bti", "chance", *ONLINE_METRICS):
        value = entry.get(name)
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            raise ValueError(f"'{name}' is {value!r}, not a number")
    for curve in entry.get("curves", []):
        if not (isinstance(curve, list) and len(curve) == 3):
            raise ValueError("a curve point is not [step, task, accuracies]")
        numbers(curve[2], "a curve point's accuracies", allow_null=True)


def run_key(config: dict[str, Any]) -> str:
    """A stable hash of a run's full configuration (skips completed runs on a re-run).

    The configuration holds every setting and, for a plug-in, the hash of its code
    (:func:`code_hash`), so a run is done again when either changes.
    """
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def same_setup(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two configurations differ in nothing but the plug-in's code: the later run
    replaces the earlier one in a results directory."""
    return {**a, "code": None} == {**b, "code": None}


@functools.cache
def code_hash(cls: type) -> str | None:
    """A hash of a plug-in class's source file and its name; None for lifelong's own code
    (whose version each run records instead). Worked out once per class: an edited file
    is imported anew (:func:`lifelong.composition.registry.find_strategy`), as a new class."""
    module = inspect.getmodule(cls)
    if module is None or module.__name__.split(".")[0] == "lifelong":
        return None
    try:
        source = Path(inspect.getfile(module)).read_bytes()
    except (TypeError, OSError):  # defined in no file (an interactive session)
        return None
    return hashlib.sha256(source + b"\0" + cls.__qualname__.encode()).hexdigest()[:16]


def _lifelong_version() -> str:
    import lifelong

    return lifelong.__version__


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)
