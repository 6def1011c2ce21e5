"""The ``adam`` learner: Adam on the incoming batch joined with the replayed one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, final

import torch
from torch import Tensor

from lifelong import (
    Batch,
    Learner,
    Objective,
    Replay,
    Step,
    StreamInfo,
    apply_gradients,
    gradients,
    param,
)


@final
@dataclass
class Adam(Learner):
    """Adam on the incoming batch, joined with the replay batch when there is a memory.

    Its moment estimates carry across task boundaries (van de Ven et al. 2019 train every
    method with Adam, lr 0.001).

    References: Kingma & Ba 2015.
    """

    name: ClassVar[str] = "adam"
    lr: float = param(0.001, "Adam learning rate", gt=0)
    beta1: float = param(0.9, "decay of the first-moment estimate", ge=0, le=1)
    beta2: float = param(0.999, "decay of the second-moment estimate", ge=0, le=1)

    optimizer: torch.optim.Optimizer = field(init=False, repr=False, compare=False)

    def setup(
        self, params: dict[str, Tensor], info: StreamInfo, generator: torch.Generator
    ) -> None:
        betas = (self.beta1, self.beta2)
        self.optimizer = torch.optim.Adam(params.values(), lr=self.lr, betas=betas)

    def step(
        self, params: dict[str, Tensor], batch: Batch, replay: Replay | None, objective: Objective
    ) -> Step:
        loss = objective(params, batch, replay)
        grads = gradients(loss, params)
        apply_gradients(self.optimizer, params, grads)
        return Step(loss.detach(), grads)
