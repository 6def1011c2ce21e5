"""The strategy contract as a test a plug-in author runs: :func:`check_strategy`.

The same properties lifelong's own conformance test asks of every built-in, on a tiny
stream built from arrays (so it takes seconds): in the class, domain and task settings the
strategy trains every task to a finite ``T x T`` matrix; the same seed gives the same
matrix and curves (no state leaks from one run into the next); another seed gives another
initialisation; a run resumed from a checkpoint at a task boundary ends exactly as one
that was not interrupted (state created in ``setup``, nothing hidden elsewhere); and the
hooks keep their types (``train_step`` returns a detached 0-d loss, ``predict`` logits
``[B, n_outputs]``).
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lifelong.composition.plan import plan_runs
from lifelong.contracts.strategy import Batch, Strategy, StreamInfo
from lifelong.contracts.stream import SETTINGS, Stream, training_data
from lifelong.data.inputs import to_floats
from lifelong.data.own_data import from_arrays
from lifelong.data.own_scenario import scenario_from
from lifelong.evaluation.result import RunResult
from lifelong.execution.runner import RunSpec, execute
from lifelong.models.axis import build_model

__all__ = ["ConformanceError", "check_strategy"]

CPU = torch.device("cpu")
SMALL = {"batch_size": 8, "eval_every": 2, "hidden": "16"}


class ConformanceError(AssertionError):
    """A strategy breaks the contract; the message says which property, in which setting."""


def check_strategy(
    strategy: str | Strategy,
    settings: Mapping[str, Any] | None = None,
    *,
    setting_names: tuple[str, ...] = SETTINGS,
) -> None:
    """Run ``strategy`` through lifelong's contract on a tiny stream; raise if it fails.

    Args:
        strategy: as :func:`lifelong.run` takes it: ``"file.py:Class"``, a short name or
            an instance.
        settings: parameter overrides (``{"lr": 0.05}``), as with ``--set``.
        setting_names: the settings to check in (default: class, domain and task).

    Raises:
        ConformanceError: the first property that fails, named with its setting.
        UserError: the strategy cannot even be planned (not a Strategy, a bad setting).
    """
    for setting in setting_names:
        stream_scenario = tiny_scenario(setting)
        (spec,) = plan_runs(stream_scenario, [strategy], [0], {**SMALL, **(settings or {})})
        stream = stream_scenario.build(0)
        where = f"{spec.strategy.name} ({setting}-incremental)"
        _check_hooks(spec, stream, where)
        _check_runs(spec, stream, where)


def tiny_scenario(setting: str) -> Any:
    """Two tasks of two classes each, 16 inputs, 12 training samples per class."""
    rng = np.random.default_rng(123)
    y = np.repeat(np.arange(4), 18)
    x = 0.3 * rng.random((len(y), 16))
    for c in range(4):  # each class lights up its own block of inputs
        x[y == c, 4 * c : 4 * (c + 1)] += 0.6
    data = from_arrays(x.astype(np.float32), y, test_fraction=1 / 3, name="conformance")
    return scenario_from(data, setting=setting, increment=2)


def _check_runs(spec: RunSpec, stream: Stream, where: str) -> None:
    first = _quiet(spec, stream, where)
    n = stream.n_tasks
    _require(first.ok, where, f"the run did not complete: {first.status} {first.error}")
    shape_ok = len(first.matrix) == n and all(len(row) == n for row in first.matrix)
    _require(shape_ok, where, f"the accuracy matrix is not {n} x {n}")
    finite = all(math.isfinite(v) for row in first.matrix for v in row)
    _require(finite, where, "the accuracy matrix holds NaN or infinite values")
    again = _quiet(spec, stream, where)
    same = first.matrix == again.matrix and first.curves == again.curves
    _require(
        same,
        where,
        "the same seed gave other results (state leaks between runs, or "
        "randomness not drawn from the generator given to setup)",
    )
    other = _quiet(dataclasses.replace(spec, seed=1), stream, where)
    _require(first.init != other.init, where, "another seed gave the same initial accuracy")
    with tempfile.TemporaryDirectory(prefix="lifelong-conformance-") as tmp:
        checkpoint = Path(tmp) / "run.pt"
        _quiet(spec, stream, where, checkpoint)  # leaves the state after the first task
        resumed = _quiet(spec, stream, where, checkpoint)
    resumable = type(spec.strategy).resumable
    if resumable:
        same = resumed.matrix == first.matrix and resumed.curves == first.curves
        _require(
            same,
            where,
            "a run resumed from a checkpoint ended otherwise than one not "
            "interrupted (create all state in setup, as tensors, lists, dicts or "
            "dataclasses of them)",
        )


def _quiet(spec: RunSpec, stream: Stream, where: str, checkpoint: Path | None = None) -> RunResult:
    """Run ``spec``; a checkpoint warning is a failure of the contract."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = execute(spec, stream, CPU, checkpoint=checkpoint)
    for warning in caught:
        if "checkpoint" in str(warning.message) or "resumed" in str(warning.message):
            raise ConformanceError(f"{where}: {warning.message}")
    return result


def _check_hooks(spec: RunSpec, stream: Stream, where: str) -> None:
    strategy = dataclasses.replace(spec.strategy)
    model = build_model(spec.protocol, stream)
    info = StreamInfo.of(stream, spec.scenario, batch_size=spec.protocol.batch_size)
    strategy.setup(model, info, torch.Generator().manual_seed(0))
    for task in stream.tasks:
        data = training_data(task)
        strategy.before_task(data)
        batch = Batch(to_floats(data.x[:8], data.inputs), data.y[:8], data.task_ids[:8], task.id)
        loss = strategy.train_step(batch)
        ok = isinstance(loss, torch.Tensor) and loss.shape == () and not loss.requires_grad
        _require(ok, where, "train_step must return the loss as a detached 0-d tensor")
        strategy.after_task(data)
    logits = strategy.predict(batch.x, batch.task_ids)
    shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
    _require(
        shape == (8, stream.n_outputs),
        where,
        f"predict returned {shape}, not logits [B, n_outputs] = (8, {stream.n_outputs})",
    )


def _require(ok: bool, where: str, what: str) -> None:
    if not ok:
        raise ConformanceError(f"{where}: {what}")
