"""La-MAML's first-order look-ahead with the fast weights stepped in place, and its update.

Accelerates: the reference of ``strategies/lookahead.py`` (``look_ahead`` and
``la_maml_update``), which builds every fast weight ``theta_k`` as a new dict and
differentiates the meta-loss with ``torch.func``. Here, at first order, the inner steps
move leaf tensors in place (the live weights themselves when they are a composite's own
parameters, given back bit for bit on exit, an error included) and the meta-gradients
are running sums of what autograd hands back: two backward passes per sample, nothing
stacked over the steps, no ``functional_call`` re-registering the parameters. The update
clips with the norm read on the host on the CPU (folded into one ``foreach`` update).

Applies when: first order (``second_order=false``, the default) and the run has ``fast``
on, for any objective. Tested equal to the reference within float rounding, and to
finite differences (``tests/test_meta_learners.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # annotations only: the contracts import this package's closed form
    from lifelong.contracts.parts import Objective, Replay
    from lifelong.contracts.strategy import Batch

__all__ = ["in_place_look_ahead", "in_place_update"]

Params = dict[str, Tensor]


def in_place_look_ahead(
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
    nothing is stacked over ``k`` and no buffer is zeroed. ``params`` are unchanged on
    return.
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


def in_place_update(
    params: Params,
    alpha: Params,
    g_theta: Params,
    g_alpha: Params,
    *,
    opt_lr: float | None,
    opt_wt: float | None,
    clip: float,
) -> None:
    """La-MAML's update of ``params`` and ``alpha`` with ``foreach`` operators: the
    reference's ``alpha -= opt_lr * clip(g_alpha)`` (when ``opt_lr``), then
    ``theta -= relu(alpha) * clip(g_theta)`` or ``theta -= opt_wt * clip(g_theta)``."""
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


def _clipped(grads: list[Tensor], max_norm: float) -> tuple[list[Tensor], float]:
    """``(g, s)`` with ``s * g`` the gradients clipped to a joint norm of ``max_norm``.

    On the CPU the norm is read as a host number (there is no device to wait for) and the
    factor folds into the update that follows, two tensor operators instead of seven;
    elsewhere the clipped tensors themselves come back, with ``s = 1``. The rule is
    ``torch.nn.utils.clip_grad_norm_``'s: scale ``max_norm / (norm + 1e-6)`` when below 1.
    """
    if max_norm <= 0 or not grads:
        return grads, 1.0
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    if grads[0].device.type != "cpu":
        scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
        return list(torch._foreach_mul(grads, scale)), 1.0
    return grads, min(max_norm / (norm.item() + 1e-6), 1.0)
