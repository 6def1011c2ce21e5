"""La-MAML's first-order look-ahead for a ReLU MLP, its gradients written out by hand.

Accelerates: :func:`lifelong.strategies.lookahead.look_ahead` at first order, whose
reference differentiates the objective with autograd twice per sample (about 2x faster on
the La-MAML MNIST protocol). Applies when: the objective declares a closed form with no
penalty (:class:`lifelong.fast.ClosedForm`: the model is a :class:`lifelong.ClosedFormModel`,
every weight learns, the run has ``fast`` on). Tested equal to the reference to 1e-12 in
float64 (``tests/test_meta_learners.py``).

The same three quantities as the autograd path of ``lookahead.py`` (the meta-loss,
``dL/dtheta`` and ``dL/dalpha``) for the bare cross-entropy of a ``lifelong.MLP`` with one
head, computed from the forward activations and the backpropagated errors of each layer,
with no graph. What makes it cheaper than differentiating the objective twice per sample:

- The first layer's input is the same at every fast weight ``theta_k``: the meta batch
  ``X`` (the incoming samples first, then the replayed ones). With ``r = relu(alpha_1)``,
  ``W_1`` at ``theta_k`` is ``W_1 - sum_{j<k} r * delta_j x_j^T``, so a row ``X_m`` meets it
  as ``X_m W_1^T - sum_{j<k} delta_j * ((x_j * X_m) r^T)``: every such product is one
  matmul up front, shared by the inner steps (``X_m`` an incoming sample) and the
  meta-losses. With ``D_k`` the meta-loss error at the first layer's pre-activations at
  ``theta_k`` and ``S_j = sum_{k>=j} D_k``, the first layer's gradients are two more::

      sum_k dL_k/dW1                = (sum_k D_k)^T X
      sum_k G_k * dL_k/dW1          = sum_{j,m} (delta_j * S_j[m]) (x_j * X[m])^T

  (``G_k = sum_{j<=k} g_j``, the inner gradients so far), so no ``[h, D]`` gradient is
  formed per step.
- On the CPU those products are compiled loops over the pixels both rows ink
  (``lookahead_kernel.py``, numba); elsewhere they are matmuls over the input columns
  some row inks. Blank pixels' gradients are exactly zero.
- The inner loop keeps every other tensor in one flat vector: a step is the forward and
  backward of one sample, one update of the weights and one of the first-layer
  pre-activations of the samples still to come (compiled on the CPU, about fourteen
  PyTorch operators elsewhere).
- The meta-losses at all ``theta_k`` are one batched pass (``bmm`` over ``k``).

Tests check it against the autograd path (``tests/test_meta_learners.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .lookahead_kernel import (
    compiled_inner_loop,
    compiled_meta_sums,
    compiled_pair_products,
    compiled_pair_rate_grads,
)

__all__ = ["mlp_look_ahead"]


@torch.no_grad()
def mlp_look_ahead(
    weights: list[Tensor],
    alpha: list[Tensor],
    x: Tensor,
    y: Tensor,
    replay_x: Tensor | None = None,
    replay_y: Tensor | None = None,
    *,
    rate_grads: bool = True,
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """First-order La-MAML look-ahead of a ReLU MLP: meta-loss and its gradients.

    Args:
        weights: ``[W_1, b_1, ..., W_L, b_L]``, ``W_l`` shaped ``[out, in]`` (read only).
        alpha: the learned rates, same shapes (read only); the inner steps use ``relu``.
        x, y: the ``B`` incoming samples ``[B, D]`` and targets, in inner-loop order.
        replay_x, replay_y: the replayed samples, which join ``x`` in the meta batch.
        rate_grads: also return ``dL/dalpha`` (else ``[]``).

    Returns:
        ``(L, dL/dtheta, dL/dalpha)`` as :func:`lookahead.look_ahead` defines them, the
        gradients as lists in ``weights`` order.
    """
    steps, later = len(x), weights[1:]  # later: b_1, W_2, b_2, ..., W_L, b_L
    x = x.flatten(1)  # images [B, C, H, W]: the MLP's flat rows
    meta_x = x if replay_x is None else torch.cat([x, replay_x.flatten(1)])
    meta_y = y if replay_y is None else torch.cat([y, replay_y])
    m, scale = len(meta_x), 1 / (steps * len(meta_x))
    first = _FirstLayerPairs(meta_x, steps, alpha[0])
    rated = first.rated  # [B, M, h]: (x_j * X_m) relu(alpha_1)^T
    pre = meta_x @ weights[0].t()  # [M, h]: X W_1^T (all columns: cheaper than a copy of W_1)
    sizes = [w.numel() for w in later]
    theta = torch.cat([w.reshape(-1) for w in later])
    rate = torch.cat([r.reshape(-1) for r in alpha[1:]]).clamp_min_(0.0)
    widths = [len(later[0]), *(len(w) for w in later[1::2])]
    stepped = compiled_inner_loop(widths, theta, rate, y, pre, rated)
    if stepped is None:
        stepped = _inner_loop(later, sizes, theta, rate, y, pre, rated)
    # g_k; theta_k = theta_0 - rate * G_k; every row's first-layer output at theta_k (k = 1..B)
    inner, fast_flat, out = stepped
    # The meta-loss at theta_1..theta_B, all at once.
    fast = _unflatten(fast_flat, later, sizes)
    deltas = inner[:, : len(later[0])]  # delta_j: b_1's inner gradients
    acts: list[Tensor] = []
    for w, b in zip(fast[1::2], fast[2::2], strict=True):
        acts.append(out.relu_() if acts else out)
        out = torch.baddbmm(b[:, None, :], acts[-1], w.transpose(1, 2))
    log_p = F.log_softmax(out, 2)  # [B, M, C]
    loss = F.nll_loss(log_p.view(steps * m, -1), meta_y.repeat(steps))
    error = log_p.exp_()
    error.sub_(F.one_hot(meta_y, error.shape[2]))  # x M: scaled at the end
    by_layer: list[Tensor] = []  # d_k of b_L, W_L, ..., b_1, each [B, -1]
    for w, below in zip(fast[-2:0:-2], reversed(acts), strict=True):
        by_layer += [error.sum(1), torch.bmm(error.transpose(1, 2), below).view(steps, -1)]
        error = torch.ops.aten.threshold_backward(torch.bmm(error, w), below, 0)
    by_layer.append(error.sum(1))
    meta = torch.cat(by_layer[::-1], 1)  # d_k of b_1, W_2, ..., b_L, flat
    first_grad = error.sum(0).mul_(scale).t() @ meta_x  # all columns: cheaper than widening
    summed = compiled_meta_sums(inner, meta, rate, scale)
    total, rest_rate = summed if summed is not None else _meta_sums(inner, meta, rate, scale)
    grads = [first_grad, *_unflatten(total, later, sizes)]
    if not rate_grads:
        return loss, grads, []
    first_rate = first.rate_grad(error, deltas, scale)
    return loss, grads, [first_rate, *_unflatten(rest_rate, later, sizes)]


class _FirstLayerPairs:
    """The products of every incoming row with every meta-batch row, seen by the first
    layer: ``rated[j, m] = (x_j * X_m) relu(alpha_1)^T``, and the first layer's rate
    gradient (:meth:`rate_grad`), a sum over the same products.

    Compiled on the CPU, over the pixels each pair inks in common
    (``lookahead_kernel.compiled_pair_products``); otherwise two matmuls over the columns
    some row inks (all of them away from the CPU, where the check would wait for the
    device)."""

    def __init__(self, meta_x: Tensor, steps: int, alpha: Tensor):
        self.meta_x, self.steps, self.alpha = meta_x, steps, alpha
        self.dense: tuple[Tensor, Tensor, Tensor | None] | None = None
        rated = compiled_pair_products(meta_x, steps, alpha)
        if rated is None:
            products, rates, _ = self._dense()
            rated = (products @ rates.t()).view(steps, len(meta_x), -1)
        self.rated = rated

    def rate_grad(self, error: Tensor, deltas: Tensor, scale: float) -> Tensor:
        """The first layer's rate gradient ``[h, D]``, ``relu'(alpha_1) * sum_{j,m}
        left[j, m] (x_j * X_m)^T`` with ``left[j, m] = -scale * delta_j * S_j[m]``:
        ``error`` ``[B, M, h]`` is the meta-losses' error ``D_k`` at the first layer,
        ``S_j = sum_{k>=j} D_k``, and ``deltas`` ``[B, h]`` the inner steps' errors there."""
        deltas = deltas.contiguous()  # a slice of the inner gradients
        part = compiled_pair_rate_grads(self.meta_x, self.steps, error, deltas, scale, self.alpha)
        if part is not None:
            return part
        later_sums = error.flip(0).cumsum(0).flip(0)  # S_j
        left = (deltas[:, None, :] * later_sums).mul_(-scale)  # [B, M, h]
        products, rates, columns = self._dense()
        part = (left.flatten(0, 1).t() @ products).mul_(rates > 0)
        return _widen(part, columns, self.alpha)

    def _dense(self) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(x_j * X_m [B * M, D'], relu(alpha_1) [h, D'], the D' columns or None)``,
        computed on first use."""
        if self.dense is not None:
            return self.dense
        inputs, rates = self.meta_x, self.alpha
        columns = _inked_columns(inputs)
        if columns is not None:
            inputs, rates = inputs.index_select(1, columns), rates.index_select(1, columns)
        products = (inputs[: self.steps, None, :] * inputs[None]).flatten(0, 1)
        self.dense = products, rates.clamp_min(0.0), columns
        return self.dense


def _meta_sums(grads: Tensor, meta: Tensor, rate: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """``scale * sum_k d_k`` and ``-scale * relu'(alpha) * sum_k G_k * d_k`` (flat ``[P]``):
    what ``lookahead_kernel.compiled_meta_sums`` computes, in PyTorch operators."""
    by_rate = torch.linalg.vecdot(grads.cumsum(0), meta, dim=0)  # G_k = sum_{j<=k} g_j
    return meta.sum(0).mul_(scale), by_rate.mul_(rate.sign()).mul_(-scale)


def _inner_loop(
    later: list[Tensor],
    sizes: list[int],
    theta: Tensor,
    rate: Tensor,
    y: Tensor,
    pre: Tensor,
    rated: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """The inner SGD steps, one sample at a time, in PyTorch operators: what
    ``lookahead_kernel.compiled_inner_loop`` computes (its arguments and results).

    ``later`` is ``b_1, W_2, b_2, ..., W_L, b_L`` (their shapes; ``theta`` holds the values,
    flattened and joined) and ``sizes`` their sizes in ``theta``.
    """
    steps, theta_0, width = len(y), theta, len(later[0])
    # Sample k's first-layer pre-activation at theta_k, fixed up step by step with
    # delta_j * (rated[j, k] + relu(alpha_b1)) (b_1's own step folded in).
    pending, fixes = pre[:steps] + later[0], rated[:, :steps] + rate[:width]
    theta = theta.clone()
    grads = theta.new_empty(steps, len(theta))
    params = _unflatten(theta, later, sizes)
    by_step = [g.unbind(0) for g in _unflatten(grads, later, sizes)]
    layers = list(zip(params[1::2], params[2::2], strict=True))  # (W_l, b_l), l = 2..L
    backward = list(zip([w.t() for w, _ in layers], by_step[1::2], by_step[0:-1:2], strict=True))[
        ::-1
    ]  # (W_l^T, grads of W_l, grads of b_{l-1}), l = L..2
    targets = F.one_hot(y, later[-1].shape[0]).to(theta.dtype).unbind(0)
    rows, steps_grads, step_fixes = pending.unbind(0), grads.unbind(0), fixes.unbind(0)
    for k in range(steps):  # sample k at theta_k
        out, acts = rows[k], list[Tensor]()
        for w, b in layers:
            acts.append(out.relu_() if acts else out.relu())
            out = torch.addmv(b, w, acts[-1])
        error = torch.sub(out.softmax(0), targets[k], out=by_step[-1][k])
        for (w_t, w_grads, b_grads), below in zip(backward, reversed(acts), strict=True):
            torch.outer(error, below, out=w_grads[k])
            error = _relu_backward(torch.mv(w_t, error), below, 0, grad_input=b_grads[k])
        if k < steps - 1:
            theta.addcmul_(rate, steps_grads[k], value=-1)
            pending.addcmul_(step_fixes[k], error, value=-1)
    fast = torch.addcmul(theta_0, rate, grads.cumsum(0), value=-1)
    shift = (grads[:, None, :width] * rated).cumsum(0)  # sum_{j<=k} delta_j * rated[j]
    first = (pre - shift).add_(fast[:, None, :width])  # [B, M, h]
    return grads, fast, first.relu_() if len(layers) else first


_relu_backward = torch.ops.aten.threshold_backward.grad_input  # (error, act, 0, *, out)


def _unflatten(flat: Tensor, like: list[Tensor], sizes: list[int]) -> list[Tensor]:
    """Views of ``flat``, ``[P]`` or batched ``[B, P]``, shaped as ``like``."""
    if flat.dim() == 1:
        pieces = torch.split_with_sizes(flat, sizes)
        return [t.view(w.shape) for t, w in zip(pieces, like, strict=True)]
    pieces, steps = torch.split_with_sizes(flat, sizes, 1), flat.shape[0]
    return [t.view(steps, *w.shape) for t, w in zip(pieces, like, strict=True)]


def _inked_columns(meta_x: Tensor) -> Tensor | None:
    """The input columns not zero in every row, on the CPU when some are (else None).

    Elsewhere the check would wait for the device, so every column is kept."""
    if meta_x.device.type != "cpu":
        return None
    columns = meta_x.any(0).nonzero().squeeze(1)
    return None if len(columns) == meta_x.shape[1] else columns


def _widen(part: Tensor, columns: Tensor | None, like: Tensor) -> Tensor:
    """``part``, ``[h, D']``, put into the ``columns`` of a zero tensor shaped as ``like``."""
    if columns is None:
        return part
    return part.new_zeros(like.shape).index_copy_(1, columns, part)
