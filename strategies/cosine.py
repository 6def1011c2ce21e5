"""The ``cosine`` head: normalised weights and features times a learned scale (LUCIR)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, final

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong import Batch, Head, StreamInfo, feature_dim, param


class CosineLinear(nn.Module):
    """``logits = sigma * cos(w_c, f)``: the cosine of the features and each class's weight
    vector, times one learned scale ``sigma`` (LUCIR's ``CosineLinear``).

    Attributes:
        weight: float ``[C, F]``; only its direction matters.
        sigma: float ``[]`` (a parameter when it learns, a buffer otherwise).
    """

    def __init__(self, weight: Tensor, sigma: float, learn_sigma: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        scale = torch.tensor(float(sigma), device=weight.device)
        if learn_sigma:
            self.sigma = nn.Parameter(scale)
        else:
            self.register_buffer("sigma", scale)

    def forward(self, features: Tensor) -> Tensor:
        """``[B, F]`` features -> ``[B, C]`` logits."""
        return self.sigma * F.linear(F.normalize(features, dim=1), F.normalize(self.weight, dim=1))


@final
@dataclass
class CosineHead(Head):
    """Cosine classifier: normalised weights and features with a learned scale (LUCIR).

    Replaces the model's output layer (``head``) by :class:`CosineLinear`, whose weights
    are drawn as LUCIR's (uniform in ``+-1/sqrt(F)``) from the run's generator and whose
    scale ``sigma`` starts at ``scale`` (LUCIR: 1, learned). Every other part then trains
    it as the model's head; the prediction is the model's forward. Normalising removes the
    norm of the newest classes' weights, the bias towards them that a linear head learns
    in class-incremental streams (Hou et al. 2019, Sec. 3.2).

    References: Hou et al. 2019, "Learning a Unified Classifier Incrementally via
    Rebalancing" (CVPR; official code hshustc/CVPR19_Incremental_Learning).
    """

    name: ClassVar[str] = "cosine"
    # Its logits are bounded by sigma (the new classes can lead the old by at most
    # 2 sigma), so a distillation holding the old logits where they were leaves the new
    # classes less room than under a linear head: at DER's 0.5, cosine+der+sync-la-maml
    # (Split-MNIST class-IL, seed 0) ends with its last task at 0.125 and misses the
    # newest task of the composition check (0.5-0.625); at 0.1 every composition of
    # cosine with der learns every task there, in every setting, and the Split-MNIST run's
    # last task reaches 0.69. (0.1: the meta-learned inits' too, lifelong.MetaInit; two
    # parts declaring different values for one key are refused.) It set LwF's lam to 0.5
    # as well while LwF's distillation carried Hinton's T^2 (4 at T=2, so 2 in today's
    # units); LwF's own 1 is now weaker than that.
    partner_defaults: ClassVar[Mapping[str, Mapping[str, Any]]] = {"der": {"lam": 0.1}}
    scale: float = param(1.0, "starting value of the learned scale sigma (LUCIR: 1)", gt=0)
    learn_scale: bool = param(True, "learn sigma (false: keep it fixed at scale)")

    def prepare(self, model: nn.Module, info: StreamInfo, generator: torch.Generator) -> set[str]:
        width = feature_dim(model, "the 'cosine' head")
        device = next(model.parameters()).device
        bound = 1.0 / math.sqrt(width)
        shape = (info.n_outputs * info.n_heads, width)
        weight = torch.rand(shape, generator=generator, device=device) * (2 * bound) - bound
        model.head = CosineLinear(weight, self.scale, self.learn_scale)
        return {name for name, _ in model.named_parameters() if name.startswith("head.")}

    def predict(
        self, model: nn.Module, x: Tensor, task_ids: Tensor, stored: Batch | None
    ) -> Tensor:
        return model(x, task_ids)
