"""Reptile: an initialization moved toward task-adapted weights; every weight learns.

The init is meta-trained before the stream on tasks disjoint from it
(:class:`lifelong.MetaInit`: the pool, the seeded start and the disk cache), then written
into the run's model.

References: Nichol et al. 2018, "On First-Order Meta-Learning Algorithms".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, final

import torch
from torch import nn

from lifelong import MetaInit, MetaStart, MetaTaskSource, Params, loss_fn, param, sgd_inner_loop

from .maml import CONFIDENT_INIT_DEFAULTS


@final
@dataclass
class ReptileInit(MetaInit):
    """A Reptile initialization: the weights moved toward task-adapted ones; every weight learns.

    References: Nichol et al. 2018, "On First-Order Meta-Learning Algorithms".
    """

    name: ClassVar[str] = "reptile"
    partner_defaults: ClassVar[Mapping[str, Mapping[str, Any]]] = CONFIDENT_INIT_DEFAULTS
    tasks_per_batch: int = param(4, "tasks averaged in one meta update", ge=1)
    inner_steps: int = param(5, "SGD steps on each task", ge=1)
    inner_batch: int = param(10, "samples per inner step", ge=1)
    inner_lr: float = param(0.1, "learning rate of the inner SGD steps", gt=0)
    outer_lr: float = param(1.0, "meta step size, annealed linearly to 0", gt=0)

    def meta_train(self, model: nn.Module, tasks: MetaTaskSource, start: MetaStart) -> Params:
        """Batched Reptile: each meta update adapts ``theta`` to ``tasks_per_batch`` tasks by
        ``inner_steps`` plain SGD steps and moves it by ``rate * mean(phi_task - theta)``,
        the rate ``outer_lr`` annealed linearly to 0."""
        theta, g, loss = start.theta, start.generator, loss_fn(model)
        for step in start.steps:
            rate = self.outer_lr * (1.0 - step / self.meta_steps)
            moved = {n: torch.zeros_like(p) for n, p in theta.items()}
            for _ in range(self.tasks_per_batch):
                task = tasks.sample_task(g)
                batches = [tasks.sample(task, self.inner_batch, g) for _ in range(self.inner_steps)]
                phi = sgd_inner_loop(loss, theta, batches, self.inner_lr)[-1]
                moved = {n: moved[n] + (phi[n].detach() - theta[n].detach()) for n in moved}
            with torch.no_grad():
                for n, p in theta.items():
                    p.add_(moved[n], alpha=rate / self.tasks_per_batch)
        return theta
