"""The ``sgd`` learner: gradient descent on the incoming batch joined with the replayed one."""

from __future__ import annotations

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
    UnformedGradients,
    gradients,
    param,
)


@final
@dataclass
class Sgd(Learner):
    """SGD on the incoming batch, joined with the replay batch when there is a memory (ER).

    With no memory and no regularizer it is the ``naive`` baseline, step for step. With
    the ``replay`` memory it is ER (the shortcut ``er``), one step of which reads::

        replay = memory.sample()                     # x_r, y_r (replay.py)
        data = memory.joined(batch, replay)          # [x; x_r], [y; y_r] (replay.py)
        loss = CE(f(data.x), data.y)                 # the composite's objective
        theta -= lr * grad(loss)                     # this learner's step, below
        memory.add(batch)                            # reservoir sampling (replay.py)

    Quadratic penalties (``ewc``, ``online-ewc``, ``si``, ``mas``) are applied as a
    proximal step by default: the gradient step sees only the loss (and any other
    penalty), then each weight moves to the exact minimiser of ``lam * w (u - c)^2`` plus
    the step's distance term (:meth:`lifelong.Quadratic.proximal_step`). The objective is
    the same as adding the penalty to the loss; only its optimisation differs. Plain
    gradient descent on a penalty diverges once ``lr * lam * w`` passes 1 for some weight,
    which caps the useful strength far below what protects old tasks (EWC's Fisher, SI's
    and MAS's importances reach 1e1-1e3 on single weights); the proximal step is stable
    at any ``lam``. ``proximal=false`` gives plain gradient descent on the penalty.

    After an init that learned a rate per weight (``meta-sgd``, Li et al. 2017), every
    weight steps at its own rate, ``theta -= relu(alpha) * grad`` elementwise (momentum,
    when set, applies to the gradient first; a negative rate is clipped at 0, as
    La-MAML's), and the proximal step uses those rates.

    The gradient is autograd's. An objective that declares a closed form (the default
    one-head MLP's cross-entropy, alone or with quadratic penalties in it) has it written
    out by hand instead (:class:`lifelong.fast.ClosedForm`, equal up to float rounding);
    a plain step (no momentum, no per-weight rates, no part that reads the gradient) is
    then taken without forming the gradient (:func:`lifelong.fast.cross_entropy_descent`,
    then each quadratic penalty's step from its slopes: :meth:`ClosedForm.descend`).

    References: Chaudhry et al. 2019, "On tiny episodic memories in continual learning" (ER).
    """

    name: ClassVar[str] = "sgd"
    is_default: ClassVar[bool] = True  # the learner of a composition that names none
    takes_rates: ClassVar[bool] = True
    lr: float = param(0.1, "SGD learning rate", gt=0)
    momentum: float = param(0.0, "SGD momentum", ge=0, le=1)
    proximal: bool = param(
        True, "apply quadratic penalties (ewc, online-ewc, si, mas) as an exact implicit step"
    )

    names: list[str] = field(init=False, repr=False, compare=False)
    optimizer: SGD = field(init=False, repr=False, compare=False)
    rates: dict[str, Tensor] | None = field(init=False, repr=False, compare=False, default=None)

    def setup(
        self, params: dict[str, Tensor], info: StreamInfo, generator: torch.Generator
    ) -> None:
        self.names = list(params)
        self.optimizer = SGD(params.values(), lr=self.lr, momentum=self.momentum)

    def use_rates(self, rates: dict[str, Tensor]) -> None:
        # A weight the init learned no rate for (a head's own, e.g. the cosine head's
        # scale) keeps the learner's own rate. A negative rate, which Meta-SGD allows for
        # its one adaptation step, is gradient ascent on its weight over the hundreds of
        # steps of a stream (8-28% of a layer's rates: meta-sgd diverged on Rotated-MNIST
        # class-IL in its first task, and on Split-MNIST domain-IL); clipped at 0, as
        # La-MAML's relu(alpha), every task is learnt there.
        self.rates = {
            n: rates[n].clamp_min(0.0) if n in rates else torch.full_like(p, self.lr)
            for n, p in zip(self.names, self.optimizer.params, strict=True)
        }
        # The optimiser steps at rate 1 a direction already scaled by each weight's rate.
        self.optimizer = SGD(self.optimizer.params, lr=1.0, momentum=self.momentum)

    def proximal_rate(self) -> float | dict[str, Tensor] | None:
        if not self.proximal:
            return None
        if self.rates is not None:
            return self.rates
        return self.lr

    def stacked_sgd(self) -> tuple[float, float]:
        return self.lr, self.momentum

    def step(
        self, params: dict[str, Tensor], batch: Batch, replay: Replay | None, objective: Objective
    ) -> Step:
        closed = objective.closed_form
        plain = self.momentum == 0 and self.rates is None
        if plain and closed is not None and closed.descends(params):
            # acceleration: lifelong.fast.cross_entropy_descent, no gradient formed
            return Step(closed.descend(params, batch, replay, self.lr), UnformedGradients())
        if closed is not None and closed.covers(params):  # acceleration: lifelong.fast
            loss, grads = closed.loss_and_grads(params, batch, replay)
        else:
            loss = objective(params, batch, replay)
            grads = gradients(loss, params)
        rates = self.rates
        steps = grads if rates is None else {n: rates[n] * g for n, g in grads.items()}
        self.optimizer.descend([steps[n] for n in self.names])
        return Step(loss.detach(), grads)
