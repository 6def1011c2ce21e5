"""Avalanche benchmarks as lifelong streams, and lifelong streams as Avalanche benchmarks.

Avalanche (avalanche-lib 0.6.0) is optional: this module imports it only inside the
functions that need it, so importing lifelong never pays for it.

References: Lomonaco et al. 2021, "Avalanche: an End-to-End Library for Continual Learning".
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, cast

import numpy as np
import torch

from lifelong.contracts.params import param
from lifelong.contracts.scenario import ScenarioFamily, make_task
from lifelong.contracts.stream import SETTINGS, Setting, Stream, Task
from lifelong.errors import UserError, closest

__all__ = [
    "AvalancheScenario",
    "avalanche_dataset",
    "benchmark_from_factory",
    "benchmark_from_stream",
    "require_avalanche",
    "stream_from_avalanche",
]

INSTALL_HINT = "pip install 'lifelong[avalanche]' (torch 2.14.1 + torchvision)"
_ROUNDING_TOLERANCE = 1e-3  # float32 k/255 * 255 is within 2e-5 of k


def require_avalanche(what: str) -> None:
    """Import avalanche-lib or raise a one-line :class:`UserError` naming ``what`` needs it."""
    try:
        importlib.import_module("avalanche")
    except ImportError:
        raise UserError(f"{what} needs the optional extra: {INSTALL_HINT}") from None


def stream_from_avalanche(
    benchmark: Any, *, setting: str | None = None, name: str = "avalanche"
) -> Stream:
    """A lifelong stream holding the data of an Avalanche classification benchmark.

    Experience ``i`` of ``benchmark.train_stream`` and of ``benchmark.test_stream`` become
    task ``i``, samples in Avalanche's order, read through the datasets' *eval* transforms
    (no augmentation) and flattened. Inputs must be 8-bit images: uint8 tensors, PIL
    images, or floats equal to ``k / 255`` (what ``ToTensor`` gives), which are turned back
    into the exact uint8 values; anything else (a ``Normalize`` among the transforms,
    continuous features) raises :class:`UserError`, since lifelong stores uint8 images.

    Args:
        benchmark: anything with ``train_stream`` and ``test_stream`` of experiences whose
            ``dataset`` items are ``(x, y)`` or ``(x, y, task_label)``.
        setting: ``None`` infers it: ``"task"`` when the experiences carry different task
            labels (one head per task, the task id given), else ``"domain"`` when every
            experience holds the same classes, else ``"class"``. ``"class"`` keeps
            Avalanche's targets; ``"domain"`` and ``"task"`` map each experience's classes,
            sorted, to 0..k-1. Forcing ``"task"`` on a benchmark without task labels uses
            the experience index as task id, as Avalanche's ``task_incremental_benchmark``.
        name: the stream's name.

    Returns:
        The :class:`Stream`; task names are the classes (``"0/1"``) when the experiences'
        classes are disjoint and few, else ``"exp i"``.
    """
    if setting is not None and setting not in SETTINGS:
        raise UserError(
            f"setting={setting!r} is not one of {', '.join(SETTINGS)}{closest(setting, SETTINGS)}"
        )
    pairs = _experience_pairs(benchmark)
    parts = [
        (_read(tr, f"train experience {i}"), _read(te, f"test experience {i}"))
        for i, (tr, te) in enumerate(pairs)
    ]
    dims = {part.x.shape[1] for pair in parts for part in pair}
    if len(dims) != 1:
        raise UserError(
            f"the benchmark's inputs have different sizes {sorted(dims)} once "
            "flattened; lifelong needs one input size for the whole stream"
        )
    classes = [tuple(sorted(set(tr.y.tolist()) | set(te.y.tolist()))) for tr, te in parts]
    labels = [_task_labels(tr, te) for tr, te in parts]
    has_task_labels = len(set().union(*labels)) > 1
    chosen = cast(Setting, setting or _infer_setting(has_task_labels, classes))
    if chosen == "task" and has_task_labels:
        _check_task_labels(labels)
    names = _task_names(classes)
    tasks = tuple(
        _task(i, names[i], tr, te, classes[i], chosen) for i, (tr, te) in enumerate(parts)
    )
    if chosen == "class":
        n_outputs = max(max(c) for c in classes) + 1
    else:
        n_outputs = max(len(c) for c in classes)
    n_heads = len(tasks) if chosen == "task" else 1
    return Stream(name, chosen, tasks, n_outputs, n_heads, dims.pop())


def benchmark_from_stream(stream: Stream) -> Any:
    """An Avalanche benchmark holding the data of a lifelong stream.

    Inputs are float ``[N, D]`` in [0, 1] (uint8 / 255, lifelong's model scale), targets
    are the stream's model targets, task labels are the task ids when the stream uses
    them and 0 otherwise (Avalanche's class-incremental convention). Experiences carry
    ``task_labels`` and the classes timeline, like Avalanche's own benchmarks.
    """
    require_avalanche("benchmark_from_stream")
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.scenarios.supervised import with_classes_timeline
    from avalanche.benchmarks.scenarios.task_aware import with_task_labels

    def label(task: Task) -> int:
        return task.id if stream.uses_task_id else 0

    train = [avalanche_dataset(t.x_train, t.y_train, label(t)) for t in stream.tasks]
    test = [avalanche_dataset(t.x_test, t.y_test, label(t)) for t in stream.tasks]
    return with_classes_timeline(with_task_labels(benchmark_from_datasets(train=train, test=test)))


def avalanche_dataset(x: torch.Tensor, y: torch.Tensor, task_label: int) -> Any:
    """An Avalanche task-aware tensor dataset of uint8 ``x [N, D]`` (scaled to [0, 1]), ``y``."""
    from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset

    inputs = x.detach().cpu().float().div_(255)
    return _make_taskaware_tensor_classification_dataset(
        inputs, y.detach().cpu(), task_labels=task_label
    )


def benchmark_from_factory(
    name: str,
    kwargs: Mapping[str, Any],
    *,
    data_dir: str | None = None,
    seed: int | None = None,
) -> Any:
    """Build a benchmark with a factory of ``avalanche.benchmarks.classic`` (``"SplitMNIST"``).

    Unless ``kwargs`` say otherwise, ``train_transform`` and ``eval_transform`` are set to
    None (the classic defaults normalise, which :func:`stream_from_avalanche` refuses),
    ``dataset_root`` to ``data_dir`` and ``seed`` to ``seed``, where the factory takes them.

    Raises:
        UserError: avalanche-lib missing, an unknown factory or argument, or data that
            cannot be loaded (no download possible and no files under ``dataset_root``).
    """
    require_avalanche(f"Avalanche benchmark '{name}'")
    classic = importlib.import_module("avalanche.benchmarks.classic")
    factories = {
        n: f
        for n, f in vars(classic).items()
        if n[:1].isupper() and inspect.isfunction(f) and f.__module__.startswith(classic.__name__)
    }
    if name not in factories:
        same = [n for n in factories if n.lower() == name.lower()]
        hint = f" (did you mean '{same[0]}'?)" if same else closest(name, factories)
        raise UserError(
            f"unknown Avalanche benchmark '{name}'{hint}; known: {', '.join(sorted(factories))}"
        )
    factory = factories[name]
    accepted = inspect.signature(factory).parameters
    given = dict(kwargs)
    for key in ("train_transform", "eval_transform"):
        if key in accepted:
            given.setdefault(key, None)
    if data_dir is not None and "dataset_root" in accepted:
        given.setdefault("dataset_root", data_dir)
    if seed is not None and "seed" in accepted:
        given.setdefault("seed", seed)
    open_ended = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
    unknown = [key for key in given if key not in accepted and not open_ended]
    if unknown:
        raise UserError(
            f"{name} has no argument '{unknown[0]}'{closest(unknown[0], accepted)};"
            f" its arguments: {', '.join(accepted)}"
        )
    try:
        return factory(**given)
    except TypeError as error:  # a missing or ill-typed argument
        raise UserError(f"{name}(**{given!r}): {error}") from error
    except (OSError, RuntimeError) as error:  # no network and no files
        raise UserError(
            f"{name} could not load its data ({error}); put the files under "
            "dataset_root (--data-dir) or run where a network exists"
        ) from error


@dataclass
class AvalancheScenario(ScenarioFamily):
    """A benchmark of ``avalanche.benchmarks.classic`` (SplitMNIST, PermutedMNIST, ...).

    The factory's ``seed`` defaults to the run's seed, ``dataset_root`` to ``--data-dir``
    and its transforms to none (see :func:`benchmark_from_factory`).

    References: Lomonaco et al. 2021 (Avalanche).
    """

    name: ClassVar[str] = "avalanche"
    benchmark: str = param("SplitMNIST", "factory name in avalanche.benchmarks.classic")
    args: str = param("{}", 'its keyword arguments as a JSON object, e.g. {"n_experiences": 5}')
    setting: str | None = param(
        None,
        "class, domain or task (none: task when it has task labels)",
        choices=(None, *SETTINGS),
    )

    def __post_init__(self) -> None:
        _json_object(self.args)

    def build(self, seed: int, data_dir: str | None = None) -> Stream:
        kwargs = _json_object(self.args)
        benchmark = benchmark_from_factory(self.benchmark, kwargs, data_dir=data_dir, seed=seed)
        return stream_from_avalanche(
            benchmark, setting=self.setting, name=f"avalanche:{self.benchmark}"
        )


class _Part(NamedTuple):
    x: torch.Tensor  # uint8 [N, D]
    y: torch.Tensor  # int64 [N]
    t: torch.Tensor  # int64 [N] task labels (0 where the dataset has none)


def _experience_pairs(benchmark: Any) -> list[tuple[Any, Any]]:
    if not (hasattr(benchmark, "train_stream") and hasattr(benchmark, "test_stream")):
        raise UserError(
            f"{type(benchmark).__name__} is not an Avalanche benchmark: it needs "
            "train_stream and test_stream"
        )
    train, test = list(benchmark.train_stream), list(benchmark.test_stream)
    if not train or len(train) != len(test):
        raise UserError(
            f"the benchmark has {len(train)} train and {len(test)} test "
            "experiences; lifelong needs one test experience per train experience"
        )
    return list(zip(train, test, strict=True))


def _read(experience: Any, what: str) -> _Part:
    """All samples of an experience through its eval transforms, as tensors."""
    dataset = experience.dataset.eval()
    if len(dataset) == 0:
        raise UserError(f"{what} is empty; every task needs training and test samples")
    xs, ys, ts = [], [], []
    for i in range(len(dataset)):
        item = dataset[i]
        xs.append(_pixels(item[0]))
        ys.append(int(item[1]))
        ts.append(int(item[2]) if len(item) > 2 else 0)
    x = _as_uint8(torch.stack(xs).flatten(1), what)
    return _Part(x, torch.tensor(ys, dtype=torch.long), torch.tensor(ts, dtype=torch.long))


def _pixels(x: Any) -> torch.Tensor:
    """A tensor from a tensor, an array or a PIL image (channels first, as ToTensor)."""
    if isinstance(x, torch.Tensor):
        return x
    array = np.asarray(x)
    tensor = torch.from_numpy(array.copy())
    return tensor.permute(2, 0, 1) if not isinstance(x, np.ndarray) and array.ndim == 3 else tensor


def _as_uint8(x: torch.Tensor, what: str) -> torch.Tensor:
    """The exact uint8 images behind ``x``, or a UserError when ``x`` is not 8-bit images."""
    if x.dtype == torch.uint8:
        return x
    scaled = x.double() * 255 if x.is_floating_point() else x.double()
    rounded = scaled.round()
    low, high = float(scaled.min()), float(scaled.max())
    off = float((scaled - rounded).abs().max())
    if low < 0 or high > 255 or off > _ROUNDING_TOLERANCE or not x.is_floating_point():
        raise UserError(
            f"{what}: inputs ({x.dtype}, x*255 in [{low:.4g}, {high:.4g}], up to {off:.2g} off "
            "an integer) are not 8-bit images scaled to [0, 1]; lifelong stores uint8 images: "
            "build the benchmark without normalising transforms (train_transform=None, "
            "eval_transform=None, as benchmark_from_factory does)"
        )
    return rounded.to(torch.uint8)


def _task_labels(train: _Part, test: _Part) -> set[int]:
    return set(train.t.tolist()) | set(test.t.tolist())


def _infer_setting(has_task_labels: bool, classes: list[tuple[int, ...]]) -> str:
    if has_task_labels:
        return "task"
    if len(classes) > 1 and len(set(classes)) == 1:
        return "domain"
    return "class"


def _check_task_labels(labels: list[set[int]]) -> None:
    """lifelong gives each task its own head: one distinct task label per experience."""
    for i, found in enumerate(labels):
        if len(found) != 1:
            raise UserError(
                f"experience {i} mixes task labels {sorted(found)}; lifelong's "
                "task setting needs one task label per experience"
            )
    flat = [next(iter(found)) for found in labels]
    if len(set(flat)) != len(flat):
        raise UserError(
            f"task labels {flat} repeat across experiences; lifelong's task "
            "setting gives each experience its own head: use setting='class' "
            "or 'domain'"
        )


def _task_names(classes: list[tuple[int, ...]]) -> list[str]:
    disjoint = sum(len(c) for c in classes) == len(set().union(*classes))
    if disjoint and max(len(c) for c in classes) <= 4:
        return ["/".join(map(str, c)) for c in classes]
    return [f"exp {i}" for i in range(len(classes))]


def _task(
    i: int, name: str, train: _Part, test: _Part, classes: tuple[int, ...], setting: Setting
) -> Task:
    if setting == "class":  # Avalanche's targets as they are
        return Task(i, name, train.x, train.y, test.x, test.y, classes, classes)
    return make_task(i, name, (train.x, test.x), (train.y, test.y), classes, 0, setting)


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(
            f'args={text!r} is not JSON ({error.msg}); write e.g. {{"n_experiences": 5}}'
        ) from None
    if not isinstance(value, dict):
        raise UserError(f'args={text!r} must be a JSON object, e.g. {{"n_experiences": 5}}')
    return value
