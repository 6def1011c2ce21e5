"""Naive fine-tuning: plain SGD on each task in turn, the lower bound."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, final

import torch
from torch import nn

from lifelong import (
    SGD,
    Batch,
    Composite,
    Strategy,
    StreamInfo,
    compose,
    param,
    supervised_step,
)


@final
@dataclass
class Naive(Strategy):
    """SGD on the incoming batches only; forgets catastrophically in class-incremental streams.

    References: McCloskey & Cohen 1989; French 1999 (catastrophic forgetting).
    """

    name: ClassVar[str] = "naive"
    lr: float = param(0.1, "SGD learning rate", gt=0)
    momentum: float = param(0.0, "SGD momentum", ge=0, le=1)

    model: nn.Module = field(init=False, repr=False)
    optimizer: SGD = field(init=False, repr=False)
    fast: bool = field(init=False, repr=False, default=True)  # the run's accelerations on

    def setup(self, model: nn.Module, info: StreamInfo, generator: torch.Generator) -> None:
        self.model, self.fast = model, info.fast
        self.optimizer = SGD(model.parameters(), lr=self.lr, momentum=self.momentum)

    def train_step(self, batch: Batch) -> torch.Tensor:
        return supervised_step(self.model, self.optimizer, batch, fast=self.fast)

    def predict(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        return self.model(x, task_ids)

    def as_composite(self) -> Composite:
        """The ``sgd`` composite with this learning rate and momentum: the same steps."""
        sgd = compose("sgd")
        settings: dict[str, Any] = {"lr": self.lr, "momentum": self.momentum}
        learner = dataclasses.replace(sgd.learner, **settings)
        return dataclasses.replace(sgd, learner=learner)
