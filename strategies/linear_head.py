"""The ``linear`` head: the model's own output layer, the default of every composite."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, final

from torch import Tensor, nn

from lifelong import Batch, Head


@final
@dataclass
class LinearHead(Head):
    """The model's own output layer (``head(body(x))``): what a composite with no head does.

    Naming it (``er+linear``) changes nothing; it is the head axis's default, listed so the
    axis reads whole.
    """

    name: ClassVar[str] = "linear"
    needs_features: ClassVar[bool] = False
    model_forward: ClassVar[bool] = True

    def predict(
        self, model: nn.Module, x: Tensor, task_ids: Tensor, stored: Batch | None
    ) -> Tensor:
        return model(x, task_ids)
