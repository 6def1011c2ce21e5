"""The ``agem`` learner: SGD whose gradient is projected so that the memory's loss cannot rise."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, final

import torch
from torch import Tensor

from lifelong import (
    SGD,
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


def project(grads: dict[str, Tensor], reference: dict[str, Tensor]) -> dict[str, Tensor]:
    """A-GEM's projection: ``g - min(g.r, 0) / (r.r) * r`` over all parameters together.

    Args:
        grads: the incoming batch's gradient ``g``, by name.
        reference: the memory batch's gradient ``r``, by name (same shapes).

    Returns:
        ``g`` when ``g.r >= 0``; otherwise ``g`` minus its component along ``r``, so the
        result has a non-negative dot product with ``r``. No host synchronisation.

    References: Chaudhry et al. 2019, "Efficient lifelong learning with A-GEM", eq. 11.
    """
    dot = torch.stack([(grads[n] * r).sum() for n, r in reference.items()]).sum()
    norm = torch.stack([r.pow(2).sum() for r in reference.values()]).sum()
    scale = dot.clamp(max=0) / norm.clamp(min=1e-12)
    return {n: g - scale * reference[n] for n, g in grads.items()}


@final
@dataclass
class Agem(Learner):
    """A-GEM: SGD on the incoming batch, its gradient projected against a memory batch's.

    The reference gradient is the composite's objective on the replay batch (the
    cross-entropy there, plus any regularizer's penalty that is part of it). Quadratic
    penalties (``ewc``, ``si``, ...) are instead applied after the step as an exact
    proximal step at ``lr``, as under ``sgd``: stable at any strength (as a loss term,
    ``agem+si`` diverged at its defaults on Split-MNIST).

    References: Chaudhry et al. 2019, "Efficient lifelong learning with A-GEM" (ICLR).
    """

    name: ClassVar[str] = "agem"
    shortcuts: ClassVar[Mapping[str, tuple[str, ...]]] = {"agem": ("agem", "replay")}
    needs_memory: ClassVar[bool] = True
    passes_replay: ClassVar[bool] = False
    lr: float = param(0.1, "SGD learning rate", gt=0)

    optimizer: SGD = field(init=False, repr=False, compare=False)

    def setup(
        self, params: dict[str, Tensor], info: StreamInfo, generator: torch.Generator
    ) -> None:
        self.optimizer = SGD(params.values(), lr=self.lr)

    def proximal_rate(self) -> float:
        return self.lr

    def step(
        self, params: dict[str, Tensor], batch: Batch, replay: Replay | None, objective: Objective
    ) -> Step:
        loss = objective(params, batch, None)
        grads = gradients(loss, params)
        update = grads
        if replay is not None:
            update = project(grads, gradients(objective(params, replay.batch, None), params))
        apply_gradients(self.optimizer, params, update)
        return Step(loss.detach(), grads)
