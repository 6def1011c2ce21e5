"""GSS: keep the stored samples whose gradients point in the most different directions.

The selection rule of the ``replay`` memory's ``select=gss`` option (the shortcut ``gss`` is
``sgd`` with that memory). GSS-Greedy (Aljundi et al. 2019, section 3.3 and its
supplementary algorithm), as the official code and Mammoth's port (``utils/gss_buffer.py``)
run it. Every stored sample keeps a score; for an incoming batch::

    G = per-sample gradients of `candidates` random stored samples
    c_B = max_j cos(g_B, G_j) + 1        # g_B: the gradient of the batch's mean loss
    while the memory has room: store each sample with score c_B (0.1 while empty)
    else, if c_B < 1 (the batch is not aligned with any sampled memory gradient):
        for each sample i:  c_i = max_j cos(g_i, G_j) + 1
            draw a slot k with probability score_k / sum(score)
            with probability score_k / (score_k + c_i): sample i replaces slot k, score c_i

A sample whose gradient is opposite to every sampled stored one (``c_i = 0``) always
replaces the slot it draws; a batch aligned with the memory (``c_B >= 1``) stores nothing.
So the memory drifts toward gradient-diverse samples, which is the paper's surrogate for
maximising the feasible region of the constraints that replay imposes.

References: Aljundi, Lin, Goujaud & Bengio 2019, "Gradient based sample selection for
online continual learning" (NeurIPS); Mammoth ``utils/gss_buffer.py`` (defaults there:
``gss_minibatch_size`` 10, batch 10).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from lifelong import Batch, eval_mode

Params = dict[str, Tensor]
EMPTY_SCORE = 0.1  # the score of samples stored while the memory had nothing to compare with


def sample_gradients(model: nn.Module, params: Params, batch: Batch) -> Tensor:
    """Each sample's cross-entropy gradient, flattened over every parameter: ``[N, P]``."""
    frozen = {n: p.detach() for n, p in params.items()}

    def loss(p: Params, x: Tensor, y: Tensor, t: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(model, p, (x[None], t[None])), y[None])

    with eval_mode(model):  # one-sample forwards: batch norm's running statistics, untouched
        per_sample = vmap(grad(loss), in_dims=(None, 0, 0, 0))(
            frozen, batch.x, batch.y, batch.task_ids
        )
    return torch.cat([g.flatten(1) for g in per_sample.values()], dim=1)


def batch_gradient(model: nn.Module, params: Params, batch: Batch) -> Tensor:
    """The gradient of the batch's mean cross-entropy, flattened: ``[1, P]``."""
    live = {n: p.detach().requires_grad_(True) for n, p in params.items()}
    with eval_mode(model):  # a score, not a step: the running statistics stay
        logits = functional_call(model, live, (batch.x, batch.task_ids))
    grads = torch.autograd.grad(
        F.cross_entropy(logits, batch.y), tuple(live.values()), materialize_grads=True
    )
    return torch.cat([g.flatten() for g in grads])[None]


def similarity_scores(gradients: Tensor, stored: Tensor) -> Tensor:
    """GSS's score of each row of ``gradients [N, P]``: ``max_j cos(g, stored_j) + 1``,
    in [0, 2] (0: opposite to every stored gradient; 2: parallel to one)."""
    # Unit rows and one matrix product: broadcasting cosine_similarity over [N, M, P]
    # took 96% of a GSS run.
    cos = F.normalize(gradients, dim=1, eps=1e-8) @ F.normalize(stored, dim=1, eps=1e-8).T
    return cos.max(dim=1).values + 1


class Cosines:
    """GSS's scores against the per-sample gradients of ``stored`` samples (autograd):
    ``max_j cos(g, G_j) + 1`` for a batch's mean gradient or for each of its samples.

    On a model with closed-form gradients :class:`lifelong.fast.MlpCosines` gives the same
    scores from Gram matrices of each layer's factors, with no per-sample gradient formed.
    """

    def __init__(self, model: nn.Module, params: Params, stored: Batch) -> None:
        self.model, self.params = model, params
        self.stored = sample_gradients(model, params, stored)

    def batch_score(self, batch: Batch) -> Tensor:
        """0-d: ``c_B``, the score of the gradient of ``batch``'s mean loss."""
        return similarity_scores(batch_gradient(self.model, self.params, batch), self.stored)[0]

    def sample_scores(self, batch: Batch) -> Tensor:
        """``[N]``: ``c_i``, each sample's score."""
        return similarity_scores(sample_gradients(self.model, self.params, batch), self.stored)


def greedy_slots(
    sample_scores: Tensor, slot_scores: Tensor, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """GSS-Greedy's decisions for a full memory, sample by sample.

    Args:
        sample_scores: float ``[B]``, each incoming sample's :func:`similarity_scores`.
        slot_scores: float ``[S]``, the stored samples' scores (updated as samples land).
        generator: the draws.

    Returns:
        ``(slots [B], scores [S])``: the slot each sample replaces (``S``: none) and the
        slots' scores afterwards.
    """
    scores = slot_scores.clone()
    slots = torch.full_like(sample_scores, len(scores), dtype=torch.long)
    for i, c in enumerate(sample_scores):
        k = torch.multinomial(scores.clamp_min(1e-12), 1, generator=generator)[0]
        u = torch.rand((), generator=generator, device=scores.device)
        if u * (scores[k] + c) < scores[k]:
            slots[slots == k] = len(scores)  # a later sample in the same slot wins
            slots[i], scores[k] = k, c
    return slots, scores
