"""La-MAML's look-ahead and update, as functions of weights, rates and an objective.

One glance of La-MAML (Gupta, Yadav & Paull 2020, algorithm 1), with ``B`` incoming samples::

    theta_0 = theta;  theta_k = theta_{k-1} - s relu(alpha) * grad l(theta_{k-1}, x_k),  k = 1..B
    L = 1/B sum_k objective(theta_k, incoming batch + memory batch)          (the meta-loss)
    alpha <- alpha - opt_lr * clip(dL/dalpha)                 (learned rates)
    theta <- theta - relu(alpha) * clip(dL/dtheta)            (La-MAML)
          or theta - opt_wt * clip(dL/dtheta)                 (synchronous: C-MAML, Sync)

The learners ``la-maml``, ``sync-la-maml`` and ``c-maml`` (``lamaml.py``) are this update
with the official code's two switches (``--learn_lr``, ``--sync_update``) set. The inner
steps' scale ``s`` is their ``look_ahead``: ``1/B`` for ``mean`` (the look-ahead moves about
as far as one SGD step at rate ``alpha`` on the batch's mean loss, whatever ``B``) and ``1``
for ``sum`` (the paper's and official code's: its length grows with the batch).

This file is the reference: the look-ahead as a function of the weights and rates,
differentiated with ``torch.func``. Two accelerations declare themselves in
:mod:`lifelong.fast` and replace it where they apply (``--set fast=false`` turns both
off): at first order, the fast weights stepped in place (``lookahead_inplace.py``, any
objective) and, on a model with closed-form gradients and no penalty, the gradients
written out by hand (``lookahead_mlp.py``).

References: Gupta, Yadav & Paull 2020, "La-MAML: Look-ahead meta learning for continual
learning" (NeurIPS); official code montrealrobotics/La-MAML (``model/lamaml.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import grad_and_value

from lifelong import Batch, Objective, Replay, Step
from lifelong.fast import in_place_look_ahead, in_place_update, mlp_look_ahead

__all__ = ["clip_by_norm", "glance_order", "la_maml_update", "look_ahead"]

Params = dict[str, Tensor]


def look_ahead(
    objective: Objective,
    params: Params,
    alpha: Params,
    batch: Batch,
    replay: Replay | None,
    *,
    second_order: bool = False,
    rate_grads: bool = True,
    fast: bool = True,
    scale: float = 1.0,
) -> tuple[Tensor, Params, Params]:
    """La-MAML's meta-loss and its gradients w.r.t. the weights and the learned rates.

    The inner loop takes one SGD step per sample of ``batch``, in order, each with the
    rates ``scale * relu(alpha)``; the meta-loss is the objective on ``batch`` + ``replay``
    at the weights after every inner step, averaged over the steps.

    Args:
        objective: ``objective(params, batch, replay) -> 0-d`` (cross-entropy + penalties).
        params: the weights ``theta`` by name; unchanged on return.
        alpha: one learned rate per weight, same names and shapes (not modified).
        batch: the ``B`` incoming samples, ``x [B, D]``, in inner-loop order.
        second_order: differentiate through the inner gradients (MAML). First order keeps
            them constant, as the official MNIST runs do: ``d theta_k / d theta = I`` and
            ``d theta_k / d alpha = -relu'(alpha) * sum_{j<=k} g_j``.
        rate_grads: also return ``dL/dalpha`` (C-MAML does not need it: ``{}``).
        fast: take an acceleration of :mod:`lifelong.fast` where one applies (see the
            module docstring); ``False`` always runs the reference below.
        scale: the factor ``s > 0`` of every inner step's rates (``1/B``: ``mean``).

    Returns:
        ``(L, dL/dtheta, dL/dalpha)``: the detached 0-d meta-loss and gradients by name.
    """
    if scale != 1.0:  # relu(s alpha) = s relu(alpha) for s > 0: the rates s alpha, chained
        scaled = {n: a * scale for n, a in alpha.items()}
        loss, g_theta, g_scaled = look_ahead(
            objective,
            params,
            scaled,
            batch,
            replay,
            second_order=second_order,
            rate_grads=rate_grads,
            fast=fast,
        )
        return loss, g_theta, {n: g * scale for n, g in g_scaled.items()}
    samples = [
        Batch(x, y, t, batch.task)
        for x, y, t in zip(batch.x.split(1), batch.y.split(1), batch.task_ids.split(1), strict=True)
    ]
    declared = objective.closed_form
    if fast and not second_order and declared and declared.covers(params, penalties=False):
        return _closed_form(params, alpha, batch, replay, rate_grads)  # lifelong.fast
    if fast and not second_order:  # acceleration: lifelong.fast.lookahead_inplace
        return in_place_look_ahead(objective, params, alpha, samples, batch, replay, rate_grads)

    def meta_loss(theta: Params, rates: Params) -> Tensor:
        """``L = 1/B sum_k objective(theta_k, batch + replay)``, the inner steps unrolled."""
        losses = []
        for sample in samples:  # theta_k = theta_{k-1} - relu(alpha) * grad l(theta_{k-1}, x_k)
            g = torch.func.grad(lambda p, s=sample: objective(p, s, None))(theta)
            if not second_order:  # first order: the inner gradients are constants
                g = {n: v.detach() for n, v in g.items()}
            theta = {n: w - rates[n].relu() * g[n] for n, w in theta.items()}
            losses.append(objective(theta, batch, replay))
        return torch.stack(losses).mean()

    theta = {n: p.detach() for n, p in params.items()}
    rates = {n: a.detach() for n, a in alpha.items()}
    if not rate_grads:
        g_theta, loss = grad_and_value(meta_loss)(theta, rates)
        return loss.detach(), g_theta, {}
    (g_theta, g_alpha), loss = grad_and_value(meta_loss, argnums=(0, 1))(theta, rates)
    return loss.detach(), g_theta, g_alpha


def _closed_form(
    params: Params, alpha: Params, batch: Batch, replay: Replay | None, rate_grads: bool
) -> tuple[Tensor, Params, Params]:
    """:func:`lifelong.fast.mlp_look_ahead`'s lists, by name."""
    loss, grads, by_rate = mlp_look_ahead(
        list(params.values()),
        [alpha[n] for n in params],
        batch.x,
        batch.y,
        None if replay is None else replay.batch.x,
        None if replay is None else replay.batch.y,
        rate_grads=rate_grads,
    )
    names = list(params)
    return loss, dict(zip(names, grads, strict=True)), dict(zip(names, by_rate, strict=False))


