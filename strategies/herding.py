"""Herding: exemplars whose running mean stays closest to their class's mean feature.

A memory-selection function (any memory may call it with the features it has), the
exemplar update iCaRL makes with it at the end of a task (:func:`herded_update`: the
``replay`` memory's ``select=herding`` makes the same), and the class-balanced exemplar set
that iCaRL, LUCIR and BiC keep with it.

References: Welling 2009, "Herding dynamical weights to learn" (ICML); Rebuffi et al.
2017, "iCaRL", Algorithm 4 (ConstructExemplarSet) and Algorithm 5 (ReduceExemplarSet).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from lifelong import (
    SGD,
    Batch,
    Params,
    Strategy,
    StreamInfo,
    TrainingData,
    eval_mode,
    features,
    param,
    to_floats,
)
from lifelong.fast import has_closed_form, mlp_logits


@torch.no_grad()
def herding(feats: Tensor, m: int) -> Tensor:
    """The indices of ``m`` rows of ``feats [N, F]``, in the order herding picks them.

    Step k picks, among the rows not yet picked, the one that brings the mean of the k
    picked rows closest (Euclidean) to the mean of all rows (iCaRL, Algorithm 4); ties go
    to the lowest index. A prefix of the result is the herding choice of that size, so
    dropping the tail reduces an exemplar set (Algorithm 5).

    Returns:
        int64 ``[min(m, N)]``.
    """
    m = min(m, len(feats))
    target = feats.mean(0)
    picked = torch.zeros(len(feats), dtype=torch.bool, device=feats.device)
    total = torch.zeros_like(target)
    order = torch.empty(m, dtype=torch.long, device=feats.device)
    means, gap = torch.empty_like(feats), feats.new_empty(len(feats))  # written every step
    for k in range(1, m + 1):
        # gap = || target - (total + feats) / k ||, row by row, the picked rows excluded
        torch.sub(target, torch.add(total, feats, out=means).div_(k), out=means)
        torch.linalg.vector_norm(means, dim=1, out=gap).masked_fill_(picked, float("inf"))
        i = gap.argmin()
        order[k - 1] = i
        picked[i] = True
        total += feats[i]
    return order


@dataclass
class Exemplars:
    """A class-balanced exemplar set of at most ``size`` samples, chosen by herding.

    After each task every class seen keeps ``size // classes`` exemplars: the old classes
    their first ones (herding's order), the new classes a herding choice over the
    L2-normalised features of all their training samples. A class is (task id, target).

    Attributes:
        x: float ``[N, D]`` in [0, 1]; y, task_ids: int64 ``[N]``, grouped by class.
    """

    size: int
    x: Tensor = field(init=False)
    y: Tensor = field(init=False)
    task_ids: Tensor = field(init=False)

    def setup(self, input_dim: int, device: torch.device) -> None:
        self.x = torch.zeros(0, input_dim, device=device)
        self.y = torch.zeros(0, dtype=torch.long, device=device)
        self.task_ids = torch.zeros(0, dtype=torch.long, device=device)

    def __len__(self) -> int:
        return len(self.y)

    def batch(self) -> Batch:
        """Every exemplar as one batch."""
        return Batch(self.x, self.y, self.task_ids, -1)

    def draw(self, n: int, generator: torch.Generator) -> Tensor:
        """The rows of ``n`` exemplars drawn without replacement."""
        return torch.randperm(len(self), generator=generator, device=self.y.device)[:n]

    def sample(self, n: int, generator: torch.Generator) -> Batch | None:
        """``n`` exemplars drawn without replacement (None while empty)."""
        if not len(self):
            return None
        pick = self.draw(n, generator)
        return Batch(self.x[pick], self.y[pick], self.task_ids[pick], -1)

    def joined(self, batch: Batch, n: int, generator: torch.Generator) -> Batch:
        """``batch`` followed by ``n`` exemplars drawn without replacement (``batch`` alone
        while the set is empty)."""
        return self.joined_rows(batch, self.draw(n, generator) if len(self) else None)

    def joined_rows(self, batch: Batch, rows: Tensor | None) -> Batch:
        """``batch`` followed by the exemplars at ``rows`` (``batch`` alone for None)."""
        if rows is None:
            return batch
        return Batch(
            torch.cat([batch.x, self.x[rows]]),
            torch.cat([batch.y, self.y[rows]]),
            torch.cat([batch.task_ids, self.task_ids[rows]]),
            batch.task,
        )

    @torch.no_grad()
    def update(self, model: nn.Module, data: TrainingData) -> None:
        """Shrink the old classes and add herding exemplars of ``data``'s classes."""
        keep, rows, x = herded_update(model, self.y, self.task_ids, data, self.size)
        self.x = torch.cat([self.x[keep], x])
        self.y = torch.cat([self.y[keep], data.y[rows]])
        self.task_ids = torch.cat([self.task_ids[keep], data.task_ids[rows]])


@torch.no_grad()
def herded_update(
    model: nn.Module, y: Tensor, task_ids: Tensor, data: TrainingData, size: int
) -> tuple[Tensor, Tensor, Tensor]:
    """iCaRL's exemplar update at the end of a task, as indices (Algorithms 4 and 5).

    Every class seen (a class is a task id and a target) gets ``size // classes`` exemplars
    (at least one): a held class keeps its first ones (held in herding's order, grouped by
    class), and each class of ``data`` a herding choice over the L2-normalised ``body``
    features of all its training samples, the model in eval mode (batch norm's running
    statistics, which the choice leaves as they are).

    Args:
        y, task_ids: the held exemplars' targets and task ids, grouped by class.
        data: the task that ended.

    Returns:
        ``(keep, rows, x)``: the held rows kept, in order; the rows of ``data`` chosen,
        class by class in herding's order; their inputs as floats (the test view: no
        augmentation).
    """
    keys, new_keys = class_keys(y, task_ids), class_keys(data.y, data.task_ids)
    classes = torch.unique(torch.cat([keys, new_keys]))
    per_class = max(size // len(classes), 1)
    kept = [torch.nonzero(keys == c).flatten()[:per_class] for c in keys.unique()]
    keep = torch.cat(kept) if kept else keys.new_zeros(0)
    chosen, inputs = [keys.new_zeros(0)], [to_floats(data.x[:0].flatten(1), data.inputs)]
    for c in new_keys.unique():
        rows = torch.nonzero(new_keys == c).flatten()
        x = to_floats(data.x[rows].flatten(1), data.inputs)
        with eval_mode(model):  # the features as the model predicts: batch norm's statistics
            picked = herding(_embedded(model, x), per_class)
        chosen.append(rows[picked])
        inputs.append(x[picked])
    return keep, torch.cat(chosen), torch.cat(inputs)


def class_keys(y: Tensor, task_ids: Tensor) -> Tensor:
    """One key per class, a class being (task id, target): distinct for any target below
    1,000,003."""
    return task_ids * 1_000_003 + y


def _embedded(model: nn.Module, x: Tensor, chunk: int = 1024) -> Tensor:
    """L2-normalised ``body`` features of ``x``, ``chunk`` rows at a time."""
    return torch.cat([F.normalize(features(model, part), dim=1) for part in x.split(chunk)])


@dataclass
class ExemplarStrategy(Strategy):
    """The plumbing iCaRL, BiC and LUCIR share (each holds its algorithm in its own file):
    an exemplar set herded at the end of every task and replayed ``batch`` samples at a
    time with each incoming batch (iCaRL's default spreads them over the task's batches
    instead), SGD on the whole network, the old network's weights (empty before the first
    task ends) and outputs, and masks of the classes seen and of those the old network
    learnt."""

    # it herds exemplars and keeps the old network at the end of a task
    needs_boundaries: ClassVar[bool] = True
    setting_prefixes: ClassVar[tuple[str, ...]] = ("replay",)
    size: int = param(200, "exemplars kept in all", ge=1)
    batch: int = param(32, "exemplars replayed with every incoming batch", ge=1)
    lr: float = param(0.1, "SGD learning rate", gt=0)

    model: nn.Module = field(init=False, repr=False)
    generator: torch.Generator = field(init=False, repr=False)
    optimizer: SGD = field(init=False, repr=False)
    exemplars: Exemplars = field(init=False, repr=False)
    old: Params = field(init=False, repr=False)
    seen: Tensor = field(init=False, repr=False)
    learned: Tensor = field(init=False, repr=False)
    # acceleration: the old network's logits by hand (lifelong.fast.mlp_logits), where the
    # model declares closed-form gradients and the protocol's fast is on
    not_checkpointed: ClassVar[tuple[str, ...]] = ("by_hand",)
    by_hand: bool = field(init=False, repr=False, compare=False, default=False)

    def setup(self, model: nn.Module, info: StreamInfo, generator: torch.Generator) -> None:
        self.model, self.generator = model, generator
        self.optimizer = SGD(model.parameters(), lr=self.lr)
        device = next(model.parameters()).device
        self.exemplars = Exemplars(self.size)
        self.exemplars.setup(info.input_dim, device)
        self.old = {}
        self.by_hand = info.fast and has_closed_form(model)
        self.seen = torch.zeros(info.n_outputs, dtype=torch.bool, device=device)
        self.learned = torch.zeros_like(self.seen)  # the classes the old network knows

    @torch.no_grad()
    def old_outputs(self, x: Tensor, task_ids: Tensor) -> Tensor:
        """The old network's outputs on ``x``: the model on the weights ``old`` (its own
        buffers and mode), with no gradient."""
        if self.by_hand:  # acceleration: lifelong.fast.mlp_logits, the same numbers
            return mlp_logits(list(self.old.values()), x)  # the model's order: named_parameters
        return functional_call(self.model, self.old, (x, task_ids))
