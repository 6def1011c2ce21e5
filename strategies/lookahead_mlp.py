"""La-MAML's first-order look-ahead for a ReLU MLP, its gradients written out by hand.

The same three quantities as the autograd path of ``lookahead.py`` (the meta-loss,
``dL/dtheta`` and ``dL/dalpha``) for the bare cross-entropy of a ``lifelong.MLP`` with one
head, computed from the forward activations and the backpropagated errors of each layer,
with no graph. Two things make it cheaper than differentiating the objective twice per
sample:

- At each fast weight ``theta_k`` the meta batch and the next inner sample go through the
  network together (one matmul per layer for both).
- The first layer's input, the meta batch ``X``, is the same at every ``theta_k``, so its
  gradients are gathered into two matmuls per glance. With ``D_k`` the meta-loss error at
  the first layer's pre-activations at ``theta_k`` (``[M, h]``), ``delta_j``/``x_j`` the
  inner step ``j``'s error and input, and ``S_j = sum_{k>=j} D_k``::

      sum_k dL_k/dW1                = (sum_k D_k)^T X
      sum_k G_k * dL_k/dW1          = sum_{j,m} (delta_j * S_j[m]) (x_j * X[m])^T

  (``G_k = sum_{j<=k} g_j``, the inner gradients so far), so no ``[h, D]`` gradient is
  formed per step. The other layers' terms are accumulated step by step as in
  ``lookahead._first_order``.

Tests check it against the autograd path (``tests/test_meta_learners.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["mlp_look_ahead"]


def mlp_look_ahead(
    weights: list[Tensor],
    alpha: list[Tensor],
    x: Tensor,
    y: Tensor,
    meta_x: Tensor,
    meta_y: Tensor,
    *,
    rate_grads: bool = True,
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """First-order La-MAML look-ahead of a ReLU MLP: meta-loss and its gradients.

    Args:
        weights: ``[W_1, b_1, ..., W_L, b_L]``, ``W_l`` shaped ``[out, in]`` (read only).
        alpha: the learned rates, same shapes (read only); the inner steps use ``relu``.
        x, y: the ``B`` incoming samples ``[B, D]`` and targets, in inner-loop order.
        meta_x, meta_y: the meta batch (incoming + replayed), ``[M, D]`` and targets.
        rate_grads: also return ``dL/dalpha`` (else ``[]``).

    Returns:
        ``(L, dL/dtheta, dL/dalpha)`` as :func:`lookahead.look_ahead` defines them, the
        gradients as lists in ``weights`` order.
    """
    steps, m = len(x), len(meta_x)
    first = weights[0].detach()
    rates = [a.detach().relu() for a in alpha]
    # W_1 at theta_k is W_1 - sum_{j<k} relu(alpha_1) * delta_j x_j^T, so a row r meets it
    # as r W_1^T - sum_{j<k} delta_j * ((r * x_j) relu(alpha_1)^T): the products with every
    # meta row and every inner sample are two matmuls up front.
    products = x[:, None, :] * meta_x[None]  # [B, M, D]: x_j * X_m
    by_meta = (products.view(steps * m, -1) @ rates[0].t()).view(steps, m, -1)
    by_inner = (x[:, None, :] * x[None]).view(steps * steps, -1) @ rates[0].t()
    inner = _inner_loop(weights, rates, x, y, first, by_inner.view(steps, steps, -1))
    deltas, g_steps = inner  # delta_j [B, h]; the inner gradients of the rest, stacked
    # The meta-loss at theta_1..theta_B, all at once: theta_k = theta_0 - rate * G_k.
    g_sums = [g.cumsum(0) for g in g_steps]  # G_k, k = 1..B
    rest = [
        w.detach() - r * g  # [B, *shape]
        for w, r, g in zip(weights[1:], rates[1:], g_sums, strict=True)
    ]
    shift = (deltas[:, None, :] * by_meta).cumsum(0)  # sum_{j<=k} delta_j * (X x_j) r^T
    acts = [(meta_x @ first.t()).sub(shift).add_(rest[0][:, None, :]).relu_()]
    for w, b in zip(rest[1::2], rest[2::2], strict=True):
        out = torch.baddbmm(b[:, None, :], acts[-1], w.transpose(1, 2))
        acts.append(out)
        if len(acts) < len(weights) // 2:
            out.relu_()
    log_p = F.log_softmax(acts.pop(), 2)  # [B, M, C]
    loss = F.nll_loss(log_p.view(steps * m, -1), meta_y.repeat(steps))
    error = log_p.exp_()
    error[:, torch.arange(m, device=x.device), meta_y] -= 1  # x M: divided at the end
    meta_grads: list[Tensor] = []  # d_k of the rest, last layer first
    for w, below in zip(rest[-2:0:-2], reversed(acts), strict=True):
        meta_grads += [error.sum(1), torch.bmm(error.transpose(1, 2), below)]
        error = torch.ops.aten.threshold_backward(torch.bmm(error, w), below, 0)
    meta_grads.append(error.sum(1))
    meta_grads.reverse()
    grads = [error.sum(0).t() @ meta_x, *(d.sum(0) for d in meta_grads)]
    torch._foreach_div_(grads, steps * m)
    if not rate_grads:
        return loss, grads, []
    later = error.flip(0).cumsum(0).flip(0)  # S_j = sum_{k>=j} D_k
    left = (deltas[:, None, :] * later).view(steps * m, -1)
    by_rate = [
        left.t() @ products.view(steps * m, -1),
        *((g * d).sum(0) for g, d in zip(g_sums, meta_grads, strict=True)),
    ]
    for rate, total in zip(rates, by_rate, strict=True):
        total.mul_(-1 / (steps * m)).masked_fill_(rate <= 0, 0)  # relu'(alpha)
    return loss, grads, by_rate


def _inner_loop(
    weights: list[Tensor],
    rates: list[Tensor],
    x: Tensor,
    y: Tensor,
    first: Tensor,
    by_inner: Tensor,
) -> tuple[Tensor, list[Tensor]]:
    """The inner SGD steps, one sample at a time: the first layer's errors ``delta_j``
    and the gradients ``g_j`` of every other tensor, stacked over ``j``."""
    steps, n_layers = len(x), len(weights) // 2
    theta = [w.detach().clone() for w in weights[1:]]  # theta_j but W_1, stepped in place
    g_steps = [x.new_empty(steps, *w.shape) for w in theta]
    deltas = x.new_empty(steps, first.shape[0])
    inner_first = x @ first.t()
    targets = F.one_hot(y, weights[-1].shape[0]).to(x.dtype)
    for k in range(steps):  # sample k at theta_k
        pre = inner_first[k] - (deltas[:k] * by_inner[k, :k]).sum(0)
        acts = [pre.add_(theta[0]).relu_()]
        for layer in range(1, n_layers):
            out = torch.addmv(theta[2 * layer], theta[2 * layer - 1], acts[-1])
            if layer < n_layers - 1:
                acts.append(out.relu_())
        error = out.softmax(0).sub_(targets[k])
        for layer in range(n_layers - 1, 0, -1):
            below = acts[layer - 1]
            g_steps[2 * layer][k] = error
            torch.outer(error, below, out=g_steps[2 * layer - 1][k])
            error = torch.ops.aten.threshold_backward(theta[2 * layer - 1].t() @ error, below, 0)
        deltas[k], g_steps[0][k] = error, error
        if k < steps - 1:
            torch._foreach_addcmul_(theta, rates[1:], [g[k] for g in g_steps], value=-1)
    return deltas, g_steps