def clip_by_norm(grads: Params, max_norm: float) -> Params:
    """``grads`` scaled so that their joint L2 norm is at most ``max_norm`` (0: unchanged).

    The same rule as ``torch.nn.utils.clip_grad_norm_`` (scale ``max_norm / (norm + 1e-6)``
    when below 1), without reading the norm on the host.
    """
    if max_norm <= 0 or not grads:
        return grads
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(list(grads.values()))))
    scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    return {n: g * scale for n, g in grads.items()}


def la_maml_update(
    params: Params,
    alpha: Params,
    batch: Batch,
    replay: Replay | None,
    objective: Objective,
    *,
    opt_lr: float | None,
    opt_wt: float | None,
    clip: float,
    second_order: bool,
    look_ahead_scale: str,
    fast: bool = True,
) -> Step:
    """One glance of La-MAML (``opt_wt=None``), Sync-La-MAML, or C-MAML (``opt_lr=None``).

    Updates ``params`` and ``alpha`` in place: the rates by SGD at ``opt_lr`` when they are
    learned, then the weights by ``relu(alpha) * grad`` (with the updated rates, as in the
    official code) or, synchronously, by SGD at ``opt_wt``. Both meta-gradients are clipped
    to a joint norm of ``clip`` first. ``look_ahead_scale`` ``mean`` scales the inner
    steps' rates by ``1/B``; ``sum`` takes them as they are (the paper's). ``fast``: take
    the accelerations of :mod:`lifelong.fast` where they apply.

    Returns:
        ``Step(meta-loss, dL/dtheta)``: the gradient the weights follow (before clipping).
    """
    if look_ahead_scale not in ("mean", "sum"):
        raise ValueError(f"look_ahead_scale must be 'mean' or 'sum', not {look_ahead_scale!r}")
    steps = 1 / len(batch.y) if look_ahead_scale == "mean" else 1.0
    loss, g_theta, g_alpha = look_ahead(
        objective,
        params,
        alpha,
        batch,
        replay,
        second_order=second_order,
        rate_grads=opt_lr is not None,
        fast=fast,
        scale=steps,
    )
    if fast:  # acceleration: lifelong.fast.lookahead_inplace
        in_place_update(params, alpha, g_theta, g_alpha, opt_lr=opt_lr, opt_wt=opt_wt, clip=clip)
        return Step(loss, g_theta)
    with torch.no_grad():
        if opt_lr is not None:  # alpha <- alpha - opt_lr * clip(dL/dalpha)
            for n, g in clip_by_norm(g_alpha, clip).items():
                alpha[n].sub_(opt_lr * g)
        update = clip_by_norm(g_theta, clip)
        for n, w in params.items():  # theta <- theta - relu(alpha) (or opt_wt) * clip(dL/dtheta)
            w.sub_((alpha[n].relu() if opt_wt is None else opt_wt) * update[n])
    return Step(loss, g_theta)


def glance_order(batch: Batch, generator: torch.Generator) -> Batch:
    """``batch`` reshuffled with ``generator`` (the official code reshuffles every glance)."""
    order = torch.randperm(len(batch.y), generator=generator, device=batch.y.device)
    x = batch.x.index_select(0, order)
    y, task_ids = batch.y.index_select(0, order), batch.task_ids.index_select(0, order)
    return Batch(x, y, task_ids, batch.task, batch.glance)
