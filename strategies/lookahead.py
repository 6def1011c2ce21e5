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

References: Gupta, Yadav & Paull 2020, "La-MAML: Look-ahead meta learning for continual
learning" (NeurIPS); official code montrealrobotics/La-MAML (``model/lamaml.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from lifelong import Batch, Objective, Replay, Step, meta_gradient, sgd_inner_loop
from lifelong.fast import mlp_look_ahead

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
    closed_form: bool = True,
    scale: float = 1.0,
) -> tuple[Tensor, Params, Params]:
    """La-MAML's meta-loss and its gradients w.r.t. the weights and the learned rates.

    The inner loop takes one SGD step per sample of ``batch``, in order, each with the
    rates ``scale * relu(alpha)``; the meta-loss is the objective on ``batch`` + ``replay`` at the
    weights after every inner step, averaged over the steps.

    Args:
        objective: ``objective(params, batch, replay) -> 0-d`` (cross-entropy + penalties).
        params: the weights ``theta`` by name; unchanged on return (first order steps
            live weights in place and puts them back, see :func:`_fast_weights`).
        alpha: one learned rate per weight, same names and shapes (not modified).
        batch: the ``B`` incoming samples, ``x [B, D]``, in inner-loop order.
        second_order: differentiate through the inner gradients (MAML). First order keeps
            them constant, as the official MNIST runs do: ``d theta_k / d theta = I`` and
            ``d theta_k / d alpha = -relu'(alpha) * sum_{j<=k} g_j``.
        rate_grads: also return ``dL/dalpha`` (C-MAML does not need it: ``{}``).
        closed_form: at first order, when the objective declares a closed form with no
            penalty (:class:`lifelong.fast.ClosedForm`), take the gradients written out by
            hand (``lifelong/fast/lookahead_mlp.py``, about 2x faster on the La-MAML MNIST
            protocol); ``False`` always differentiates the objective (the reference).
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
            closed_form=closed_form,
        )
        return loss, g_theta, {n: g * scale for n, g in g_scaled.items()}
    declared = objective.closed_form
    if closed_form and not second_order and declared and declared.covers(params, penalties=False):
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
    samples = [
        Batch(x, y, t, batch.task)
        for x, y, t in zip(batch.x.split(1), batch.y.split(1), batch.task_ids.split(1), strict=True)
    ]
    if second_order:
        theta = {n: p.detach().requires_grad_() for n, p in params.items()}
        a = {n: r.detach().requires_grad_(rate_grads) for n, r in alpha.items()}
        rates = {n: r.relu() for n, r in a.items()}
        inner = sgd_inner_loop(
            lambda p, b: objective(p, b, None), theta, samples, rates, create_graph=True
        )
        loss = torch.stack([objective(p, batch, replay) for p in inner]).mean()
        g_theta, g_alpha = meta_gradient(loss, theta, a if rate_grads else None)
        return loss.detach(), g_theta, g_alpha
    return _first_order(objective, params, alpha, samples, batch, replay, rate_grads)


def _first_order(
    objective: Objective,
    params: Params,
    alpha: Params,
    samples: list[Batch],
    batch: Batch,
    replay: Replay | None,
    rate_grads: bool,
) -> tuple[Tensor, Params, Params]:
    """The first-order look-ahead, the weights stepped in place, two backward passes a step.

    With constant inner gradients ``g_k``, ``d_k = dL_k/dtheta_k`` at ``theta_k`` gives
    ``dL/dtheta = mean_k d_k`` and ``dL/dalpha = -relu'(alpha) * mean_k G_k * d_k`` with
    ``G_k = sum_{j<=k} g_j``: running sums, kept in the gradients autograd hands back, so
    nothing is stacked over ``k`` and no buffer is zeroed.
    """
    names = list(params)
    rates = [alpha[n].detach().relu() for n in names]
    g_theta: list[Tensor] = []  # sum_k d_k
    sums: list[Tensor] = []  # G_k
    g_alpha: list[Tensor] = []  # sum_k G_k * d_k
    losses = []
    with _fast_weights(params) as (weights, at):
        one = torch.ones((), dtype=weights[0].dtype, device=weights[0].device)  # dloss/dloss
        for k in range(len(samples) + 1):  # at theta_k
            if k > 0:  # the meta-loss
                outer = objective(at, batch, replay)
                d = list(torch.autograd.grad(outer, weights, one))
                losses.append(outer.detach())
                if k == 1:  # the sums start at their first terms
                    g_alpha = list(torch._foreach_mul(sums, d)) if rate_grads else []
                    g_theta = d
                else:
                    torch._foreach_add_(g_theta, d)
                    if rate_grads:
                        torch._foreach_addcmul_(g_alpha, sums, d)
            if k < len(samples):  # the inner step on sample k+1
                g = list(torch.autograd.grad(objective(at, samples[k], None), weights, one))
                with torch.no_grad():
                    torch._foreach_addcmul_(weights, rates, g, value=-1)  # theta_{k+1}
                if rate_grads and k == 0:
                    sums = g
                elif rate_grads:
                    torch._foreach_add_(sums, g)
    torch._foreach_div_(g_theta, len(samples))
    for rate, total in zip(rates if rate_grads else [], g_alpha, strict=True):
        total.mul_(-1 / len(samples)).mul_(rate > 0)  # relu'(alpha)
    by_name = dict(zip(names, g_alpha, strict=True)) if rate_grads else {}
    return torch.stack(losses).mean(), dict(zip(names, g_theta, strict=True)), by_name


@contextmanager
def _fast_weights(params: Params) -> Iterator[tuple[tuple[Tensor, ...], Params]]:
    """Leaves that hold the fast weights ``theta_k``, and the dict the objective reads.

    Live weights (leaves that require grad, as a composite's are) are those leaves
    themselves and get their values back, bit for bit, on exit (an error included): the
    objective then sees the caller's own dict, which a composite runs through its module
    as it is, without ``functional_call`` re-registering every parameter twice per sample.
    Other weights are cloned into private leaves.
    """
    if not all(p.is_leaf and p.requires_grad for p in params.values()):
        private = tuple(p.detach().clone().requires_grad_() for p in params.values())
        yield private, dict(zip(params, private, strict=True))
        return
    live = tuple(params.values())
    theta = [w.detach().clone() for w in live]
    try:
        yield live, params
    finally:
        with torch.no_grad():
            torch._foreach_copy_(live, theta)


def clip_by_norm(grads: Params, max_norm: float) -> Params:
    """``grads`` scaled so that their joint L2 norm is at most ``max_norm`` (0: unchanged).

    The same rule as ``torch.nn.utils.clip_grad_norm_`` (scale ``max_norm / (norm + 1e-6)``
    when below 1), without reading the norm on the host.
    """
    if max_norm <= 0 or not grads:
        return grads
    norm = _joint_norm(list(grads.values()))
    scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    return dict(zip(grads, torch._foreach_mul(list(grads.values()), scale), strict=True))


def _joint_norm(grads: list[Tensor]) -> Tensor:
    """The L2 norm of all of ``grads`` together, 0-d on their device."""
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def _clipped(grads: list[Tensor], max_norm: float) -> tuple[list[Tensor], float]:
    """``(g, s)`` with ``s * g`` the gradients clipped as :func:`clip_by_norm` clips them.

    On the CPU the norm is read as a host number (there is no device to wait for) and the
    factor folds into the update that follows, two tensor operators instead of seven;
    elsewhere the clipped tensors themselves come back, with ``s = 1``."""
    if max_norm <= 0 or not grads or grads[0].device.type != "cpu":
        return list(clip_by_norm({str(i): g for i, g in enumerate(grads)}, max_norm).values()), 1.0
    norm = _joint_norm(grads).item()
    return grads, min(max_norm / (norm + 1e-6), 1.0)


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
) -> Step:
    """One glance of La-MAML (``opt_wt=None``), Sync-La-MAML, or C-MAML (``opt_lr=None``).

    Updates ``params`` and ``alpha`` in place: the rates by SGD at ``opt_lr`` when they are
    learned, then the weights by ``relu(alpha) * grad`` (with the updated rates, as in the
    official code) or, synchronously, by SGD at ``opt_wt``. Both meta-gradients are clipped
    to a joint norm of ``clip`` first. ``look_ahead_scale`` ``mean`` scales the inner
    steps' rates by ``1/B``; ``sum`` takes them as they are (the paper's).

    Returns:
        ``Step(meta-loss, dL/dtheta)``: the gradient the weights follow (before clipping).
    """
    if look_ahead_scale not in ("mean", "sum"):
        raise ValueError(f"look_ahead_scale must be 'mean' or 'sum', not {look_ahead_scale!r}")
    loss, g_theta, g_alpha = look_ahead(
        objective,
        params,
        alpha,
        batch,
        replay,
        second_order=second_order,
        rate_grads=opt_lr is not None,
        scale=1 / len(batch.y) if look_ahead_scale == "mean" else 1.0,
    )
    names = list(params)
    weights, rates = list(params.values()), [alpha[n] for n in names]
    update, scale = _clipped([g_theta[n] for n in names], clip)
    with torch.no_grad():
        if opt_lr is not None:
            by_rate, rate_scale = _clipped([g_alpha[n] for n in names], clip)
            torch._foreach_add_(rates, by_rate, alpha=-opt_lr * rate_scale)
        if opt_wt is None:
            relu = torch._foreach_clamp_min(rates, 0.0)
            torch._foreach_addcmul_(weights, relu, update, value=-scale)
        else:
            torch._foreach_add_(weights, update, alpha=-opt_wt * scale)
    return Step(loss, g_theta)


def glance_order(batch: Batch, generator: torch.Generator) -> Batch:
    """``batch`` reshuffled with ``generator`` (the official code reshuffles every glance)."""
    order = torch.randperm(len(batch.y), generator=generator, device=batch.y.device)
    x = batch.x.index_select(0, order)
    y, task_ids = batch.y.index_select(0, order), batch.task_ids.index_select(0, order)
    return Batch(x, y, task_ids, batch.task, batch.glance)
