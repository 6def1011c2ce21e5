"""Joint training: every task trains on the union of all data seen so far, the upper bound."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, final

import torch
from torch import nn

from lifelong import Batch, Strategy, StreamInfo, param

from .naive import Naive


@final
@dataclass
class Joint(Strategy):
    """Naive's SGD step on batches drawn from every task seen so far (``trains_on = "seen"``).

    Not a continual learner: it keeps all past data, and serves as the upper bound that
    the continual strategies are measured against. Its step is :class:`Naive`'s, the
    runner feeding it the seen tasks' data instead of the current task's.
    """

    name: ClassVar[str] = "joint"
    needs_boundaries: ClassVar[bool] = True  # it trains on the tasks seen, by task
    trains_on: ClassVar = "seen"
    lr: float = param(0.1, "SGD learning rate", gt=0)
    momentum: float = param(0.0, "SGD momentum", ge=0, le=1)

    step: Naive = field(init=False, repr=False)  # the same update, on other batches

    def setup(self, model: nn.Module, info: StreamInfo, generator: torch.Generator) -> None:
        self.step = Naive(lr=self.lr, momentum=self.momentum)
        self.step.setup(model, info, generator)

    def train_step(self, batch: Batch) -> torch.Tensor:
        return self.step.train_step(batch)

    def predict(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        return self.step.predict(x, task_ids)
