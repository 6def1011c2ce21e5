"""GDumb: a greedy class-balanced memory, and a network retrained from scratch on it alone.

The worked example of a whole strategy written from scratch against lifelong's public API
(README, "Writing a strategy"): hyperparameters declared with ``param``, state built in
``setup``, the generator as the only randomness, learning in ``train_step`` and
``after_task``, ``predict`` for the evaluator. Nothing here is private to lifelong.

References: Prabhu, Torr & Dokania 2020, "GDumb: A simple approach that questions our
progress in continual learning" (ECCV).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, final

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong import Batch, Strategy, StreamInfo, TrainingData, param


@final
@dataclass
class GDumb(Strategy):
    """Keep a class-balanced sample greedily; after each task, retrain from scratch on it.

    A sample is stored while the memory has room; once it is full, a sample whose class
    holds fewer than ``size / classes seen`` slots replaces a random sample of the largest
    class. A class is a (task, label) pair, so that the tasks of domain- and
    task-incremental streams, whose labels repeat, are balanced too. The stream itself is
    never trained on: after every task the network is reset to its initial weights and
    trained on the memory alone. With hidden boundaries (``StreamInfo.boundaries`` false)
    it retrains when asked to predict, if the memory changed since, as the paper does at
    inference time. Its memory is its own, not the shared ``replay`` part,
    because the retraining needs all of it at once.
    """

    name: ClassVar[str] = "gdumb"
    setting_prefixes: ClassVar[tuple[str, ...]] = ("replay",)  # --set replay.size reaches it
    size: int = param(200, "samples the memory holds", ge=1)
    epochs: int = param(30, "epochs of retraining on the memory after each task", ge=1)
    lr: float = param(0.05, "SGD learning rate of the retraining", gt=0)
    batch_size: int = param(16, "batch size of the retraining", ge=1)

    model: nn.Module = field(init=False, repr=False)
    generator: torch.Generator = field(init=False, repr=False)
    start: dict[str, Tensor] = field(init=False, repr=False)
    x: Tensor = field(init=False, repr=False)
    y: Tensor = field(init=False, repr=False)
    task_ids: Tensor = field(init=False, repr=False)
    n_outputs: int = field(init=False, repr=False)
    at_predict: bool = field(init=False, repr=False)
    changed: bool = field(init=False, repr=False, default=False)

    def setup(self, model: nn.Module, info: StreamInfo, generator: torch.Generator) -> None:
        self.model, self.generator, self.n_outputs = model, generator, info.n_outputs
        self.at_predict, self.changed = not info.boundaries, False
        self.start = {k: v.detach().clone() for k, v in model.state_dict().items()}
        device = next(model.parameters()).device
        self.x = torch.empty(0, info.input_dim, device=device)
        self.y = torch.empty(0, dtype=torch.long, device=device)
        self.task_ids = torch.empty(0, dtype=torch.long, device=device)

    def train_step(self, batch: Batch) -> Tensor:
        if batch.glance == 0:  # a repeated glance brings no new sample
            for i in range(len(batch.y)):
                self._offer(batch.x[i], batch.y[i], batch.task_ids[i])
            self.changed = True
        return torch.zeros((), device=batch.x.device)  # nothing is learned online

    def _offer(self, x: Tensor, y: Tensor, task_id: Tensor) -> None:
        if len(self.y) < self.size:
            self.x = torch.cat([self.x, x[None]])
            self.y = torch.cat([self.y, y[None]])
            self.task_ids = torch.cat([self.task_ids, task_id[None]])
            return
        stored, new = self.task_ids * self.n_outputs + self.y, task_id * self.n_outputs + y
        counts = torch.bincount(stored, minlength=int(new) + 1)
        classes = int(torch.count_nonzero(counts)) + int(counts[new] == 0)
        if int(counts[new]) * classes >= self.size:
            return  # its class already has its share
        largest = torch.nonzero(stored == counts.argmax()).flatten()
        pick = torch.randint(len(largest), (1,), generator=self.generator, device=y.device)
        slot = largest[pick]
        self.x[slot], self.y[slot], self.task_ids[slot] = x, y, task_id

    def after_task(self, data: TrainingData) -> None:
        self._retrain()

    def _retrain(self) -> None:
        self.changed = False
        self.model.load_state_dict(self.start)
        optimizer = torch.optim.SGD(self.model.parameters(), lr=self.lr)
        for _ in range(self.epochs):
            order = torch.randperm(len(self.y), generator=self.generator, device=self.y.device)
            for chunk in order.split(self.batch_size):
                loss = F.cross_entropy(
                    self.model(self.x[chunk], self.task_ids[chunk]), self.y[chunk]
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

    def predict(self, x: Tensor, task_ids: Tensor) -> Tensor:
        if self.at_predict and self.changed:
            with torch.inference_mode(False), torch.enable_grad():
                self._retrain()
        return self.model(x, task_ids)
