"""ProtoNets as an init: a representation meta-trained with the prototypical loss.

The init is meta-trained before the stream on tasks disjoint from it
(:class:`lifelong.MetaInit`: the pool, the seeded start and the disk cache), then written
into the run's model; it is meant for the ``ncm`` head (``protonet+ncm``,
``protonet+er+ncm``), which classifies by the same nearest prototype.

References: Snell, Swersky & Zemel 2017, "Prototypical Networks for Few-shot Learning"
(NeurIPS; official code jakesnell/prototypical-networks).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, final

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from lifelong import (
    MetaInit,
    MetaStart,
    MetaTaskSource,
    Params,
    StreamInfo,
    apply_gradients,
    class_means,
    feature_dim,
    meta_gradient,
    param,
)

BODY = "body."


def prototypical_loss(support: Tensor, support_y: Tensor, query: Tensor, query_y: Tensor) -> Tensor:
    """Snell et al. 2017, Eq. 1-2: cross-entropy of ``-||f(q) - c_k||^2`` over the classes
    ``k`` whose prototype ``c_k`` (mean support embedding) exists.

    Args:
        support, query: float ``[S, F]`` and ``[Q, F]`` embeddings; *_y: int64 labels.
    """
    n = int(torch.cat([support_y, query_y]).max()) + 1
    means, held = class_means(support, support_y, n)
    logits = -torch.cdist(query, means).pow(2)
    logits = logits.masked_fill(~held, float("-inf"))
    keep = held[query_y]  # a query whose class has no support sample has no target
    return F.cross_entropy(logits[keep], query_y[keep])


@final
@dataclass
class ProtoNetInit(MetaInit):
    """ProtoNets: a body meta-trained so that class means of its features classify.

    Each meta update averages ``tasks_per_batch`` episodes: ``ways`` classes gathered from
    the pool's tasks (:func:`episode`), ``support`` and ``query`` samples of each, the
    prototypical loss of the query against the support's class means of the ``body``
    features (:func:`prototypical_loss`); one Adam step on the body. With ``freeze`` (the
    default) the body stays fixed in the stream, as a ProtoNet's embedding is at test
    time, so the ``ncm`` head's running means never go stale; the output layer (unused by
    ``ncm``) learns. It sets the ``ncm`` head's ``from_memory`` to false: running means are
    the exact means of the frozen features, where a memory's few samples per class would
    only estimate them (``--set ncm.from_memory=true`` gives those back).

    Defaults: Adam at 1e-3 (the paper's); 10 support and 15 query samples per class of a
    task (the paper's 5-shot training used 15 queries per class); 10-way episodes, more
    classes than a stream's task holds, as the paper trains with a higher way than it tests
    (60-way on Omniglot and 20- or 30-way on miniImageNet for 5-way tests: "it is
    advantageous"). The ``ncm`` head tells apart every class of the stream (class-IL) or
    every task's prototypes (domain-IL), not one task's two. Episodes of one Split-MNIST
    task's two digits (``ways=1``: at least a task's) left ``ncm+protonet`` at chance on the
    last domain-IL task (seed 0 [0.98, 0.83, 0.83, 0.625, 0.58], ACC 0.714) and at ACC
    0.567 in class-IL; 10-way: [0.98, 0.89, 0.875, 0.715, 0.74], ACC 0.775, and 0.625.

    References: Snell et al. 2017, "Prototypical Networks for Few-shot Learning".
    """

    name: ClassVar[str] = "protonet"
    stream_fields: ClassVar[tuple[str, ...]] = ("source", "freeze")  # one cached init for both
    # A frozen body's running class means are exact; a memory's few samples only estimate them.
    # (It does not declare the meta-learned inits' der.lam 0.1, strategies/maml.py: a ProtoNet
    # learns no output layer, so its first logits are a random layer's, and DER keeps its own.)
    partner_defaults: ClassVar[Mapping[str, Mapping[str, Any]]] = {"ncm": {"from_memory": False}}
    tasks_per_batch: int = param(4, "episodes averaged in one meta update", ge=1)
    support: int = param(10, "support samples per class of an episode", ge=1)
    query: int = param(15, "query samples per class of an episode", ge=1)
    outer_lr: float = param(1e-3, "Adam learning rate of the meta update", gt=0)
    freeze: bool = param(True, "keep the meta-trained body fixed in the stream")
    ways: int = param(
        10, "classes of a training episode (at least a stream task's, at most the pool's)", ge=1
    )

    def check(self, model: nn.Module, info: StreamInfo) -> None:
        feature_dim(model, "the 'protonet' init")
        super().check(model, info)

    def prepare(
        self, model: nn.Module, info: StreamInfo, generator: torch.Generator
    ) -> set[str] | None:
        self.load_meta_trained(model, info)
        if not self.freeze:
            return None
        for n, p in model.named_parameters():
            p.requires_grad_(not n.startswith(BODY))
        return {n for n, _ in model.named_parameters() if not n.startswith(BODY)}

    def meta_train(self, model: nn.Module, tasks: MetaTaskSource, start: MetaStart) -> Params:
        theta, g = start.theta, start.generator
        body = {n: p for n, p in theta.items() if n.startswith(BODY)}
        optimizer = torch.optim.Adam(list(body.values()), lr=self.outer_lr)
        for _ in start.steps:
            total = {n: torch.zeros_like(p) for n, p in body.items()}
            for _ in range(self.tasks_per_batch):
                sx, sy, qx, qy = episode(tasks, self.ways, self.support, self.query, g)
                loss = prototypical_loss(_embed(model, body, sx), sy, _embed(model, body, qx), qy)
                grads, _ = meta_gradient(loss, body)
                total = {n: total[n] + grads[n] / self.tasks_per_batch for n in total}
            apply_gradients(optimizer, body, total)
        return theta


def episode(
    tasks: MetaTaskSource, ways: int, support: int, query: int, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One training episode: ``support`` and ``query`` samples of each of ``ways`` classes.

    The classes are gathered from the pool's tasks in a random order: a task's dataset
    labels, where a label another task already gave counts once unless the tasks transform
    their images differently (two permutations of a digit are two classes). The episode
    holds at least one task's classes and at most the distinct classes the pool holds.

    Returns:
        Support inputs ``[ways * support, F]`` and labels, query inputs and labels; the
        labels number the episode's classes ``0..ways-1``.
    """
    want = max(ways, len(tasks.tasks[0].classes))
    picked: list[tuple[int, int]] = []  # (task, dataset label)
    seen: set[tuple[int, ...]] = set()
    for t in torch.randperm(len(tasks.tasks), generator=generator).tolist():
        spec = tasks.tasks[t]
        for c in spec.classes:
            key = (c,) if spec.transform is None else (t, c)
            if key not in seen and len(picked) < want:
                seen.add(key)
                picked.append((t, c))
        if len(picked) == want:
            break
    x = torch.stack(
        [tasks.sample(t, support + query, generator, classes=[c]).x for t, c in picked]
    )  # [classes, support + query, F]
    y = torch.arange(len(picked), device=x.device)[:, None].expand(-1, support + query)
    return (
        x[:, :support].flatten(0, 1),
        y[:, :support].flatten(),
        x[:, support:].flatten(0, 1),
        y[:, support:].flatten(),
    )


def _embed(model: nn.Module, body: Params, x: Tensor) -> Tensor:
    """``model.body(x)`` at the weights ``body`` (named as in the model), flattened."""
    own = {n.removeprefix(BODY): p for n, p in body.items()}
    return functional_call(model.body, own, (x,)).flatten(1)  # type: ignore[arg-type]
