"""The ``own-data`` scenario: a stream from a user's data (:mod:`lifelong.data.own_data`).

From the CLI the data come from a factory, ``--set dataset=path/to/file.py:make_dataset``
(or ``module:function``), called once per process with no arguments; from Python,
:func:`scenario_from` takes :class:`OwnData` directly.
"""

from __future__ import annotations

import functools
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, cast

import torch

from lifelong.contracts.params import build, param
from lifelong.contracts.scenario import ScenarioFamily, subsample
from lifelong.contracts.stream import SETTINGS, Setting, Stream, Task
from lifelong.data.own_data import OwnData, from_arrays
from lifelong.data.own_sources import from_torch
from lifelong.errors import UserError

__all__ = ["OwnDataScenario", "load_own_data", "scenario_from"]

MEMORY_PREFIX = "memory:"
_IN_MEMORY: dict[str, OwnData] = {}


@dataclass
class OwnDataScenario(ScenarioFamily):
    """Your own data as a stream: classes split by increment or order, or your own tasks.

    Tasks come from, in this order: the data's transforms (one task each: every sample
    through it), its task ids (one task per id, ascending), else ``class_order`` cut
    into tasks of ``increment`` classes (the last takes what is left). ``setting`` maps
    labels: ``class`` to one head over every class, ``domain`` to the within-task
    position, ``task`` to one head per task with the task id given.

    References: van de Ven et al. 2019 ("Three scenarios for continual learning").
    """

    name: ClassVar[str] = "own-data"
    dataset: str = param("", "path/to/file.py:function (or module:function) returning your data")
    setting: str = param("class", "class, domain or task incremental", choices=SETTINGS)
    increment: int = param(2, "classes per task when tasks come from classes", ge=1)
    class_order: tuple[int, ...] | None = param(
        None, "labels in task order, e.g. 3,1,2,0 (none: ascending; labels left out are dropped)"
    )
    samples_per_task: int | None = param(
        None, "training samples per task (none: all available)", ge=1
    )

    def build(self, seed: int, data_dir: str | None = None) -> Stream:
        data = load_own_data(self.dataset)
        order = self._order(data)
        groups = _task_groups(data, order, self.increment)
        setting = cast(Setting, self.setting)
        generator = torch.Generator().manual_seed(seed)
        tasks = []
        for t, (classes, train_rows, test_rows, transform) in enumerate(groups):
            keep = subsample(len(train_rows), self.samples_per_task, generator, what=f"task {t}")
            x = (data.x_train[train_rows[keep]], data.x_test[test_rows])
            if transform is not None:
                x = (_apply(transform, x[0], data, t), _apply(transform, x[1], data, t))
            y = (data.y_train[train_rows[keep]], data.y_test[test_rows])
            offset = t * len(order) if transform is not None else 0
            if not len(y[0]) or not len(y[1]):
                split = "training" if not len(y[0]) else "test"
                raise UserError(f"own-data: task {t} ({classes}) has no {split} samples")
            targets = _targets(setting, classes, order, offset)
            tasks.append(_task(t, classes, x, y, targets))
        n_outputs = _n_outputs(setting, tasks, len(order), transformed=bool(data.transforms))
        n_heads = len(tasks) if setting == "task" else 1
        input_dim = int(torch.tensor(data.shape).prod())
        return Stream(
            self.name, setting, tuple(tasks), n_outputs, n_heads, input_dim, tuple(data.shape)
        )

    def _order(self, data: OwnData) -> list[int]:
        labels = data.labels
        if self.class_order is None:
            return labels
        order = list(self.class_order)
        problems = []
        if len(set(order)) != len(order):
            problems.append(f"class_order {order} names a label twice")
        missing = sorted(set(order) - set(labels))
        if missing:
            problems.append(f"class_order names labels {missing} the data do not have ({labels})")
        if problems:
            raise UserError("\n".join(f"own-data: {p}" for p in problems))
        return order


def scenario_from(
    data: OwnData,
    *,
    setting: str = "class",
    increment: int = 2,
    class_order: tuple[int, ...] | list[int] | None = None,
    samples_per_task: int | None = None,
) -> OwnDataScenario:
    """The ``own-data`` scenario for ``data`` held in this process (for ``lifelong.run``).

    The scenario's ``dataset`` reads ``memory:NAME-FINGERPRINT`` (a hash of the data), so
    the saved config and run keys tell different data apart. Runs on other processes
    (``--jobs``, Ray) need a factory file instead.
    """
    if not isinstance(data, OwnData):
        raise UserError(
            f"scenario_from takes lifelong data, not a {type(data).__name__}; build it with "
            "lifelong.from_arrays, from_torch or from_folder"
        )
    key = f"{MEMORY_PREFIX}{data.name}-{data.fingerprint}"
    _IN_MEMORY[key] = data
    order = None if class_order is None else tuple(class_order)
    values: dict[str, Any] = {"dataset": key, "setting": setting, "increment": increment}
    values |= {"class_order": order, "samples_per_task": samples_per_task}
    scenario = build(OwnDataScenario, values, owner="own-data")
    return cast(OwnDataScenario, scenario)


