"""The model contract's shared pieces and the default network, an MLP whose output layer
holds one head per task when needed.

A model (see docs/models.md) is an ``nn.Module`` with ``forward(x, task_ids=None) ->
[B, n_outputs]``, a ``body`` (``[B, ...] -> [B, feature_dim]`` features) and a ``head``
(``[B, feature_dim] -> [B, n_outputs * n_heads]``); its parameter names start with ``body.``
or ``head.``. The convolutional built-ins live in :mod:`lifelong.models.convnets`, the model axis
(names, fields, the one builder) in :mod:`lifelong.models.axis`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "MLP",
    "ClosedFormModel",
    "head_logits",
    "stacked_mlp_cross_entropy_descent",
    "stacked_mlp_cross_entropy_grads",
    "stacked_mlp_logits",
]


class ClosedFormModel(abc.ABC):
    """A capability a model declares: its cross-entropy gradients have a closed form.

    A model that inherits this and returns True from :meth:`closed_form_grads` promises
    that its forward is ``relu(x W^T + b)`` layers ending in a linear layer, with its
    parameters ``(W_1, b_1, ..., W_L, b_L)`` in that order, so that
    :mod:`lifelong.fast` may compute its gradients by hand instead of by autograd.
    """

    @abc.abstractmethod
    def closed_form_grads(self) -> bool:
        """Whether the promise holds for this instance (a subclass that changes the
        forward returns False)."""


class MLP(nn.Module, ClosedFormModel):
    """A ReLU MLP, ``input_dim -> hidden... -> n_heads * n_outputs``.

    Parameters are named ``body.<k>.weight``/``bias`` (the representation) and
    ``head.weight``/``head.bias`` (the prediction layer); OML's PLN is the last
    ``pln_layers`` of these Linear layers, its RLN the rest. With several
    heads the output layer is one matrix and a sample reads the slice of its task, which
    equals separate heads and keeps the forward one matmul.
    """

    def __init__(
        self, input_dim: int, hidden: Sequence[int], n_outputs: int, n_heads: int = 1
    ) -> None:
        super().__init__()
        widths = [input_dim, *hidden]
        self.body = nn.Sequential(
            *(
                layer
                for i in range(len(hidden))
                for layer in (nn.Linear(widths[i], widths[i + 1]), nn.ReLU())
            )
        )
        self.head = nn.Linear(widths[-1], n_outputs * n_heads)
        self.n_outputs = n_outputs
        self.n_heads = n_heads
        self.feature_dim = widths[-1]

    def closed_form_grads(self) -> bool:
        """One head: the logits are the last layer's output (several heads slice it)."""
        return self.n_heads == 1

    def forward(self, x: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of the head each sample belongs to.

        Args:
            x: float ``[B, input_dim]`` or ``[B, *input_shape]`` (flattened here).
            task_ids: int64 ``[B]``; required when the model has several heads.

        Returns:
            float ``[B, n_outputs]``.
        """
        if x.dim() > 2:
            x = x.flatten(1)
        return head_logits(self.head(self.body(x)), task_ids, self.n_heads, self.n_outputs)


def head_logits(
    logits: torch.Tensor, task_ids: torch.Tensor | None, n_heads: int, n_outputs: int
) -> torch.Tensor:
    """The slice of each sample's own head: ``[B, n_heads * n_outputs] -> [B, n_outputs]``
    (the logits themselves for one head).

    Raises:
        ValueError: several heads and no ``task_ids``.
    """
    if n_heads == 1:
        return logits
    if task_ids is None:
        raise ValueError("a multi-head model needs the task id of every sample")
    heads = logits.view(len(logits), n_heads, n_outputs)
    return heads[torch.arange(len(logits), device=logits.device), task_ids]


def stacked_mlp_logits(weights: Sequence[Tensor], x: Tensor) -> Tensor:
    """The logits of ``S`` one-head :class:`MLP` s at once: ``x [S, N, D]`` -> ``[S, N, C]``.

    ``weights`` as :func:`stacked_mlp_cross_entropy_grads` takes them; no graph is kept.
    """
    out = x
    for layer in range(len(weights) // 2):
        w, b = weights[2 * layer].detach(), weights[2 * layer + 1].detach()
        if layer:
            out = out.relu_()
        out = torch.baddbmm(b[:, None, :], out, w.transpose(1, 2))
    return out


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
    """:func:`mlp_cross_entropy_grads` for ``S`` MLPs at once (``--vectorize``'s seeds).

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
