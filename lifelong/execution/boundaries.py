"""Task boundaries detected from the loss: ``boundaries=detect``.

Aljundi, Kelchtermans & Tuytelaars 2019 ("Task-Free Continual Learning", CVPR, Sec. 4)
consolidate importance weights whenever the training loss reaches a *plateau* after a
*peak*: new data raise the loss (a peak); once it has been learned, the loss stays low and
flat (a plateau), and that is the moment to consolidate. Their criterion, over a sliding
window of recent losses:

- plateau: the window is full and flat, ``std(window) < flat * mean(window)`` (the paper
  thresholds the window's mean and variance; relative to the mean here, so that one setting
  fits any loss scale), and
- peak: ``mean(window) > mean(last plateau) + rise * std(last plateau)`` (and by 10% at
  least); the stream's start counts as a peak (the first task must be learned, then
  consolidated), and a plateau ends a peak only once the window's mean is below half the
  highest mean since the last boundary (the new data have been learned, not merely met).

A detected boundary fires once per plateau that follows a peak. The strategy's boundary
hooks then see the recent samples (the paper's "hard buffer"), not a task's whole data:
``after_task`` as detected task ``k`` and ``before_task`` as ``k + 1``. Between boundaries
the strategy's batches carry the detected task's id ``k`` (the count of boundaries detected
so far), never the true one, so that strategies which read task ids (GEM's per-task
gradients, ER-ACE's and X-DER's past/present split) work on the detected tasks.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch

from lifelong.contracts.strategy import Batch
from lifelong.contracts.stream import TrainingData

__all__ = ["PlateauDetector", "RecentSamples"]


@dataclass
class PlateauDetector:
    """Fires at the first loss plateau after each loss peak (Aljundi et al. 2019).

    Attributes:
        window: losses (one per step) the mean and spread are taken over.
        flat: a window is a plateau when its standard deviation is below ``flat`` times its mean.
        rise: a window is a peak when its mean exceeds the last plateau's mean by ``rise``
            times that plateau's standard deviation (and by 10% of its mean at least).

    The defaults find the true boundaries of Split- and Permuted-MNIST (5 tasks of 20 to
    80 batches of 10, SGD, MLP 100-100) within 2 to 6 batches after each, and no others.
    """

    window: int = 5
    flat: float = 0.3
    rise: float = 2.0
    losses: deque[float] = field(default_factory=deque, init=False, repr=False)
    peaked: bool = field(default=True, init=False)  # the stream's start is a peak
    plateau: tuple[float, float] = field(default=(math.inf, 0.0), init=False)
    high: float = field(default=0.0, init=False)  # the highest window mean since a boundary

    def update(self, loss: float) -> bool:
        """Take one step's loss; whether a boundary is detected here."""
        self.losses.append(loss)
        if len(self.losses) > self.window:
            self.losses.popleft()
        if len(self.losses) < self.window:
            return False
        values = torch.tensor(list(self.losses), dtype=torch.float64)
        mean, std = float(values.mean()), float(values.std())
        level, spread = self.plateau
        self.high = max(self.high, mean)
        if mean > level + max(self.rise * spread, 0.1 * level):
            self.peaked = True
        if std >= self.flat * mean:
            return False
        if self.peaked and mean < self.high / 2:
            self.peaked, self.plateau, self.high = False, (mean, std), mean
            return True
        self.plateau = (min(level, mean), spread)
        return False

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps (numbers only)."""
        return {
            "losses": list(self.losses),
            "peaked": self.peaked,
            "plateau": list(self.plateau),
            "high": self.high,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.losses = deque(float(v) for v in state["losses"])
        self.peaked, self.high = bool(state["peaked"]), float(state["high"])
        self.plateau = (float(state["plateau"][0]), float(state["plateau"][1]))


@dataclass
class RecentSamples:
    """The last ``size`` training samples, as the data a detected boundary's hooks see."""

    size: int = 500
    batches: deque[Batch] = field(default_factory=deque, init=False, repr=False)
    count: int = field(default=0, init=False)

    def add(self, batch: Batch) -> None:
        self.batches.append(batch)
        self.count += len(batch.y)
        while self.count - len(self.batches[0].y) >= self.size:
            self.count -= len(self.batches.popleft().y)

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps: the samples, as one batch."""
        if not self.batches:
            return {}
        joined = [torch.cat([getattr(b, k) for b in self.batches]) for k in ("x", "y")]
        return {"x": joined[0], "y": joined[1]}

    def load_state(self, state: dict[str, Any]) -> None:
        self.batches.clear()
        self.count = 0
        if state:
            y = state["y"]
            self.add(Batch(state["x"], y, torch.zeros_like(y), 0))

    def data(self, task: int) -> TrainingData:
        """The recent samples as the training data of detected task ``task`` (uint8 inputs;
        every task id is ``task``, the detected one, never the true one)."""
        x = torch.cat([b.x for b in self.batches]).mul(255).round_().to(torch.uint8)
        y = torch.cat([b.y for b in self.batches])
        return TrainingData(task, f"detected {task}", x, y, torch.full_like(y, task))
