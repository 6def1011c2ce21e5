"""MAML: an initialization from which a few SGD steps fit a new task; every weight learns.

The init is meta-trained before the stream on tasks disjoint from it
(:class:`lifelong.MetaInit`: the pool, the seeded start and the disk cache), then written
into the run's model.

References: Finn et al. 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
Networks".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, final

import torch
from torch import nn

from lifelong import (
    MetaInit,
    MetaStart,
    MetaTaskSource,
    Params,
    apply_gradients,
    loss_fn,
    meta_gradient,
    param,
    sgd_inner_loop,
)

CONFIDENT_INIT_DEFAULTS: Mapping[str, Mapping[str, Any]] = {"der": {"lam": 0.1}}
"""What an init meta-learned with its output layer (maml, meta-sgd, reptile; oml for a
reason of its own, strategies/oml.py) declares for its partners. Such an init answers
confidently before it has seen the stream: on Split-MNIST task-IL its first logits have
mean |z| 1.7 (meta-sgd) to 2.7 (maml), reptile's 2.2, a random init's 0.15. DER stores
those answers with the first task's samples and, at its 0.5, holds them: c-maml+der+maml's
first task stayed at chance (0.5) on seeds 0 and 2, c-maml+der+meta-sgd's below the floor
in task- and domain-IL (0.37, 0.59) and its last class-IL task at 0.205; at 0.1 every task
learns on seeds 0-2 (first task 0.75-0.995). ProtoNets, which learn no output layer, do not
declare it. ``--set der.lam=...`` wins."""


@final
@dataclass
class MamlInit(MetaInit):
    """A MAML initialization: a few SGD steps from it fit a new task; every weight learns.

    References: Finn et al. 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of
    Deep Networks".
    """

    name: ClassVar[str] = "maml"
    partner_defaults: ClassVar[Mapping[str, Mapping[str, Any]]] = CONFIDENT_INIT_DEFAULTS
    tasks_per_batch: int = param(4, "tasks averaged in one meta update", ge=1)
    inner_steps: int = param(3, "SGD steps on a task's support data", ge=1)
    inner_batch: int = param(10, "support samples per inner step", ge=1)
    query_size: int = param(30, "query samples of the outer loss per task", ge=1)
    inner_lr: float = param(0.1, "learning rate of the inner SGD steps", gt=0)
    outer_lr: float = param(1e-3, "Adam learning rate of the meta update", gt=0)
    first_order: bool = param(False, "first-order MAML: no second derivatives")

    def meta_train(self, model: nn.Module, tasks: MetaTaskSource, start: MetaStart) -> Params:
        """Each meta update: for ``tasks_per_batch`` tasks, ``inner_steps`` SGD steps on
        support batches from ``theta``, the query loss at the adapted weights, its gradient
        back to ``theta`` (through the inner steps unless ``first_order``); the mean of
        those gradients makes one Adam step on ``theta``."""
        theta, g, loss = start.theta, start.generator, loss_fn(model)
        optimizer = torch.optim.Adam(list(theta.values()), lr=self.outer_lr)
        for _ in start.steps:
            total = {n: torch.zeros_like(p) for n, p in theta.items()}
            for _ in range(self.tasks_per_batch):
                task = tasks.sample_task(g)
                support = [tasks.sample(task, self.inner_batch, g) for _ in range(self.inner_steps)]
                adapted = sgd_inner_loop(
                    loss, theta, support, self.inner_lr, create_graph=not self.first_order
                )[-1]
                query = tasks.sample(task, self.query_size, g)
                grads, _ = meta_gradient(loss(adapted, query), theta)
                total = {n: total[n] + grads[n] / self.tasks_per_batch for n in total}
            apply_gradients(optimizer, theta, total)
        return theta
