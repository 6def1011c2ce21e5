"""Cross-entropy gradients and plain SGD steps of ``S`` one-head MLPs at once, by hand.

Accelerates: ``--vectorize``'s step (:mod:`lifelong.execution.vectorized`), whose reference
is ``vmap`` of ``functional_call`` over the stacked weights and one autograd backward pass
of the seeds' summed losses. These are :func:`lifelong.fast.cross_entropy_grads` and
:func:`lifelong.fast.cross_entropy_descent` with every matrix product batched over the
seeds (``bmm``, ``baddbmm``), so each seed's numbers are exactly those of its own run's
closed-form step.

Applies when: every seed's model declares closed-form gradients
(:class:`lifelong.ClosedFormModel`, the one-head :class:`lifelong.MLP`), the objective is
the cross-entropy (with quadratic penalties for the gradients, bare for the descent), the
learner's step stacks (``sgd``: :meth:`lifelong.Learner.stacked_sgd`) and the run has
``fast`` on. Tested against the single-seed closed form and the sequential runs in
``tests/test_closed_form.py`` and ``tests/test_vectorized.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["stacked_mlp_cross_entropy_descent", "stacked_mlp_cross_entropy_grads"]


@torch.no_grad()
def stacked_mlp_cross_entropy_descent(
    weights: Sequence[Tensor], x: Tensor, y: Tensor, lr: float
) -> Tensor:
    """:func:`lifelong.fast.cross_entropy_descent` for ``S`` MLPs at once (``--vectorize``'s
    seeds), each weight matrix by one batched product into itself: every seed's weights
    move as its own run's do. ``weights``, ``x``, ``y`` as
    :func:`stacked_mlp_cross_entropy_grads` takes them (the weights moved in place).

    Returns:
        ``[S]``: each network's mean cross-entropy before the step.
    """
    loss, acts, error = _stacked_forward(weights, x, y)
    for layer in range(len(acts) - 1, -1, -1):
        matrix, below = weights[2 * layer], acts[layer]
        lower = (
            torch.ops.aten.threshold_backward(torch.bmm(error, matrix), below, 0)
            if layer
            else error
        )
        matrix.baddbmm_(error.transpose(1, 2), below, alpha=-lr)
        weights[2 * layer + 1].sub_(error.sum(1), alpha=lr)
        error = lower
    return loss


def _stacked_forward(
    weights: Sequence[Tensor], x: Tensor, y: Tensor
) -> tuple[Tensor, list[Tensor], Tensor]:
    """Each network's mean cross-entropy ``[S]``, every layer's input and the error at the
    output, ``(softmax - one_hot(y)) / N``, at the weights as they are."""
    weights = [w.detach() for w in weights]
    n_layers, (stacks, n) = len(weights) // 2, y.shape
    acts = [x]
    for layer in range(n_layers):
        w, b = weights[2 * layer], weights[2 * layer + 1]
        out = torch.baddbmm(b[:, None, :], acts[-1], w.transpose(1, 2))
        if layer < n_layers - 1:
            acts.append(out.relu_())
    log_p = F.log_softmax(out, 2)
    picked = log_p.gather(2, y[..., None])
    loss = picked.view(stacks, n).mean(1).neg_()
    error = log_p.exp_()
    error.scatter_add_(2, y[..., None], torch.full_like(picked, -1.0))
    return loss, acts, error.div_(n)


def stacked_mlp_cross_entropy_grads(
    weights: Sequence[Tensor], x: Tensor, y: Tensor
) -> tuple[Tensor, list[Tensor]]:
    """:func:`lifelong.fast.cross_entropy_grads` for ``S`` MLPs at once (``--vectorize``'s
    seeds).

    Args:
        weights: ``(W_1, b_1, ..., W_L, b_L)`` stacked over the first dimension,
            ``W_l`` shaped ``[S, out, in]``, ``b_l`` ``[S, out]`` (read only).
        x: float ``[S, N, D]``, network ``s`` sees ``x[s]``; y: int64 ``[S, N]``.

    Returns:
        ``(loss [S], [dW_1, db_1, ...])``: each network's mean cross-entropy and gradient.
    """
    loss, acts, error = _stacked_forward(weights, x, y)
    weights = [w.detach() for w in weights]
    grads: list[Tensor] = []
    for layer in range(len(acts) - 1, -1, -1):
        below = acts[layer]
        grads += [error.sum(1), torch.bmm(error.transpose(1, 2), below)]
        if layer:
            error = torch.ops.aten.threshold_backward(
                torch.bmm(error, weights[2 * layer]), below, 0
            )
    grads.reverse()
    return loss, grads
