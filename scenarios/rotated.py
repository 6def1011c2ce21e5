"""Rotated: every task rotates the digits by its own angle (Rotated-MNIST)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from lifelong import (
    DrawnTransform,
    ImageScenario,
    Stream,
    Transform,
    UserError,
    param,
    transformed_footprint,
    transformed_stream,
)

MIN_ANGLE_GAP = 10.0  # degrees between a meta-training and an evaluation rotation


@dataclass
class RotatedScenario(ImageScenario):
    """``n_tasks`` tasks over the same digits, each rotated by a fixed angle.

    With ``angles`` empty, task t's angle is drawn uniformly from the t-th of ``n_tasks``
    evenly spaced slices of [0, 180) degrees, as GEM's rotation generator does. Rotation
    is bilinear, in torch, about the image centre. Meta-learned inits meta-train on angles
    in [180, 360), the half turn GEM's generator never uses (:meth:`draw_transform`).

    References: Lopez-Paz & Ranzato 2017 (GEM); Riemer et al. 2019; Gupta et al. 2020.
    """

    name: ClassVar[str] = "rotated-mnist"
    meta_source: ClassVar[str] = "rotated"
    transform_kind: ClassVar[str | None] = "rotated"
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

    @classmethod
    def draw_transform(
        cls, generator: torch.Generator, stream: ImageScenario, seed: int
    ) -> DrawnTransform:
        """A rotation by an angle in [180, 360) degrees at least ``MIN_ANGLE_GAP`` from
        every angle of ``stream`` (from 0 when its images are not rotated)."""
        avoid = stream.task_angles(seed) if isinstance(stream, RotatedScenario) else [0.0]
        angle = _draw_angle(generator, avoid)
        return DrawnTransform(_rotate(angle), {"kind": "rotated", "angle": angle})


def _draw_angle(generator: torch.Generator, avoid: Sequence[float]) -> float:
    for _ in range(1000):
        angle = 180.0 + 180.0 * float(torch.rand((), generator=generator, dtype=torch.float64))
        if all(abs((angle - a + 180.0) % 360.0 - 180.0) >= MIN_ANGLE_GAP for a in avoid):
            return angle
    raise UserError(
        f"meta-training: no rotation in [180, 360) is {MIN_ANGLE_GAP:g} degrees from every "
        "evaluation angle; use source=permuted"
    )


def _rotate(degrees: float) -> Transform:
    theta = math.radians(degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    matrix = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]])

    def apply(images: torch.Tensor) -> torch.Tensor:
        x = images.unsqueeze(1).float()
        theta = matrix.to(x.device).expand(len(x), 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return out.squeeze(1).round().clamp(0, 255).to(torch.uint8)

    return apply
