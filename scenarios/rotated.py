"""Rotated: every task rotates the digits by its own angle (Rotated-MNIST)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from lifelong import (
    ImageScenario,
    Stream,
    UserError,
    param,
    transformed_footprint,
    transformed_stream,
)


@dataclass
class RotatedScenario(ImageScenario):
    """``n_tasks`` tasks over the same digits, each rotated by a fixed angle.

    With ``angles`` empty, task t's angle is drawn uniformly from the t-th of ``n_tasks``
    evenly spaced slices of [0, 180) degrees, as GEM's rotation generator does. Rotation
    is bilinear, in torch, about the image centre.

    References: Lopez-Paz & Ranzato 2017 (GEM); Riemer et al. 2019; Gupta et al. 2020.
    """

    name: ClassVar[str] = "rotated-mnist"
    angles: tuple[float, ...] = param((), "degrees, one per task (empty: GEM's slices)")

    def footprint(self, data_dir: str | None = None) -> int:
        return transformed_footprint(self, data_dir)

    def build(self, seed: int, data_dir: str | None = None) -> Stream:
        angles = self.task_angles(seed)
        transforms = [(f"rot {a:.0f}", _rotate(a)) for a in angles]
        return transformed_stream(self, seed, data_dir, transforms)

    def task_angles(self, seed: int) -> list[float]:
        """The angle of every task, in degrees."""
        if self.angles:
            if len(self.angles) != self.n_tasks:
                raise UserError(
                    f"rotated-mnist: {len(self.angles)} angles given for n_tasks="
                    f"{self.n_tasks}; give one angle per task or none"
                )
            return list(self.angles)
        generator = torch.Generator().manual_seed(seed)
        width = 180.0 / self.n_tasks
        draws = torch.rand(self.n_tasks, generator=generator, dtype=torch.float64)
        return [(t + float(u)) * width for t, u in enumerate(draws)]


def _rotate(degrees: float) -> Callable[[torch.Tensor], torch.Tensor]:
    theta = math.radians(degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    matrix = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]])

    def apply(images: torch.Tensor) -> torch.Tensor:
        x = images.unsqueeze(1).float()
        grid = F.affine_grid(matrix.expand(len(x), 2, 3), list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return out.squeeze(1).round().clamp(0, 255).to(torch.uint8)

    return apply
