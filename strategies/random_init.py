"""The ``random`` init: the model's own random initialization; every weight learns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, final

import torch
from torch import nn

from lifelong import Init, StreamInfo


@final
@dataclass
class RandomInit(Init):
    """The model's own random initialization (PyTorch's ``nn.Linear`` default); all learn."""

    name: ClassVar[str] = "random"

    def prepare(
        self, model: nn.Module, info: StreamInfo, generator: torch.Generator
    ) -> set[str] | None:
        return None
