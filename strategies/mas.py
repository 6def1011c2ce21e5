"""The ``mas`` regularizer: memory aware synapses, importance from the output's sensitivity."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, final

import torch
from torch import Tensor, nn

from lifelong import (
    Quadratic,
    QuadraticRegularizer,
    StreamInfo,
    TrainingData,
    detached,
    gradient_importance,
    param,
    task_sample,
)


def _squared_norm_of(outputs: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    """MAS's function on the columns ``outputs``: ``(logits [B, n_outputs], y [B]) -> 0-d``,
    the squared L2 norm of those outputs (labels unused), summed over rows."""

    def squared_norm(logits: Tensor, y: Tensor) -> Tensor:
        return logits[:, outputs].pow(2).sum()

    return squared_norm


@final
@dataclass
class Mas(QuadraticRegularizer):
    """MAS: a weight's importance is how much the output's squared norm moves with it.

    At the end of each task ``Omega += mean_x |d ||f_t(x)||^2 / d theta|`` over ``samples``
    of its training inputs (no labels needed), and the anchor moves to the current
    weights; ``penalty = sum_i Omega_i (theta_i - theta*_i)^2``.

    ``f_t`` is the outputs task t trains (the targets in its data): the paper's network
    has a head per task and takes the norm of that task's head. In task- and domain-IL
    that is every output of the head; in class-IL it is the task's own classes. The norm
    over all outputs would count the classes not yet seen, whose logits training drives
    far below zero: their rows got most of the importance and anchored the next task's
    classes before they were learnt (Split-MNIST with MER, Permuted- and Rotated-MNIST
    class-IL with replay, Adam, OML, C-MAML or Sync-La-MAML: a later task at 0.16-0.31,
    every task 0.33-0.89 now; small real scenarios of tests/test_learning.py, seeds 0-2).

    Default ``lam = 0.01``, tuned on Permuted-MNIST (mnist5k, 10 tasks, one epoch, SGD
    lr 0.1 with its proximal step, seeds 0-2: ACC 0.802 against naive's 0.744; 0.05 gave
    0.766, 0.005 0.793). In Split-MNIST class-IL it sits at naive's level (ACC 0.179
    against 0.184 over seeds 0-19; the last task's two classes swap back and forth at
    lr 0.1, so a seed's ACC is 0.10-0.19 for every regularizer and naive); Split-MNIST's
    domain form gains more at 3 (0.706 against 0.657), which in class-IL leaves later tasks
    half learnt (ACC 0.137 over seeds 0-2, below naive's 0.188).

    References: Aljundi et al. 2018, "Memory aware synapses: learning what (not) to
    forget" (ECCV).
    """

    name: ClassVar[str] = "mas"
    reads_gradients: ClassVar[bool] = False  # its observe reads no gradient
    needs_boundaries: ClassVar[bool] = True  # it consolidates at the end of a task
    lam: float = param(0.01, "strength of the penalty (Split-MNIST domain-IL: about 3)", ge=0)
    samples: int = param(500, "training samples of a task used for its importance", ge=1)

    model: nn.Module = field(init=False, repr=False, compare=False)
    generator: torch.Generator = field(init=False, repr=False, compare=False)
    importance: dict[str, Tensor] = field(init=False, repr=False, compare=False)
    anchor: dict[str, Tensor] = field(init=False, repr=False, compare=False)

    def setup(self, model: nn.Module, info: StreamInfo, generator: torch.Generator) -> None:
        self.model, self.generator, self.importance, self.anchor = model, generator, {}, {}

    def quadratic(self) -> Quadratic | None:
        if not self.anchor:
            return None
        return Quadratic(self.importance, self.anchor)

    def after_task(self, params: dict[str, Tensor], data: TrainingData) -> None:
        sample = task_sample(data, self.samples, self.generator)
        squared_norm = _squared_norm_of(data.y.unique())  # the outputs this task trains
        new = gradient_importance(
            self.model, params, sample, squared_norm, "abs", summed_loss=squared_norm
        )
        self.importance = {n: self.importance.get(n, 0) + w for n, w in new.items()}
        self.anchor = detached(params)
