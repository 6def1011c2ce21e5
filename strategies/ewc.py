"""The ``ewc`` regularizer: elastic weight consolidation, one quadratic penalty per past task."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, final

import torch
from torch import Tensor, nn

from lifelong import (
    Batch,
    Quadratic,
    QuadraticRegularizer,
    StreamInfo,
    TrainingData,
    detached,
    fisher_diagonal,
    fisher_labels,
    param,
    task_sample,
)
from lifelong.fast import fisher_by_hand, has_closed_form


@final
@dataclass
class Ewc(QuadraticRegularizer):
    """EWC: keep each weight near its value after every past task, in proportion to its Fisher.

    ``penalty = sum_t 1/2 sum_i F_t,i (theta_i - theta*_t,i)^2``, with ``theta*_t`` the
    weights after task t and ``F_t`` the diagonal Fisher estimated at the end of task t
    from ``fisher_samples`` of its training samples. The composite adds ``lam * penalty``.
    The sum over tasks is kept as the one equivalent quadratic (same value and gradient),
    so a step costs the same after 2 tasks as after 20.

    Default ``lam = 5``, tuned on Permuted-MNIST (mnist5k, 10 tasks, one epoch, SGD lr
    0.1 with its proximal step, 3 seeds: ACC 0.769 against naive's 0.743; 1000 leaves
    the later tasks unlearnt, 0.515), where it neither helps nor hurts Split-MNIST's
    class-incremental form (reports/classic-strategies.md). Split-MNIST's domain and
    task forms gain more from a stronger penalty (domain-IL: 0.764 at 1000, 0.856 at
    1e4, against naive's 0.657).
    In class-incremental streams (one head over every class) no strength protects the old
    tasks (the new classes' rows win their inputs either way) and a strong penalty only
    anchors the shared features the new classes need: at 1000 Split-MNIST class-IL ended
    at 0.10, below naive's 0.19, with its last task half learnt.
    Under learners with a proximal rate (``sgd``, ``agem``, the La-MAML family, ``mer``)
    the penalty is an exact proximal step, stable at any ``lam``; under ``adam`` it is
    part of the loss (``adam+ewc`` takes ``lam`` about 3000).

    References: Kirkpatrick et al. 2017, "Overcoming catastrophic forgetting in neural
    networks" (PNAS).
    """

    name: ClassVar[str] = "ewc"
    reads_gradients: ClassVar[bool] = False  # its observe reads no gradient
    needs_boundaries: ClassVar[bool] = True  # it consolidates at the end of a task
    lam: float = param(5.0, "strength of the penalty (Split-MNIST domain-IL: about 1000)", ge=0)
    fisher: str = param(
        "empirical", "Fisher from the labels or sampled", choices=("empirical", "true")
    )
    fisher_samples: int = param(500, "training samples of a task used for its Fisher", ge=1)

    not_checkpointed: ClassVar[tuple[str, ...]] = ("by_hand",)
    model: nn.Module = field(init=False, repr=False, compare=False)
    generator: torch.Generator = field(init=False, repr=False, compare=False)
    by_hand: bool = field(init=False, repr=False, compare=False, default=False)
    weight: dict[str, Tensor] = field(init=False, repr=False, compare=False)
    first: dict[str, Tensor] = field(init=False, repr=False, compare=False)
    center: dict[str, Tensor] = field(init=False, repr=False, compare=False)
    offset: Tensor = field(init=False, repr=False, compare=False)
    ended: dict[str, Any] = field(init=False, repr=False, compare=False)

    def setup(self, model: nn.Module, info: StreamInfo, generator: torch.Generator) -> None:
        self.model, self.generator = model, generator
        self.by_hand = info.fast and has_closed_form(model)
        self.weight, self.first, self.center, self.ended = {}, {}, {}, {}
        self.offset = torch.zeros((), device=next(model.parameters()).device)

    def quadratic(self) -> Quadratic | None:
        self._consolidate()
        if not self.weight:
            return None
        return Quadratic(self.weight, self.center, scale=0.5, offset=self.offset)

    def after_task(self, params: dict[str, Tensor], data: TrainingData) -> None:
        # The task's weights and Fisher sample (its labels drawn now for the true Fisher);
        # the Fisher itself is taken when the next task begins or the penalty is first
        # read, at these weights (and the model's buffers, batch norm's statistics, which
        # nothing between a task's end and the next one's start changes): the same
        # numbers, and none for the stream's last task.
        self._consolidate()  # a task ended before this one with nothing read between
        sample = task_sample(data, self.fisher_samples, self.generator)
        labelled = fisher_labels(self.model, params, sample, self.fisher, self.generator)
        self.ended = {
            "anchor": detached(params),
            "x": labelled.x,
            "y": labelled.y,
            "task_ids": labelled.task_ids,
            "task": labelled.task,
        }

    def before_task(self, params: dict[str, Tensor], data: TrainingData) -> None:
        self._consolidate()

    def _consolidate(self) -> None:
        """Add the ended task's ``F (theta - a)^2`` to the penalty.

        ``sum_t F_t (theta - a_t)^2 == A (theta - c)^2 + C``, with ``A = sum_t F_t`` and
        ``c = sum_t F_t a_t / A``: one quadratic per step however many tasks have passed.
        Adding ``F (theta - a)^2`` moves the centre to ``c'`` and adds ``A (c - c')^2 +
        F (a - c')^2`` to ``C`` (terms never negative: nothing cancels); the offset is
        ``C / 2``.
        """
        if not self.ended:
            return
        ended, self.ended = self.ended, {}
        anchor = ended["anchor"]
        sample = Batch(ended["x"], ended["y"], ended["task_ids"], ended["task"])
        # as at the task's end, whatever reads the penalty first: with gradients (the
        # reference differentiates), in full precision (outside a step's autocast)
        device = next(iter(anchor.values())).device.type
        precise = torch.autocast(device, enabled=False)
        with torch.inference_mode(False), torch.enable_grad(), precise:
            fisher = fisher_of(self.model, anchor, sample, self.generator, self.by_hand)
        weight, first, center, gained = {}, {}, {}, []
        for n, f in fisher.items():
            weight[n] = self.weight.get(n, 0) + f
            first[n] = self.first.get(n, 0) + f * anchor[n]
            center[n] = torch.where(weight[n] > 0, first[n] / weight[n], anchor[n])
            gained.append(torch.dot(f.reshape(-1), (anchor[n] - center[n]).square().reshape(-1)))
            if n in self.center:
                moved = (self.center[n] - center[n]).square()
                gained.append(torch.dot(self.weight[n].reshape(-1), moved.reshape(-1)))
        self.offset = self.offset + torch.stack(gained).sum() / 2
        self.weight, self.first, self.center = weight, first, center


def fisher_of(
    model: nn.Module,
    params: dict[str, Tensor],
    labelled: Batch,
    generator: torch.Generator,
    by_hand: bool,
) -> dict[str, Tensor]:
    """:func:`lifelong.fisher_diagonal` of ``params`` on ``labelled``, whose labels are
    the ones to differentiate (:func:`lifelong.fisher_labels`); ``by_hand`` (the model
    declares closed-form gradients and the run has ``fast`` on) takes it from
    :func:`lifelong.fast.fisher_by_hand` where ``params`` are all of the model's weights:
    the same numbers bit for bit."""
    if by_hand and len(params) == len(list(model.parameters())):  # acceleration: lifelong.fast
        squares = fisher_by_hand(list(params.values()), labelled.x, labelled.y)
        return dict(zip(params, squares, strict=True))
    return fisher_diagonal(model, params, labelled, "empirical", generator)
