"""The contract of a scenario family and the label mapping every family shares."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import torch

from lifelong.contracts.params import param
from lifelong.contracts.stream import SETTINGS, Setting, Stream, Task
from lifelong.data.images import ImageDataset
from lifelong.data.inputs import InputTransform
from lifelong.data.mnist import DATASETS, Dataset, load_dataset
from lifelong.errors import UserError

__all__ = [
    "ClassSplitImages",
    "DrawnTransform",
    "ImageScenario",
    "ScenarioFamily",
    "Transform",
    "make_task",
    "subsample",
    "transformed_footprint",
    "transformed_stream",
]

Transform = Callable[[torch.Tensor], torch.Tensor]
"""An image transform of a task: uint8 ``[N, 28, 28]`` to uint8 ``[N, 28, 28]``, on any device."""


@dataclass
class ScenarioFamily(abc.ABC):
    """A family of streams (split, permuted, rotated, ...) with typed parameters.

    Concrete families are dataclasses whose fields are made with :func:`lifelong.param`
    and which set ``name``; ``build`` turns the parameters and a seed into a stream,
    deterministically, and raises :class:`UserError` for impossible settings before any
    training starts.
    """

    name: ClassVar[str]

    @abc.abstractmethod
    def build(self, seed: int, data_dir: str | None = None) -> Stream:
        """Build the stream for ``seed`` (CPU tensors)."""

    def footprint(self, data_dir: str | None = None) -> int:
        """At least how many bytes the built stream holds (0: not known), so that a stream
        larger than the machine's memory is refused before it is built."""
        return 0


@dataclass
class ImageScenario(ScenarioFamily):
    """Parameters shared by the families built from an image classification source."""

    dataset: str = param("mnist5k", "data source", choices=DATASETS)
    setting: str = param("domain", "class, domain or task incremental", choices=SETTINGS)
    n_tasks: int = param(10, "number of tasks in the stream", ge=1)
    samples_per_task: int | None = param(
        None, "training samples per task (none: all available)", ge=1
    )

    meta_source: ClassVar[str] = "permuted"
    """The meta-training source that ``source=auto`` of a meta-learned init picks for this
    family (:mod:`lifelong.meta.meta_tasks`): a transform kind (``permuted``, ``rotated``) or
    ``held-out`` (another dataset's images, for families whose tasks are class subsets)."""

    transform_kind: ClassVar[str | None] = None
    """The kind of image transform this family's tasks are made of (``permuted``,
    ``rotated``), or None. A family that declares one implements :meth:`draw_transform`,
    and the kind becomes a meta-training source that draws new transforms of it."""

    def __post_init__(self) -> None:
        if ":" in self.dataset:  # a factory of one's own data: the own-data scenario's
            raise UserError(
                f"{self.name}: dataset={self.dataset} names your own data; run it as the "
                f"own-data scenario: lifelong run own-data --set dataset={self.dataset}"
            )

    def load(self, data_dir: str | None) -> Dataset:
        """The data source, loaded once per process."""
        return load_dataset(self.dataset, data_dir)

    @classmethod
    def draw_transform(
        cls, generator: torch.Generator, stream: ImageScenario, seed: int
    ) -> DrawnTransform:
        """A new transform of this family's kind for a meta-training task, drawn from
        ``generator`` and disjoint from the transforms of ``stream``'s tasks under ``seed``
        (its own tasks when ``stream`` is of this family, else the identity).

        Only families that declare :attr:`transform_kind` implement it.
        """
        raise NotImplementedError(f"{cls.name} declares no transform_kind")


class ClassSplitImages(ScenarioFamily):
    """A family whose tasks partition the classes of a colour image dataset (split-cifar10
    and kin). It declares what a meta-learned init needs to draw a pool of classes
    disjoint from the stream (:mod:`lifelong.meta.meta_tasks`): the dataset, the classes
    of each task, and the stream's input transform."""

    dataset: ClassVar[str]
    """One of :data:`lifelong.data.images.IMAGE_DATASETS`."""

    @abc.abstractmethod
    def load(self, data_dir: str | None) -> ImageDataset:
        """The dataset, loaded once per process."""

    @abc.abstractmethod
    def class_groups(self, data: ImageDataset) -> list[tuple[int, ...]]:
        """The dataset labels of every task, in training order."""

    @abc.abstractmethod
    def inputs(self, data: ImageDataset) -> InputTransform:
        """The float conversion of the stream's uint8 images (normalisation, augmentation)."""


