"""MIR: replay the stored samples whose loss a virtual step on the incoming batch raises most.

The retrieval rule of the ``replay`` memory's ``retrieve=mir`` option (the shortcut ``mir``
is ``sgd`` with that memory; ``la-maml --set replay.retrieve=mir`` gives La-MAML the same
retrieval). One step of ER-MIR (Aljundi et al. 2019, algorithm 1)::

    theta_v = theta - lr * grad CE(f(x), y)                 # a virtual step, not taken
    C = candidates random stored samples                     # the subsample
    s_c = CE(f_theta_v(x_c), y_c) - CE(f_theta(x_c), y_c)    # interference of each candidate
    replay the `batch` candidates with the largest s_c       # Reservoir.sample_for
    theta -= lr * grad CE(f([x; x_r]), [y; y_r])             # the learner's real step

Defaults: the official code's MNIST runs (optimass/Maximally_Interfered_Retrieval):
``subsample`` 50 candidates, memory batch 10, the virtual step at the learning rate (0.1),
reservoir-sampled memory.

References: Aljundi, Caccia, Belilovsky, Caccia, Lin, Charlin & Tuytelaars 2019, "Online
continual learning with maximally interfered retrieval" (NeurIPS).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from lifelong import Batch

Params = dict[str, Tensor]


def interference(
    model: nn.Module, params: Params, incoming: Batch, candidates: Batch, lr: float
) -> Tensor:
    """How much each candidate's loss rises under one virtual SGD step on ``incoming``.

    Args:
        model: the network, used only through ``functional_call``.
        params: its weights by name (not modified).
        incoming: the batch about to be learned.
        candidates: stored samples, ``x [C, D]``, ``y [C]``.
        lr: the virtual step's learning rate.

    Returns:
        float ``[C]``: ``CE(theta_v; x_c, y_c) - CE(theta; x_c, y_c)`` per candidate,
        ``theta_v = theta - lr * grad CE(theta; incoming)``.
    """
    live = {n: p.detach().requires_grad_(True) for n, p in params.items()}
    loss = F.cross_entropy(_logits(model, live, incoming), incoming.y)
    grads = torch.autograd.grad(loss, tuple(live.values()), allow_unused=True)
    with torch.no_grad():
        virtual = {
            n: p if g is None else p - lr * g for (n, p), g in zip(live.items(), grads, strict=True)
        }
        before = F.cross_entropy(_logits(model, live, candidates), candidates.y, reduction="none")
        after = F.cross_entropy(_logits(model, virtual, candidates), candidates.y, reduction="none")
    return after - before


def most_interfered(scores: Tensor, count: int) -> Tensor:
    """Indices of the ``count`` largest ``scores`` (all of them when there are fewer)."""
    return scores.topk(min(count, len(scores))).indices


def _logits(model: nn.Module, params: Params, batch: Batch) -> Tensor:
    return functional_call(model, params, (batch.x, batch.task_ids))
