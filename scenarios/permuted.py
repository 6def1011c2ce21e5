"""Permuted: every task applies its own fixed random pixel permutation (Permuted-MNIST)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from lifelong import (
    DrawnTransform,
    ImageScenario,
    Stream,
    Transform,
    param,
    transformed_footprint,
    transformed_stream,
)


@dataclass
class PermutedScenario(ImageScenario):
    """``n_tasks`` tasks over the same digits, each under a fixed random pixel permutation.

    The permutations are drawn from the run seed, so a seed fixes the stream. The first
    task keeps the identity when ``identity_first`` is set (as GEM's generator does not,
    and van de Ven et al. do not either; off by default). Meta-learned inits meta-train on
    other permutations of the training split (:meth:`draw_transform`).

    References: Goodfellow et al. 2013; Kirkpatrick et al. 2017; Lopez-Paz & Ranzato 2017.
    """

    name: ClassVar[str] = "permuted-mnist"
    meta_source: ClassVar[str] = "permuted"
    transform_kind: ClassVar[str | None] = "permuted"
    identity_first: bool = param(False, "leave the first task unpermuted")

    def footprint(self, data_dir: str | None = None) -> int:
        return transformed_footprint(self, data_dir)

    def build(self, seed: int, data_dir: str | None = None) -> Stream:
        generator = torch.Generator().manual_seed(seed)
        transforms = []
        for t in range(self.n_tasks):
            perm = torch.randperm(784, generator=generator)
            if t == 0 and self.identity_first:
                perm = torch.arange(784)
            transforms.append((f"perm {t}", _permute(perm)))
        return transformed_stream(self, seed, data_dir, transforms)

    @classmethod
    def draw_transform(
        cls, generator: torch.Generator, stream: ImageScenario, seed: int
    ) -> DrawnTransform:
        """A fresh random permutation (one of 784! collides with a stream's with
        negligible probability, so none is excluded)."""
        perm = torch.randperm(784, generator=generator)
        return DrawnTransform(_permute(perm), {"kind": "permuted", "permutation": perm.tolist()})


def _permute(perm: torch.Tensor) -> Transform:
    def apply(images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)[:, perm.to(images.device)].view_as(images)

    return apply
