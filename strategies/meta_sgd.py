"""Meta-SGD: an initialization and a learning rate for every weight, meta-learned together.

Meta-trained before the stream on tasks disjoint from it, like ``maml``
(:class:`lifelong.MetaInit`: the pool, the seeded start and the disk cache). One meta
update (Li et al. 2017, algorithm 1), for each of ``tasks_per_batch`` tasks::

    theta' = theta - alpha * grad L_support(theta)          # elementwise: a rate per weight
    (``inner_steps`` such steps, on fresh support batches)
    meta-loss += L_query(theta')
    (theta, alpha) <- Adam step on the mean meta-loss       # through the inner steps

On the stream the model starts from ``theta`` and the ``sgd`` learner steps every weight
at its own rate ``alpha`` (``la-maml`` starts its learned rates there instead). A rate may
turn negative, as the paper allows (alpha sets each weight's direction as well as its
size; on Split-MNIST 500 meta updates gave rates from -0.16 to 0.33, mean 0.06). On a
stream ``sgd`` clips it at 0, as La-MAML's ``relu(alpha)``: over hundreds of steps a
negative rate ascends the loss along its weight (unclipped, ``meta-sgd`` diverged on
Rotated-MNIST class-IL and Split-MNIST domain-IL at batch 10). With
``rates=false`` only the weights are used, and any learner composes. The rates are kept
in the init's cache with the weights.

Defaults: one inner step, as the paper's experiments; the rates start uniform in
[0.005, 0.1] (drawn from the meta-training generator), as the paper initialises them;
the rest as ``maml`` here.

References: Li, Zhou, Chen & Li 2017, "Meta-SGD: Learning to Learn Quickly for Few-Shot
Learning" (arXiv:1707.09835).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, final

import torch
from torch import Tensor, nn

from lifelong import (
    Batch,
    MetaInit,
    MetaStart,
    MetaTaskSource,
    Params,
    StreamInfo,
    apply_gradients,
    loss_fn,
    meta_gradient,
    param,
    sgd_inner_loop,
)

from .maml import CONFIDENT_INIT_DEFAULTS

LossFn = Callable[[Params, Batch], Tensor]
RATES = "rates/"  # the cached result's names for the learned rates (lifelong.MetaInit)
RATE_RANGE = (0.005, 0.1)


@final
@dataclass
class MetaSgdInit(MetaInit):
    """Meta-SGD: starting weights and per-weight learning rates, meta-learned together.

    References: Li et al. 2017, "Meta-SGD: Learning to Learn Quickly for Few-Shot Learning".
    """

    name: ClassVar[str] = "meta-sgd"
    partner_defaults: ClassVar[Mapping[str, Mapping[str, Any]]] = CONFIDENT_INIT_DEFAULTS
    stream_fields: ClassVar[tuple[str, ...]] = ("source", "rates")
    tasks_per_batch: int = param(4, "tasks averaged in one meta update", ge=1)
    inner_steps: int = param(1, "adaptation steps on a task's support data", ge=1)
    inner_batch: int = param(10, "support samples per inner step", ge=1)
    query_size: int = param(30, "query samples of the outer loss per task", ge=1)
    outer_lr: float = param(1e-3, "Adam learning rate of the meta update", gt=0)
    rates: bool = param(True, "the stream's learner steps with the learned rates")

    learned: Params | None = field(init=False, repr=False, compare=False, default=None)

    def gives_rates(self) -> bool:
        return self.rates

    def prepare(
        self, model: nn.Module, info: StreamInfo, generator: torch.Generator
    ) -> set[str] | None:
        loaded = self.load_meta_trained(model, info)
        if self.rates:
            self.learned = {n[len(RATES) :]: r for n, r in loaded.items() if n.startswith(RATES)}
        return None

    def learning_rates(self) -> Params | None:
        return self.learned

    def meta_train(self, model: nn.Module, tasks: MetaTaskSource, start: MetaStart) -> Params:
        """Each meta update: ``inner_steps`` steps ``theta - alpha * grad`` per task from
        ``theta``, the query loss there, its gradient with respect to ``theta`` and
        ``alpha`` (second order); the mean over tasks makes one Adam step on both."""
        theta, g, loss = start.theta, start.generator, loss_fn(model)
        low, high = RATE_RANGE
        alpha = {
            n: (low + (high - low) * torch.rand(p.shape, generator=g, dtype=p.dtype))
            .to(p.device)
            .requires_grad_(True)
            for n, p in theta.items()
        }
        learned = {**theta, **{RATES + n: a for n, a in alpha.items()}}
        optimizer = torch.optim.Adam(list(learned.values()), lr=self.outer_lr)
        for _ in start.steps:
            total = {n: torch.zeros_like(p) for n, p in learned.items()}
            for _ in range(self.tasks_per_batch):
                grads = self.task_gradient(loss, theta, alpha, tasks, g)
                total = {n: total[n] + grads[n] / self.tasks_per_batch for n in total}
            apply_gradients(optimizer, learned, total)
        return learned

    def task_gradient(
        self, loss: LossFn, theta: Params, alpha: Params, tasks: MetaTaskSource, g: torch.Generator
    ) -> Params:
        """The gradient of :func:`adapted_loss` on one drawn task with respect to ``theta``
        (by name) and ``alpha`` (by ``rates/`` name)."""
        task = tasks.sample_task(g)
        support = [tasks.sample(task, self.inner_batch, g) for _ in range(self.inner_steps)]
        query = tasks.sample(task, self.query_size, g)
        d_theta, d_alpha = meta_gradient(
            adapted_loss(loss, theta, alpha, support, query), theta, alpha
        )
        return {**d_theta, **{RATES + n: d for n, d in d_alpha.items()}}


def adapted_loss(
    loss: LossFn, theta: Params, alpha: Params, support: list[Batch], query: Batch
) -> Tensor:
    """One task's meta-loss: the query loss after the steps ``theta - alpha * grad`` on
    each support batch, differentiable with respect to ``theta`` and ``alpha``."""
    adapted = sgd_inner_loop(loss, theta, support, alpha, create_graph=True)[-1]
    return loss(adapted, query)
