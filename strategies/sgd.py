"""The ``sgd`` learner: gradient descent on the incoming batch joined with the replayed one."""

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
class Sgd(Learner):
    """SGD on the incoming batch, joined with the replay batch when there is a memory (ER).

    With no memory and no regularizer it is the ``naive`` baseline, step for step.

    References: Chaudhry et al. 2019, "On tiny episodic memories in continual learning" (ER).
    """

    name: ClassVar[str] = "sgd"
    lr: float = param(0.1, "SGD learning rate", gt=0)
    momentum: float = param(0.0, "SGD momentum", ge=0, le=1)

    optimizer: torch.optim.Optimizer = field(init=False, repr=False, compare=False)

    def setup(
        self, params: dict[str, Tensor], info: StreamInfo, generator: torch.Generator
    ) -> None:
        self.optimizer = torch.optim.SGD(params.values(), lr=self.lr, momentum=self.momentum)

    def step(
        self, params: dict[str, Tensor], batch: Batch, replay: Replay | None, objective: Objective
    ) -> Step:
        loss = objective(params, batch, replay)
        grads = gradients(loss, params)
        apply_gradients(self.optimizer, params, grads)
        return Step(loss.detach(), grads)