def load_own_data(spec: str) -> OwnData:
    """The data ``spec`` names: ``memory:...`` (this process), ``file.py:fn`` or ``module:fn``."""
    if spec.startswith(MEMORY_PREFIX):
        if spec not in _IN_MEMORY:
            raise UserError(
                f"own-data: dataset {spec} was built in another process; for parallel runs "
                "give a factory, dataset=path/to/file.py:make_dataset"
            )
        return _IN_MEMORY[spec]
    where, sep, function = spec.rpartition(":")
    if not spec or not sep or not where or not function:
        raise UserError(
            f"own-data: dataset={spec!r} is not path/to/file.py:function or module:function; "
            "e.g. --set dataset=my_data.py:make_dataset"
        )
    if where.endswith(".py"):
        path = Path(where).resolve()
        if not path.is_file():
            raise UserError(f"own-data: dataset file {where} does not exist")
        return _call_factory(spec, str(path), function, path.stat().st_mtime_ns)
    return _call_factory(spec, where, function, 0)


@functools.cache
def _call_factory(spec: str, where: str, function: str, mtime_ns: int) -> OwnData:
    """Import the factory and call it, once per process and file version."""
    from lifelong.composition.registry import _import_file, _import_module

    module = _import_file(where) if where.endswith(".py") else _import_module(where)
    factory = getattr(module, function, None)
    if not callable(factory):
        raise UserError(f"own-data: {where} defines no function '{function}'")
    try:
        made = factory()
    except UserError as error:  # a check of from_arrays & co. inside the factory
        raise UserError(f"own-data: {spec}: {error}") from None
    except Exception as error:  # the user's own bug: name its file and line
        frames = traceback.extract_tb(error.__traceback__)
        at = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
        raise UserError(f"own-data: {spec} raised {type(error).__name__}: {error}{at}") from None
    return _as_data(made, spec)


def _as_data(made: Any, spec: str) -> OwnData:
    if isinstance(made, OwnData):
        return made
    if isinstance(made, tuple) and len(made) in (2, 4):
        names = ("x", "y", "x_test", "y_test")
        kwargs = dict(zip(names[2:], made[2:], strict=False))
        return from_arrays(made[0], made[1], **kwargs, name=spec)
    if isinstance(made, torch.utils.data.Dataset):
        return from_torch(made, name=spec)
    raise UserError(
        f"own-data: {spec} returned a {type(made).__name__}; return lifelong.from_arrays(x, y) "
        "(or from_torch / from_folder), an (x, y) or (x, y, x_test, y_test) tuple, or a "
        "torch Dataset"
    )


Group = tuple[tuple[int, ...], torch.Tensor, torch.Tensor, Any]


def _task_groups(data: OwnData, order: list[int], increment: int) -> list[Group]:
    """Per task: its classes (in ``order``), train rows, test rows and its transform."""
    keep_train = torch.isin(data.y_train, torch.tensor(order))
    keep_test = torch.isin(data.y_test, torch.tensor(order))
    if data.transforms:
        rows = (keep_train.nonzero().squeeze(1), keep_test.nonzero().squeeze(1))
        return [(tuple(order), *rows, fn) for fn in data.transforms]
    if data.task_train is not None and data.task_test is not None:
        groups = []
        for task in sorted(set(data.task_train.tolist())):
            train = (keep_train & (data.task_train == task)).nonzero().squeeze(1)
            test = (keep_test & (data.task_test == task)).nonzero().squeeze(1)
            present = set(data.y_train[train].tolist())
            groups.append((tuple(c for c in order if c in present), train, test, None))
        return groups
    groups = []
    for start in range(0, len(order), increment):
        classes = tuple(order[start : start + increment])
        chosen = torch.tensor(classes)
        train = torch.isin(data.y_train, chosen).nonzero().squeeze(1)
        test = torch.isin(data.y_test, chosen).nonzero().squeeze(1)
        groups.append((classes, train, test, None))
    return groups


def _targets(
    setting: Setting, classes: tuple[int, ...], order: list[int], offset: int
) -> tuple[int, ...]:
    if setting == "class":
        return tuple(offset + order.index(c) for c in classes)
    return tuple(range(len(classes)))


def _task(
    t: int,
    classes: tuple[int, ...],
    x: tuple[torch.Tensor, torch.Tensor],
    y: tuple[torch.Tensor, torch.Tensor],
    targets: tuple[int, ...],
) -> Task:
    lookup = torch.full((max(classes, default=0) + 1,), -1, dtype=torch.long)
    lookup[list(classes)] = torch.tensor(targets, dtype=torch.long)
    name = "/".join(map(str, classes)) if len(classes) <= 4 else f"task {t}"
    return Task(
        t, name, x[0].flatten(1), lookup[y[0]], x[1].flatten(1), lookup[y[1]], classes, targets
    )


def _n_outputs(setting: Setting, tasks: list[Task], n_classes: int, *, transformed: bool) -> int:
    if setting == "class":
        return n_classes * (len(tasks) if transformed else 1)
    return max(len(task.classes) for task in tasks)


def _apply(transform: Any, x: torch.Tensor, data: OwnData, t: int) -> torch.Tensor:
    """``transform`` on uint8 inputs, through floats in [0, 1], back to uint8."""
    try:
        out = transform(x.float() / 255)
    except Exception as error:  # the user's transform: say which, not a traceback
        raise UserError(
            f"dataset {data.name}: transform {t} raised {type(error).__name__}: {error}"
        ) from None
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(
            f"dataset {data.name}: transform {t} returned {got}; return a tensor of the "
            f"input's shape {tuple(x.shape)}"
        )
    return (out.clamp(0, 1) * 255).round().to(torch.uint8)
