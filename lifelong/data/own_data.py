"""Bring your own data: arrays, a torch Dataset or a folder of images as lifelong's tensors.

:func:`from_arrays` (and ``from_torch``, ``from_folder`` in :mod:`lifelong.data.own_sources`)
check what they are given (shapes, dtypes, label ranges; one line per problem, all at once)
and return
:class:`OwnData`: uint8 inputs and int64 labels split into train and test, optionally with
a task id per sample or a transform per task. The ``own-data`` scenario
(:mod:`lifelong.data.own_scenario`) turns it into a stream.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lifelong.errors import UserError

__all__ = ["OwnData", "Part", "checked", "from_arrays", "held_out"]

Transform = Callable[[torch.Tensor], torch.Tensor]
SPLIT_SEED = 5000  # fixed: a held-out split must not depend on any run's seed


@dataclass(frozen=True, eq=False)
class OwnData:
    """A user's data in lifelong's form (checked; build it with ``from_*``).

    Attributes:
        name: a short label for messages and the saved config.
        x_train: uint8 ``[N, *shape]`` inputs (floats in [0, 1] were stored as round(x*255)).
        y_train: int64 ``[N]`` labels >= 0.
        x_test: uint8 ``[M, *shape]``; y_test: int64 ``[M]``.
        task_train, task_test: int64 task id per sample, or None (tasks come from classes).
        transforms: one function per task for a domain-incremental stream, each mapping
            float ``[B, *shape]`` in [0, 1] to the same shape and range.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    task_train: torch.Tensor | None = None
    task_test: torch.Tensor | None = None
    transforms: tuple[Transform, ...] = ()
    fingerprint: str = field(default="", init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha256()
        tensors = (self.x_train, self.y_train, self.x_test, self.y_test)
        for t in (*tensors, self.task_train, self.task_test):
            if t is not None:
                digest.update(repr((t.dtype, tuple(t.shape))).encode())
                digest.update(t.contiguous().numpy().tobytes())
        for fn in self.transforms:
            digest.update(getattr(fn, "__qualname__", repr(fn)).encode())
        object.__setattr__(self, "fingerprint", digest.hexdigest()[:12])

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one input (e.g. ``(28, 28)`` or ``(3, 32, 32)``)."""
        return tuple(self.x_train.shape[1:])

    @property
    def labels(self) -> list[int]:
        """The distinct labels of the training set, ascending."""
        return sorted(set(self.y_train.tolist()))


def from_arrays(
    x: Any,
    y: Any,
    *,
    x_test: Any = None,
    y_test: Any = None,
    task_ids: Any = None,
    test_task_ids: Any = None,
    transforms: Sequence[Transform] = (),
    test_fraction: float = 0.2,
    name: str = "arrays",
) -> OwnData:
    """Data from tensors or NumPy arrays.

    Args:
        x: ``[N, ...]`` inputs: uint8 (or whole numbers 0..255), or floats in [0, 1].
        y: ``[N]`` whole-number labels >= 0 (any values; tasks group them).
        x_test, y_test: a test split; without it ``test_fraction`` of each class is held
            out (the same samples for every seed).
        task_ids, test_task_ids: ``[N]`` / ``[M]`` task of each sample (domain- or
            task-incremental streams whose tasks you have already split).
        transforms: one function per task (domain-incremental: task t sees every sample
            through ``transforms[t]``); float ``[B, ...]`` in [0, 1] to the same.
        name: how messages and the saved config call this data.

    Raises:
        UserError: one line per problem found (shapes, dtypes, label ranges, ...).
    """
    problems: list[str] = []
    xs = _tensor(x, "x", problems)
    ys = _tensor(y, "y", problems)
    ts = None if task_ids is None else _tensor(task_ids, "task_ids", problems)
    test = (x_test is None, y_test is None)
    if test[0] != test[1]:
        problems.append("give both x_test and y_test, or neither")
    if (test_task_ids is None) != (task_ids is None or x_test is None):
        problems.append("give test_task_ids exactly when both task_ids and x_test are given")
    if not 0 < test_fraction < 1:
        problems.append(f"test_fraction={test_fraction} must lie between 0 and 1")
    _raise(name, problems)
    if x_test is None:
        return held_out(name, xs, ys, ts, tuple(transforms), test_fraction)
    xt = _tensor(x_test, "x_test", problems)
    yt = _tensor(y_test, "y_test", problems)
    tt = None if test_task_ids is None else _tensor(test_task_ids, "test_task_ids", problems)
    _raise(name, problems)
    return checked(name, (xs, ys, ts), (xt, yt, tt), tuple(transforms))


Part = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]


def checked(name: str, train: Part, test: Part, transforms: tuple[Transform, ...]) -> OwnData:
    """:class:`OwnData` from raw tensors, after every check (one line per problem)."""
    problems: list[str] = []
    x_train = _inputs(train[0], "x", problems)
    x_test = _inputs(test[0], "x_test", problems)
    y_train = _labels(train[1], "y", len(train[0]), problems)
    y_test = _labels(test[1], "y_test", len(test[0]), problems)
    t_train = None if train[2] is None else _labels(train[2], "task_ids", len(train[0]), problems)
    t_test = None if test[2] is None else _labels(test[2], "test_task_ids", len(test[0]), problems)
    shapes = tuple(train[0].shape[1:]), tuple(test[0].shape[1:])
    if train[0].ndim >= 2 and test[0].ndim >= 2 and shapes[0] != shapes[1]:
        problems.append(
            f"train inputs are {shapes[0]} but test inputs {shapes[1]}; give both splits "
            "inputs of one shape"
        )
    if y_train is not None and y_test is not None:
        unseen = sorted(set(y_test.tolist()) - set(y_train.tolist()))
        if unseen:
            problems.append(f"test labels {unseen[:5]} never occur in training; drop them")
    if transforms and train[2] is not None:
        problems.append("give task_ids or transforms, not both (each defines the tasks)")
    if any(not callable(fn) for fn in transforms):
        problems.append("every transform must be a function of a float [B, ...] tensor")
    _raise(name, problems)
    assert x_train is not None and x_test is not None  # _raise returned: no problem
    assert y_train is not None and y_test is not None
    return OwnData(name, x_train, y_train, x_test, y_test, t_train, t_test, transforms)


def _raise(name: str, problems: list[str]) -> None:
    if problems:
        raise UserError("\n".join(f"dataset {name}: {p}" for p in problems))


def _tensor(value: Any, what: str, problems: list[str]) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    try:
        array = np.asarray(value)
        if array.dtype == object:
            raise TypeError
        return torch.from_numpy(array.copy())
    except (TypeError, ValueError):
        problems.append(
            f"{what} is a {type(value).__name__}, not an array; give a NumPy array or "
            "a tensor of numbers"
        )
        return torch.zeros(0)


def _inputs(x: torch.Tensor, what: str, problems: list[str]) -> torch.Tensor | None:
    """uint8 inputs, or None with a problem recorded."""
    if x.ndim < 2 or len(x) == 0:
        problems.append(f"{what} has shape {tuple(x.shape)}; give [N, ...] with N >= 1 samples")
        return None
    if x.dtype == torch.uint8:
        return x
    if x.is_floating_point():
        bad = ~torch.isfinite(x)
        if bad.any():
            problems.append(f"{what} holds {int(bad.sum())} NaN or infinite values; remove them")
            return None
        low, high = float(x.min()), float(x.max())
        if low < 0 or high > 1:
            problems.append(
                f"{what} (float) spans [{low:.4g}, {high:.4g}]; scale it to [0, 1] "
                "(e.g. x / 255 for 8-bit images)"
            )
            return None
        return (x.double() * 255).round().to(torch.uint8)
    if x.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint16):
        low, high = int(x.min()), int(x.max())
        if low < 0 or high > 255:
            problems.append(
                f"{what} (whole numbers) spans [{low}, {high}]; 8-bit values 0..255 "
                "or floats in [0, 1] are expected"
            )
            return None
        return x.to(torch.uint8)
    problems.append(f"{what} has dtype {x.dtype}; give uint8 or floats in [0, 1]")
    return None


def _labels(y: torch.Tensor, what: str, n: int, problems: list[str]) -> torch.Tensor | None:
    """int64 labels ``[n]`` >= 0, or None with a problem recorded."""
    if y.ndim != 1 or len(y) != n:
        problems.append(f"{what} has shape {tuple(y.shape)}; give one label per sample: [{n}]")
        return None
    if y.is_floating_point() and bool((y != y.round()).any()):
        problems.append(f"{what} holds fractions ({y.dtype}); labels must be whole numbers")
        return None
    if not (
        y.is_floating_point()
        or y.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
    ):
        problems.append(f"{what} has dtype {y.dtype}; labels must be whole numbers")
        return None
    y = y.long()
    if len(y) and int(y.min()) < 0:
        problems.append(f"{what} spans [{int(y.min())}, {int(y.max())}]; labels must be >= 0")
        return None
    return y


def held_out(
    name: str,
    x: torch.Tensor,
    y: torch.Tensor,
    t: torch.Tensor | None,
    transforms: tuple[Transform, ...],
    fraction: float,
) -> OwnData:
    """Hold out ``fraction`` of each class (and task) as the test set, the same every time."""
    problems: list[str] = []
    labels = _labels(y, "y", len(x), problems)
    tasks = None if t is None else _labels(t, "task_ids", len(x), problems)
    _raise(name, problems)  # the split needs good labels; the rest is checked after it
    assert labels is not None
    y, t = labels, tasks
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    groups = y if t is None else y * (int(t.max()) + 1 if len(t) else 1) + t
    test = []
    for value in groups.unique():
        members = (groups == value).nonzero().squeeze(1)
        members = members[torch.randperm(len(members), generator=generator)]
        test.append(
            members[: max(1, round(fraction * len(members)))] if len(members) > 1 else members[:0]
        )
    is_test = torch.zeros(len(y), dtype=torch.bool)
    is_test[torch.cat(test)] = True
    train_rows, test_rows = (~is_test).nonzero().squeeze(1), is_test.nonzero().squeeze(1)
    tt = None if t is None else t[test_rows]
    ts = None if t is None else t[train_rows]
    return checked(
        name, (x[train_rows], y[train_rows], ts), (x[test_rows], y[test_rows], tt), transforms
    )
