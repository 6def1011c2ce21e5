"""SCR: supervised contrastive replay, and the nearest class mean of the memory to predict.

References: Mai, Li, Kim & Sanner 2021, "Supervised Contrastive Replay: Revisiting the
Nearest Class Mean Classifier in Online Class-Incremental Continual Learning" (CVPR
Workshops; official code RaptorMai/online-continual-learning); Khosla et al. 2020,
"Supervised Contrastive Learning" (NeurIPS).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, final

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong import SGD, Batch, Strategy, StreamInfo, feature_dim, features, param

from .ncm import NearestMean
from .replay import Reservoir


def supcon_loss(z: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, Eq. 2, "L_out").

    For each anchor i, the mean over its positives p (same label, p != i) of
    ``-log(exp(z_i . z_p / t) / sum_{a != i} exp(z_i . z_a / t))``, averaged over the
    anchors that have a positive.

    Args:
        z: float ``[N, d]``, L2-normalised embeddings; labels: int64 ``[N]``.
    """
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    sim = (z @ z.T / temperature).masked_fill(eye, float("-inf"))
    log_prob = sim - sim.logsumexp(1, keepdim=True)
    positive = (labels[:, None] == labels[None, :]) & ~eye
    count = positive.sum(1)
    per_anchor = -log_prob.masked_fill(~positive, 0).sum(1) / count.clamp(min=1)
    has = count > 0
    return per_anchor[has].mean() if bool(has.any()) else z.sum() * 0


@final
@dataclass
class SCR(Strategy):
    """SCR: reservoir replay trained with the supervised contrastive loss; NCM prediction.

    One step (Mai et al. 2021, Algorithm 1)::

        x_r, y_r = memory.sample()                        # reservoir (the replay memory)
        x = [x; x_r; aug(x); aug(x_r)], y likewise        # two views of every sample
        z = normalize(projection(body(x)))
        loss = SupCon(z, y; temperature)
        memory.add(batch)

    The prediction is the nearest class mean of the memory's L2-normalised ``body``
    features (:class:`NearestMean`); the model's linear head is never trained. The
    augmentation is a random translation of up to ``shift`` pixels of square
    single-channel images (the paper's random resized crop and flip are for CIFAR); the
    projection is the paper's two-layer MLP (``F -> F -> 128``).

    Defaults: temperature 0.07, learning rate 0.1, memory batch 100 (the paper's); memory
    200 as the ``replay`` memory's (``--set replay.size=...`` reaches it too).

    References: Mai et al. 2021, "Supervised Contrastive Replay" (CVPR-W); Khosla et al.
    2020, "Supervised Contrastive Learning".
    """

    name: ClassVar[str] = "scr"
    setting_prefixes: ClassVar[tuple[str, ...]] = ("replay",)
    size: int = param(200, "samples the reservoir memory holds", ge=1)
    batch: int = param(100, "memory samples replayed with every batch (the paper's)", ge=1)
    lr: float = param(0.1, "SGD learning rate (the paper's)", gt=0)
    temperature: float = param(0.07, "temperature of the contrastive loss (the paper's)", gt=0)
    projection_dim: int = param(128, "width of the projection's output (the paper's)", ge=1)
    shift: int = param(2, "largest translation of an augmented view, in pixels", ge=0)

    model: nn.Module = field(init=False, repr=False)
    projection: nn.Module = field(init=False, repr=False)
    generator: torch.Generator = field(init=False, repr=False)
    optimizer: SGD = field(init=False, repr=False)
    memory: Reservoir = field(init=False, repr=False)
    ncm: NearestMean = field(init=False, repr=False)

    def setup(self, model: nn.Module, info: StreamInfo, generator: torch.Generator) -> None:
        self.model, self.generator = model, generator
        width = feature_dim(model, "scr")
        device = next(model.parameters()).device
        self.projection = _mlp(width, self.projection_dim, generator, device)
        params = [*model.body.parameters(), *self.projection.parameters()]  # type: ignore[union-attr]
        self.optimizer = SGD(params, lr=self.lr)
        self.memory = Reservoir(size=self.size, batch=self.batch)
        self.memory.setup(info, device, generator)
        self.ncm = NearestMean()
        self.ncm.prepare(model, info, generator)

    def train_step(self, batch: Batch) -> Tensor:
        replay = self.memory.sample()
        x, y = batch.x, batch.y
        if replay is not None:
            x, y = torch.cat([x, replay.batch.x]), torch.cat([y, replay.batch.y])
        views = torch.cat([x, self._augment(x)])
        z = F.normalize(self.projection(features(self.model, views)), dim=1)
        loss = supcon_loss(z, torch.cat([y, y]), self.temperature)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if batch.glance == 0:
            self.memory.add(batch, None)
            self.ncm.observe(self.model, batch)
        return loss.detach()

    def predict(self, x: Tensor, task_ids: Tensor) -> Tensor:
        return self.ncm.predict(self.model, x, task_ids, self.memory.stored())

    def _augment(self, x: Tensor) -> Tensor:
        """Each row translated by its own random offset in ``[-shift, shift]`` pixels
        (square single-channel images; other inputs are returned as they are)."""
        side = math.isqrt(x.shape[1])
        if self.shift == 0 or side * side != x.shape[1]:
            return x
        s, wide = self.shift, side + 2 * self.shift
        padded = F.pad(x.view(-1, side, side), (s, s, s, s)).flatten(1)  # [N, wide * wide]
        dx, dy = torch.randint(0, 2 * s + 1, (2, len(x)), generator=self.generator, device=x.device)
        steps = torch.arange(side, device=x.device)
        window = (steps[:, None] * wide + steps).flatten()  # an unmoved image's pixels, padded
        return padded.gather(1, (dy * wide + dx)[:, None] + window)  # each row's own window


def _mlp(width: int, out: int, generator: torch.Generator, device: torch.device) -> nn.Module:
    """SCR's projection ``Linear(F, F) - ReLU - Linear(F, out)``, drawn from ``generator``
    (PyTorch's default ranges: uniform in ``+-1/sqrt(fan_in)``)."""
    first, last = nn.Linear(width, width, device=device), nn.Linear(width, out, device=device)
    with torch.no_grad():
        for layer in (first, last):
            bound = 1 / math.sqrt(layer.in_features)
            for p in layer.parameters():
                p.copy_(torch.rand(p.shape, generator=generator, device=device) * 2 * bound - bound)
    return nn.Sequential(first, nn.ReLU(), last)
