"""The ``si`` regularizer: synaptic intelligence, importance from the path the weights took."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, final

import torch
from torch import Tensor, nn

from lifelong import (
    Batch,
    Quadratic,
    Regularizer,
    Replay,
    StreamInfo,
    TrainingData,
    detached,
    param,
    quadratic_penalty,
)


@final
@dataclass
class Si(Regularizer):
    """SI: a weight's importance is its share of the loss decrease along the training path.

    During a task ``omega_i += -g_i * delta_i`` after every update (``g`` the step's
    gradient, ``delta`` the weight change). At the task's end
    ``Omega_i += max(omega_i, 0) / (Delta_i^2 + xi)``, with ``Delta`` the change over the
    task, and the anchor moves to the current weights;
    ``penalty = sum_i Omega_i (theta_i - theta*_i)^2``. Negative path contributions (from
    momentum, Adam or a projected step) are clipped so the penalty stays convex. ``g`` is
    the gradient of the whole objective the learner stepped on.

    Default ``lam = 300``, ``xi = 0.1``, tuned on Split-MNIST (mnist5k, one epoch, SGD lr
    0.1 with its proximal step, 3 seeds): task-incremental ACC 0.972 against naive's
    0.957, domain-incremental 0.764 against 0.657 (3000 gives 0.847 there but 0.955 in
    task-IL). Permuted-MNIST (10 tasks) wants about 3 (ACC 0.777 against 0.743).

    References: Zenke, Poole & Ganguli 2017, "Continual learning through synaptic
    intelligence" (ICML).
    """

    name: ClassVar[str] = "si"
    lam: float = param(
        300.0, "strength of the penalty, c in the paper (Permuted-MNIST: about 3)", ge=0
    )
    xi: float = param(0.1, "damping of the importance of weights that barely moved", gt=0)

    anchor: dict[str, Tensor] = field(init=False, repr=False, compare=False)
    previous: dict[str, Tensor] = field(init=False, repr=False, compare=False)
    omega: dict[str, Tensor] = field(init=False, repr=False, compare=False)
    importance: dict[str, Tensor] = field(init=False, repr=False, compare=False)

    def setup(self, model: nn.Module, info: StreamInfo, generator: torch.Generator) -> None:
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.anchor, self.previous = detached(params), detached(params)
        self.omega = {n: torch.zeros_like(p) for n, p in self.anchor.items()}
        self.importance = {n: torch.zeros_like(p) for n, p in self.anchor.items()}

    def penalty(self, params: dict[str, Tensor], batch: Batch, replay: Replay | None) -> Tensor:
        return quadratic_penalty(params, self.importance, self.anchor)

    def quadratic(self) -> Quadratic | None:
        return Quadratic(self.importance, self.anchor)

    def observe(self, params: dict[str, Tensor], grads: dict[str, Tensor]) -> None:
        for n, p in params.items():
            now = p.detach()
            self.omega[n].addcmul_(grads[n], now - self.previous[n], value=-1)
            self.previous[n].copy_(now)

    def after_task(self, params: dict[str, Tensor], data: TrainingData) -> None:
        for n, p in params.items():
            change = p.detach() - self.anchor[n]
            self.importance[n] += self.omega[n].clamp(min=0) / (change.pow(2) + self.xi)
            self.omega[n].zero_()
            self.anchor[n].copy_(p.detach())
