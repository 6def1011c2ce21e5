"""The contract every strategy fulfils, built-in or plugged in."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.contracts.stream import Setting, Stream, TrainingData
from lifelong.execution.checkpoint import Checkpointed
from lifelong.fast import closed_form
from lifelong.training.optim import SGD, Stepper

if TYPE_CHECKING:
    from lifelong.composition.compose import Composite
    from lifelong.contracts.scenario import ScenarioFamily

__all__ = ["Batch", "Strategy", "StreamInfo", "supervised_step"]


@dataclass(frozen=True)
class Batch:
    """One incoming training batch.

    Attributes:
        x: float ``[B, D]`` inputs: scaled to [0, 1], or normalised (and, in training,
            augmented) by the stream's :class:`lifelong.InputTransform`.
        y: int64 ``[B]`` targets.
        task_ids: int64 ``[B]`` task of each sample (use it only when ``uses_task_id``).
        task: the task being trained.
        glance: 0 on a batch's first presentation, then 1, 2, ... when the protocol
            repeats batches (glances).
    """

    x: torch.Tensor
    y: torch.Tensor
    task_ids: torch.Tensor
    task: int
    glance: int = 0


@dataclass(frozen=True)
class StreamInfo:
    """What a strategy may know about the stream before it starts (no data).

    Attributes:
        scenario: the configured scenario family the stream was built from, so that a
            meta-learned initialisation can draw meta-training tasks that are disjoint
            from the stream (None when the stream was built by hand).
        seed: the run's seed.
        data_dir: where the run's data source was read from (None: the embedded data).
        fast: whether accelerations (:mod:`lifelong.fast`) may replace the reference path
            where they declare that they apply (the protocol's ``fast``).
        boundaries: whether ``before_task`` and ``after_task`` are called at the task
            boundaries and batches carry task ids (False with ``boundaries=hidden``: a
            strategy that learns at a boundary, such as GDumb, must then do it otherwise).
        batch_size: samples in each incoming training batch (the protocol's
            ``batch_size``; a replay memory replays as many by default).
    """

    n_tasks: int
    setting: Setting
    n_outputs: int
    n_heads: int
    input_dim: int
    scenario: ScenarioFamily | None = None
    seed: int = 0
    data_dir: str | None = None
    fast: bool = True
    boundaries: bool = True
    batch_size: int = 32  # the protocol's default

    @classmethod
    def of(
        cls,
        stream: Stream,
        scenario: ScenarioFamily | None = None,
        seed: int = 0,
        data_dir: str | None = None,
        fast: bool = True,
        batch_size: int = 32,
    ) -> StreamInfo:
        """The info of ``stream`` (its shape), with the run's scenario, seed, data, ``fast``
        and batch size."""
        return cls(
            stream.n_tasks,
            stream.setting,
            stream.n_outputs,
            stream.n_heads,
            stream.input_dim,
            scenario,
            seed,
            data_dir,
            fast,
            batch_size=batch_size,
        )

    @property
    def uses_task_id(self) -> bool:
        return self.setting == "task"


@dataclass
class Strategy(Checkpointed, abc.ABC):
    """A continual learner: hyperparameters as dataclass fields, state built in ``setup``.

    The runner calls, for every run on a fresh copy of the strategy::

        setup(model, info, generator)
        for each task: before_task(data); train_step(batch) ...; after_task(data)
        predict(x, task_ids) whenever it evaluates

    Subclasses are ``@dataclass`` classes that set ``name`` (the short name used on the
    CLI) and declare every hyperparameter with :func:`lifelong.param`. A strategy only
    learns: it never computes metrics and never writes files.

    Attributes:
        trains_on: ``"task"`` (the default) feeds the current task's batches;
            ``"seen"`` feeds batches of every task seen so far (the joint upper bound).
        resumable: whether the runner can checkpoint the strategy's state at task
            boundaries (False for strategies holding state it cannot snapshot, such as
            wrapped Avalanche strategies).
        needs_boundaries: whether it cannot learn without its boundary hooks (it
            consolidates at a task's end, as EWC does); with ``boundaries=hidden`` such a
            strategy is refused, with ``boundaries=detect`` its hooks fire at detected ones.
    """

    name: ClassVar[str]
    trains_on: ClassVar[Literal["task", "seen"]] = "task"
    resumable: ClassVar[bool] = True
    setting_prefixes: ClassVar[tuple[str, ...]] = ()
    """Part names whose ``--set`` keys this strategy also takes as its own (``("replay",)``:
    a whole strategy with a memory of its own takes ``replay.size`` as its ``size``)."""
    needs_boundaries: ClassVar[bool] = False
    needs_true_tasks: ClassVar[bool] = False
    """Whether it reads each task's own outputs from the true task index (X-DER's
    per-task output slices): refused when boundaries are hidden or detected, where the
    ids it would see are 0 or a count of detected shifts."""

    @abc.abstractmethod
    def setup(self, model: nn.Module, info: StreamInfo, generator: torch.Generator) -> None:
        """Take the freshly initialised model and build optimisers, memories, ...

        Args:
            model: ``model(x [B, D], task_ids [B]) -> logits [B, n_outputs]``.
            info: the stream's shape.
            generator: the only source of randomness the strategy may use.
        """

    def before_task(self, data: TrainingData) -> None:
        """Called before the first batch of a task."""

    @abc.abstractmethod
    def train_step(self, batch: Batch) -> torch.Tensor:
        """Learn from one batch; return the loss as a 0-d tensor (not synchronised)."""

    def after_task(self, data: TrainingData) -> None:
        """Called after the last batch of a task (consolidation, memory updates, ...)."""

    @abc.abstractmethod
    def predict(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, n_outputs]`` for inputs ``x [B, D]`` of the tasks ``task_ids [B]``
        (a batch may hold two tasks' samples); ``x`` and ``task_ids`` are read only (the
        runner keeps them for later evaluations)."""

    def boundary_needs(self) -> list[str]:
        """The names of what in it needs task boundaries: itself when it declares
        ``needs_boundaries``; a composite names its parts that do."""
        return [self.name] if self.needs_boundaries else []

    def as_composite(self) -> Composite | None:
        """The composite of parts this strategy is, step for step, or None (the default: a
        step of its own). Seeds stacked into one batched model (``--vectorize``) run the
        composite's parts."""
        return None


def supervised_step(
    model: nn.Module, optimizer: Stepper, batch: Batch, *, fast: bool = True
) -> torch.Tensor:
    """One cross-entropy gradient step on ``batch``; returns the detached loss.

    The gradient is autograd's; with ``fast`` (pass :attr:`StreamInfo.fast`) a model that
    declares closed-form gradients (:class:`lifelong.ClosedFormModel`) gets them written
    out by hand instead (:func:`lifelong.fast.cross_entropy_grads`, equal up to rounding),
    and a plain :class:`lifelong.SGD` (no momentum) takes the step without forming them
    (:func:`lifelong.fast.cross_entropy_descent`, as the ``sgd`` learner does: ``naive``
    and ``sgd`` stay equal step for step).
    """
    optimizer.zero_grad(set_to_none=True)
    if fast and closed_form.has_closed_form(model):
        params = list(model.parameters())
        if isinstance(optimizer, SGD) and not optimizer.momentum:
            return closed_form.cross_entropy_descent(params, batch.x, batch.y, optimizer.lr)
        loss, grads = closed_form.cross_entropy_grads(params, batch.x, batch.y)
        for p, g in zip(params, grads, strict=True):
            p.grad = g
    else:
        loss = F.cross_entropy(model(batch.x, batch.task_ids), batch.y)
        loss.backward()
    optimizer.step()
    return loss.detach()
