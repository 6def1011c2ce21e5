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
from torch import nn

__all__ = [
    "MLP",
    "ClosedFormModel",
    "head_logits",
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
        """One head, and its output layer still its own Linear: the logits are the last
        layer's output (several heads slice it; a head part that replaces the layer, as
        ``cosine`` does, ends the promise)."""
        return self.n_heads == 1 and type(self.head) is nn.Linear

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
