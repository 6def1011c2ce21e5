"""The ``mer`` learner: meta-experience replay, Reptile within and across replayed batches."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, final

import torch
from torch import Tensor

from lifelong import Batch, Learner, Objective, Replay, Step, StreamInfo, detached, param
from lifelong.fast import compiled_mer_update, sample_step

__all__ = ["Mer", "mer_update"]

Params = dict[str, Tensor]


def mer_update(
    params: Params,
    batch: Batch,
    pool: Batch | None,
    objective: Objective,
    generator: torch.Generator,
    *,
    lr: float,
    beta: float,
    gamma: float,
    batches_per_example: int,
    memory_batch: int,
    closed_form: bool = True,
) -> Tensor:
    """MER's algorithm 1 on every incoming example in turn; updates ``params`` in place.

    For each example ``x``::

        before = theta
        repeat k = batches_per_example times:
            B = [x] + memory_batch samples drawn (with replacement) from the pool
            start = theta;  SGD at lr on each sample of B, one at a time
            theta = start + beta * (theta - start)          (within-batch Reptile)
        theta = before + gamma * (theta - before)           (across-batch Reptile)

    Args:
        params: the weights by name (updated in place).
        batch: the incoming examples ``x [B, D]``, taken in order.
        pool: the samples the replayed ones are drawn from (None: the memory is empty).
        objective: ``objective(params, batch, None) -> 0-d``, used on one sample at a time.
        generator: draws the replayed samples.
        closed_form: when ``objective`` declares a closed form with no penalty
            (:class:`lifelong.fast.ClosedForm`), run this whole loop compiled
            (:func:`lifelong.fast.compiled_mer_update`, where numba is installed) or take
            each single-sample step with the gradient written out
            (:func:`lifelong.fast.sample_step`); ``False`` always differentiates the
            objective (the reference).

    Returns:
        The loss of every incoming example at the weights it arrived to, averaged (0-d).
    """
    examples = _replayed(batch, pool, generator, batches_per_example, memory_batch)
    weights = tuple(params.values())
    one = torch.ones((), dtype=weights[0].dtype, device=weights[0].device)  # dloss/dloss
    declared = objective.closed_form
    closed = closed_form and declared is not None and declared.covers(params, penalties=False)
    if closed:  # acceleration: lifelong.fast.compiled_mer_update, this whole loop compiled
        compiled = compiled_mer_update(
            weights, examples.x, examples.y, lr=lr, beta=beta, gamma=gamma
        )
        if compiled is not None:
            return compiled

    def sgd_step(x: Tensor, y: Tensor, task_ids: Tensor) -> Tensor:
        """``theta -= lr * grad l(theta, (x, y))`` on one sample; the loss before the step."""
        if closed:  # acceleration: lifelong.fast.sample_step, the same step by hand
            return sample_step(weights, x[0], y[0], lr)
        loss = objective(params, Batch(x, y, task_ids, batch.task), None)
        grads = torch.autograd.grad(loss, weights, one)
        with torch.no_grad():
            torch._foreach_sub_(weights, grads, alpha=lr)
        return loss

    arrived = []
    before = [p.detach().clone() for p in weights]  # buffers, refilled by copy: no new memory
    start = [p.detach().clone() for p in weights]
    for i in range(len(batch.y)):
        with torch.no_grad():
            torch._foreach_copy_(before, weights)
        for b in range(batches_per_example):
            with torch.no_grad():
                torch._foreach_copy_(start, weights)
            rows = zip(
                examples.x[i, b].split(1),
                examples.y[i, b].split(1),
                examples.task_ids[i, b].split(1),
                strict=True,
            )
            for s, (x, y, task_ids) in enumerate(rows):  # the example first, then the replayed
                loss = sgd_step(x, y, task_ids)
                if b == 0 and s == 0:
                    arrived.append(loss.detach())
            with torch.no_grad():
                torch._foreach_lerp_(weights, start, 1 - beta)  # start + beta * (theta - start)
        with torch.no_grad():
            torch._foreach_lerp_(weights, before, 1 - gamma)  # before + gamma * (theta - before)
    return torch.stack(arrived).mean()


def _replayed(
    batch: Batch, pool: Batch | None, generator: torch.Generator, k: int, draws: int
) -> Batch:
    """MER's batches: ``[n, k, 1 + draws]`` samples, each row an example then replayed ones.

    The replayed samples are drawn uniformly with replacement from ``pool`` (as the
    official ``getBatch`` does from its memory), ``min(draws, len(pool))`` per batch.
    """
    n = len(batch.y)

    def rows(t: Tensor, replayed: Tensor | None) -> Tensor:
        first = t[:, None, None].expand(n, k, 1, *t.shape[1:])
        return first if replayed is None else torch.cat([first, replayed], dim=2)

    if pool is None or draws == 0:
        return Batch(
            rows(batch.x, None), rows(batch.y, None), rows(batch.task_ids, None), batch.task
        )
    picks = torch.randint(
        len(pool.y), (n, k, min(draws, len(pool.y))), generator=generator, device=batch.y.device
    )
    return Batch(
        rows(batch.x, pool.x[picks]),
        rows(batch.y, pool.y[picks]),
        rows(batch.task_ids, pool.task_ids[picks]),
        batch.task,
    )


@final
@dataclass
class Mer(Learner):
    """MER: SGD one sample at a time on replayed batches, with two Reptile interpolations.

    Every incoming example is learned from ``batches_per_example`` batches, each the
    example followed by ``memory_batch`` samples drawn from the replay batch that the
    memory hands over (give the memory a replay batch as large as itself, as the suites
    do, to draw from the whole memory like the official code); see :func:`mer_update`.
    Defaults: MER's permutations script (lr 0.03, beta 0.03, gamma 1.0, 10 x 10). On a
    one-head ``lifelong.MLP`` with no penalty the whole update runs compiled
    (:func:`lifelong.fast.compiled_mer_update`, numba: autograd's update up to float
    rounding, about 45x faster than autograd on the 784-100-100-10 MLP), or without numba
    each single-sample step is taken by hand (:func:`lifelong.fast.sample_step`, about 7x);
    ``--set fast=false`` turns both off.

    Deliberate differences from the official code (mattriemer/MER ``model/meralg1.py``):

    - The incoming batch enters the memory after the step (the composite's memory), so an
      example cannot be replayed with later examples of its own batch; the official code
      (batch size 1 in its scripts) stores each example before the next arrives.
    - With ``every_glance`` off (the default), repeated glances of a batch are not learned
      from: the official MER has no glances (its k batches per example play that part);
      La-MAML's protocol repeats batches for every method.
    - A non-quadratic penalty of a combined regularizer (``lwf``) enters every
      single-sample loss; a quadratic one (``ewc``, ``si``, ``mas``, ``online-ewc``) is
      an exact proximal step after the batch, at the rate a constant gradient would have
      moved the weights over it, ``lr * beta * gamma * k * (memory_batch + 1)`` per
      example (:meth:`proximal_rate`): stable at any strength, where in every sample's
      loss ``mer+ewc`` diverged at its defaults.
    - ``Step.loss`` is the mean loss of the incoming examples at the weights each arrived
      to; ``Step.grads`` is the update direction, ``(theta_before - theta_after) / lr``.

    References: Riemer et al. 2019, "Learning to learn without forgetting by maximizing
    transfer and minimizing interference" (ICLR), algorithm 1.
    """

    name: ClassVar[str] = "mer"
    shortcuts: ClassVar[Mapping[str, tuple[str, ...]]] = {"mer": ("mer", "replay")}
    needs_memory: ClassVar[bool] = True
    passes_replay: ClassVar[bool] = False
    lr: float = param(0.03, "SGD learning rate of the single-sample steps", gt=0)
    beta: float = param(0.03, "within-batch Reptile rate", gt=0, le=1)
    gamma: float = param(1.0, "across-batch Reptile rate", gt=0, le=1)
    batches_per_example: int = param(10, "batches (k) each incoming example is learned from", ge=1)
    memory_batch: int = param(10, "replayed samples in each batch (the paper's k-1)", ge=0)
    every_glance: bool = param(False, "also learn from repeated glances of a batch")

    generator: torch.Generator = field(init=False, repr=False, compare=False)
    last_loss: Tensor | None = field(init=False, repr=False, compare=False)
    last_grads: Params = field(init=False, repr=False, compare=False)
    moved: float = field(init=False, repr=False, compare=False, default=0.0)

    def setup(self, params: Params, info: StreamInfo, generator: torch.Generator) -> None:
        self.generator, self.last_loss, self.last_grads = generator, None, {}
        self.moved = 0.0

    def proximal_rate(self) -> float:
        """The rate of the last step: ``lr beta gamma k (memory_batch + 1)`` per example."""
        return self.moved

    def step(
        self, params: Params, batch: Batch, replay: Replay | None, objective: Objective
    ) -> Step:
        if self.last_loss is not None and batch.glance > 0 and not self.every_glance:
            self.moved = 0.0
            return Step(self.last_loss, self.last_grads)
        per_example = self.lr * self.beta * self.gamma * self.batches_per_example
        self.moved = per_example * (self.memory_batch + 1) * len(batch.y)
        before = detached(params)
        loss = mer_update(
            params,
            batch,
            replay.batch if replay is not None else None,
            objective,
            self.generator,
            lr=self.lr,
            beta=self.beta,
            gamma=self.gamma,
            batches_per_example=self.batches_per_example,
            memory_batch=self.memory_batch,
        )
        self.last_loss = loss
        self.last_grads = {n: (before[n] - p.detach()).div_(self.lr) for n, p in params.items()}
        return Step(loss, self.last_grads)