@dataclass(frozen=True)
class DrawnTransform:
    """A transform drawn for a meta-training task, and what was drawn.

    Attributes:
        apply: the transform.
        drawn: its kind and parameters, JSON-ready (a cache key holds them), for example
            ``{"kind": "rotated", "angle": 201.5}``.
    """

    apply: Transform
    drawn: dict[str, Any]


def subsample(
    n_available: int, n_wanted: int | None, generator: torch.Generator, *, what: str
) -> torch.Tensor:
    """Indices of ``n_wanted`` samples drawn without replacement (all, in order, if None)."""
    if n_wanted is None:
        return torch.arange(n_available)
    if n_wanted > n_available:
        raise UserError(
            f"{what}: samples_per_task={n_wanted} but only {n_available} samples are "
            f"available; use samples_per_task <= {n_available}"
        )
    return torch.randperm(n_available, generator=generator)[:n_wanted].sort().values


def make_task(
    task_id: int,
    name: str,
    images: tuple[torch.Tensor, torch.Tensor],
    labels: tuple[torch.Tensor, torch.Tensor],
    classes: tuple[int, ...],
    class_offset: int,
    setting: Setting,
    inputs: InputTransform | None = None,
) -> Task:
    """Assemble a task and map its labels to model targets for the setting.

    Args:
        images: train and test images, uint8 ``[N, D]`` and ``[M, D]``.
        labels: train and test dataset labels, int64 ``[N]`` and ``[M]``.
        classes: dataset labels of this task, in the order that defines within-task indices.
        class_offset: first global class id of this task (class-incremental targets are
            ``class_offset + position`` for families whose tasks reuse the same labels).
        setting: ``"class"`` gives global class ids; ``"domain"`` and ``"task"`` give the
            position of the label within ``classes``.
        inputs: how the task's uint8 inputs become floats (None: ``x / 255``).
    """
    lookup = torch.full((int(max(classes)) + 1,), -1, dtype=torch.long)
    lookup[list(classes)] = torch.arange(len(classes))
    if setting == "class":
        lookup = torch.where(lookup >= 0, lookup + class_offset, lookup)
    targets = tuple(int(lookup[c]) for c in classes)
    return Task(
        id=task_id,
        name=name,
        x_train=images[0],
        y_train=lookup[labels[0]],
        x_test=images[1],
        y_test=lookup[labels[1]],
        classes=classes,
        targets=targets,
        inputs=inputs,
    )


def transformed_stream(
    scenario: ImageScenario,
    seed: int,
    data_dir: str | None,
    transforms: list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]],
) -> Stream:
    """A stream whose task t is the whole dataset passed through ``transforms[t]``.

    Each task draws its own ``samples_per_task`` training samples; its test set is the
    whole test split under the same transform. Used by the permuted and rotated families.

    Args:
        transforms: one ``(task name, fn)`` per task; ``fn`` maps uint8 ``[N, 28, 28]``
            images to uint8 ``[N, 28, 28]``.
    """
    data = scenario.load(data_dir)
    generator = torch.Generator().manual_seed(seed + 1)
    classes = tuple(range(data.n_classes))
    setting = cast(Setting, scenario.setting)
    tasks = []
    for t, (name, transform) in enumerate(transforms):
        what = f"{scenario.name} task {t}"
        keep = subsample(len(data.y_train), scenario.samples_per_task, generator, what=what)
        images = (
            transform(data.x_train[keep]).flatten(1),
            transform(data.x_test).flatten(1),
        )
        labels = (data.y_train[keep], data.y_test)
        offset = t * data.n_classes
        tasks.append(make_task(t, name, images, labels, classes, offset, setting))
    n_outputs = data.n_classes * (len(tasks) if setting == "class" else 1)
    n_heads = len(tasks) if setting == "task" else 1
    return Stream(scenario.name, setting, tuple(tasks), n_outputs, n_heads, 784, (1, 28, 28))


def transformed_footprint(scenario: ImageScenario, data_dir: str | None) -> int:
    """The bytes of a :func:`transformed_stream`'s images: every task holds its training
    samples and the whole test split."""
    data = scenario.load(data_dir)
    train = min(scenario.samples_per_task or len(data.y_train), len(data.y_train))
    return scenario.n_tasks * (train + len(data.y_test)) * data.x_train[0].numel()
