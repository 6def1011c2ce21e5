"""The ``der`` regularizer: dark experience replay, matching the logits stored in memory."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, final

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from lifelong import Batch, Regularizer, Replay, StreamInfo, param


@final
@dataclass
class Der(Regularizer):
    """DER: the model's logits on replayed samples are pulled toward the logits stored with them.

    ``penalty = mean over the replay batch of ||f(x) - z||^2 / n_outputs`` (a mean squared
    error), ``z`` the logits the model gave ``x`` when it entered the memory. Used with
    ``sgd`` and ``replay`` (the shortcut ``der++``), whose cross-entropy on the joined
    batch supplies DER++'s label term; ``lam`` is DER's alpha. One ``der++`` step (the
    paper's algorithm 1), each line as the composite runs it::

        x_r, y_r, z_r = memory.sample()              # the replay memory
        z = f(x)                                     # logits_to_store(), before the step
        loss = CE(f([x; x_r]), [y; y_r])             # label term: CE on the memory's joined()
             + lam * mean ||f(x_r) - z_r||^2 / C     # logit term: penalty() below
        theta -= lr * grad(loss)                     # the sgd learner
        memory.add(x, y, z)                          # reservoir sampling (replay.py)

    Both terms read the same replay batch, and the label term's weight (DER++'s beta) is
    1, as a cross-entropy over the joined batch weighs it.

    References: Buzzega et al. 2020, "Dark experience for general continual learning: a
    strong, simple baseline" (NeurIPS).
    """

    name: ClassVar[str] = "der"
    reads_gradients: ClassVar[bool] = False  # its observe reads no gradient
    # DER++ (Buzzega et al. 2020): both terms, the replayed cross-entropy and this logit term
    shortcuts: ClassVar[Mapping[str, tuple[str, ...]]] = {"der++": ("replay", "der")}
    needs_memory: ClassVar[bool] = True
    needs_logits: ClassVar[bool] = True
    lam: float = param(0.5, "strength of the logit matching (alpha)", ge=0)

    model: nn.Module = field(init=False, repr=False, compare=False)

    def setup(self, model: nn.Module, info: StreamInfo, generator: torch.Generator) -> None:
        self.model = model

    @torch.no_grad()
    def logits_to_store(self, batch: Batch) -> Tensor:
        """``z = f(x)``, kept with the incoming samples: the outputs the model trains them
        at, taken before the step updates the weights (algorithm 1: z = h(x); step; store z)."""
        return self.model(batch.x, batch.task_ids)

    def penalty(self, params: dict[str, Tensor], batch: Batch, replay: Replay | None) -> Tensor:
        """The logit term: MSE between the model's logits on the replayed samples and the
        logits stored with them (0 while the memory is empty)."""
        if replay is None:
            return batch.x.new_zeros(())
        stored = replay.batch
        return F.mse_loss(
            functional_call(self.model, params, (stored.x, stored.task_ids)), replay.logits
        )
