"""The default network: an MLP whose output layer holds one head per task when needed."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MLP"]


class MLP(nn.Module):
    """A ReLU MLP, ``input_dim -> hidden... -> n_heads * n_outputs``.

    Parameters are named ``body.<k>.weight``/``bias`` (the representation, OML's RLN)
    and ``head.weight``/``head.bias`` (the prediction layer, OML's PLN). With several
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

    def forward(self, x: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of the head each sample belongs to.

        Args:
            x: float ``[B, input_dim]``.
            task_ids: int64 ``[B]``; required when the model has several heads.

        Returns:
            float ``[B, n_outputs]``.
        """
        logits = self.head(self.body(x))
        if self.n_heads == 1:
            return logits
        if task_ids is None:
            raise ValueError("a multi-head model needs the task id of every sample")
        heads = logits.view(len(x), self.n_heads, self.n_outputs)
        return heads[torch.arange(len(x), device=x.device), task_ids]
