"""The ``adam`` learner: Adam on the incoming batch joined with the replayed one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, final

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
    # Adam moves every weight by about lr a step, the cosine head's one learned scale too:
    # from LUCIR's sigma 1 it stays near 1 for hundreds of steps, the softmax over cosines
    # in [-1, 1] stays flat and later class-IL tasks went unlearnt ([1, 1, 0] on the small
    # check; SGD's large gradient on sigma grows it at once). Start it at 10 (Gidaris &
    # Komodakis 2018's learned scale starts there).
    partner_defaults: ClassVar[Mapping[str, Mapping[str, Any]]] = {"cosine": {"scale": 10.0}}
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
