"""A stream of tasks: the tensors every strategy and the evaluator see."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch

from lifelong.data.inputs import InputTransform
from lifelong.errors import UserError

__all__ = ["SETTINGS", "Setting", "Stream", "Task", "TrainingData", "training_data"]

Setting = Literal["class", "domain", "task"]
SETTINGS: tuple[str, ...] = ("class", "domain", "task")


@dataclass(frozen=True)
class Task:
    """One task of a stream: its own train and test tensors and how labels map.

    Attributes:
        id: position in the stream, 0-based.
        name: a short label for tables and plots (e.g. ``"0/1"``, ``"perm 3"``).
        x_train: uint8 ``[N, D]`` flattened images.
        y_train: int64 ``[N]`` targets as the model sees them (after the label mapping).
        x_test: uint8 ``[M, D]``.
        y_test: int64 ``[M]``.
        classes: the original dataset labels present in the task.
        targets: the model target each of ``classes`` maps to (same order).
        inputs: how the uint8 inputs become floats (normalisation, and augmentation of
            training batches); None: ``x / 255``.
        train_task_ids: int64 ``[N]``, the task each training sample came from, when a
            stream option moved samples between tasks (blurry, gradual, data-incremental);
            None: all are this task's.
    """

    id: int
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[int, ...]
    targets: tuple[int, ...]
    inputs: InputTransform | None = None
    train_task_ids: torch.Tensor | None = None

    def __post_init__(self) -> None:
        for split, y in (("training", self.y_train), ("test", self.y_test)):
            if len(y) == 0:  # it would train on nothing, or score 0 for ever
                raise UserError(
                    f"task {self.id} ({self.name}) has no {split} samples; give it some "
                    "(check the data and the scenario's settings)"
                )

    def to(self, device: torch.device) -> Task:
        """The same task with its tensors on ``device``."""
        return replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
            train_task_ids=None if self.train_task_ids is None else self.train_task_ids.to(device),
        )


@dataclass(frozen=True)
class Stream:
    """An ordered sequence of tasks and the output layout they need.

    Attributes:
        name: the scenario's registered name.
        setting: ``"class"`` (one head over all classes, no task id), ``"domain"`` (one
            head over the within-task labels, no task id) or ``"task"`` (one head per
            task, the task id given at test time).
        tasks: the tasks, in training order.
        n_outputs: outputs per head.
        n_heads: number of heads (the number of tasks when ``setting == "task"``, else 1).
        input_dim: length of a flattened input.
        input_shape: the shape of one input before flattening, e.g. ``(1, 28, 28)`` or
            ``(3, 32, 32)``; ``()`` when the inputs have no image shape (then a model
            treats them as ``(input_dim,)``). Task tensors hold ``[N, input_dim]`` or
            ``[N, *input_shape]``; a model accepts either and reshapes.
        ordered: whether the training samples of each task arrive in the order stored (a
            gradual stream's blend); False: the runner shuffles each task's samples.
    """

    name: str
    setting: Setting
    tasks: tuple[Task, ...]
    n_outputs: int
    n_heads: int
    input_dim: int
    input_shape: tuple[int, ...] = ()
    ordered: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        """One input's shape: ``input_shape``, or ``(input_dim,)`` for flat inputs."""
        return self.input_shape or (self.input_dim,)

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @property
    def inputs(self) -> InputTransform | None:
        """How the stream's uint8 inputs become floats (its tasks share one); None: x / 255."""
        return self.tasks[0].inputs if self.tasks else None

    @property
    def uses_task_id(self) -> bool:
        """Whether the model is told the task id (task-incremental)."""
        return self.setting == "task"

    def to(self, device: torch.device) -> Stream:
        """The same stream with every tensor on ``device``."""
        return replace(self, tasks=tuple(task.to(device) for task in self.tasks))


@dataclass(frozen=True)
class TrainingData:
    """What a strategy may see of a task: its id, name and training tensors, never its test set.

    Attributes:
        x: uint8 ``[N, D]`` flattened images (:func:`lifelong.to_floats` with ``inputs``
            gives the model's floats: ``x / 255`` when ``inputs`` is None).
        y: int64 ``[N]`` model targets.
        task_ids: int64 ``[N]`` the task each sample came from.
        inputs: the task's :class:`lifelong.InputTransform`, or None.
    """

    id: int
    name: str
    x: torch.Tensor
    y: torch.Tensor
    task_ids: torch.Tensor
    inputs: InputTransform | None = None


def training_data(task: Task) -> TrainingData:
    """The training view of ``task``, its inputs as flat rows ``[N, D]`` whatever the
    task's layout (images ``[N, C, H, W]``): memories and parts hold one layout, and a
    model reshapes its input itself."""
    ids = task.train_task_ids
    if ids is None:
        ids = torch.full_like(task.y_train, task.id)
    return TrainingData(task.id, task.name, task.x_train.flatten(1), task.y_train, ids, task.inputs)
