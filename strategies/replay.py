"""The ``replay`` memory: a reservoir sample of the whole stream, optionally class-balanced,
with MIR's retrieval (``retrieve=mir``, strategies/mir.py), GSS's selection
(``select=gss``, strategies/gss.py) and iCaRL's herding (``select=herding``,
strategies/herding.py) as options."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, final

import numpy as np
import torch
from torch import Tensor, nn

from lifelong import (
    Batch,
    Memory,
    Replay,
    StreamInfo,
    TrainingData,
    UserError,
    eval_mode,
    feature_dim,
    param,
)
from lifelong.fast import MlpCosines, has_closed_form
from lifelong.fast import interference as fast_interference

from . import gss, herding, mir

RETRIEVALS = ("random", "mir")
SELECTIONS = ("reservoir", "gss", "herding")


@final
@dataclass
class Reservoir(Memory):
    """A fixed number of samples, each sample of the stream equally likely to be kept.

    Reservoir sampling: the n-th sample seen (0-based) fills slot n while the memory is
    not full, and afterwards replaces a uniformly drawn slot with probability
    ``size / (n + 1)``. A batch is decided at once on the device; when two of its samples
    draw the same slot the later one wins, exactly as adding them one by one would.

    With ``balanced`` the memory instead keeps the classes (a class is a task id and a
    target) as equal in number as it can: once full, a sample of a class smaller than the
    largest replaces a random sample of the largest class, and a sample of a largest class
    replaces a random sample of its own class with probability (stored / seen of that
    class). This decides sample by sample, so it costs a few small operations per sample.

    Inputs, targets, task ids (and, when asked, logits) live in tensors preallocated on
    the model's device; the replay batch is drawn without replacement. It holds ``batch``
    samples, by default (0) as many as an incoming batch (``StreamInfo.batch_size``), as
    ER's paper replays and Mammoth's and Avalanche's replay default.

    With the ``sgd`` learner this memory is ER (the shortcut ``er``). One step, each line
    as the composite runs it (``lifelong.Composite.train_step``, generic over parts)::

        replay = memory.sample()                     # x_r, y_r: sample() below
        data = memory.joined(batch, replay)          # [x; x_r], [y; y_r]: joined() below
        loss = CE(f(data.x), data.y) + penalties     # the composite's objective
        theta -= lr * grad(loss)                     # the learner's step (sgd.py)
        memory.add(batch)                            # reservoir sampling: add() below

    With ``per_task`` the memory is instead one per task, as GEM's episodic memories
    (Lopez-Paz & Ranzato 2017: ``m = M / T`` locations for each of T tasks): each task's
    samples fill their own ``size // n_tasks`` rows, after the earlier tasks', by
    reservoir sampling within the task (a uniform sample of it, as Avalanche's and
    Mammoth's GEM keep); it needs the task boundaries. With detected boundaries a
    detected task past the stream's count adds to the last task's rows.

    Three policies read the model: ``retrieve=mir`` replays, of ``candidates`` random stored
    samples, the ``batch`` whose loss a virtual SGD step at ``virtual_lr`` on the incoming
    batch raises most (MIR, :mod:`strategies.mir`; shortcut ``mir``); ``select=gss`` keeps
    the most gradient-diverse samples instead of a uniform sample (GSS-Greedy,
    :mod:`strategies.gss`, comparing with ``candidates`` stored samples; shortcut ``gss``);
    ``select=herding`` keeps iCaRL's exemplars: nothing is stored while a task trains, and
    at its end every class seen keeps ``size // classes`` samples, the old classes their
    first ones and the task's classes a herding choice over the model's features of all
    their training samples (:func:`strategies.herding.herded_update`, as ``icarl``,
    ``bic`` and ``lucir`` keep theirs; stored logits are the model's at that end). It
    needs the task boundaries and a model with features (``body``).

    References: Vitter 1985 (reservoir sampling); Chaudhry et al. 2019, "On tiny episodic
    memories in continual learning"; Chrysakis & Moens 2020 (class-balancing reservoir);
    Aljundi et al. 2019 (MIR; GSS).
    """

    name: ClassVar[str] = "replay"
    # ER: Chaudhry et al. 2019, "On tiny episodic memories" (the sgd learner + this memory)
    # MIR (Aljundi et al. 2019, NeurIPS): ER with maximally interfered retrieval, its
    # official MNIST memory batch of 10; GSS (Aljundi et al. 2019): GSS-Greedy selection,
    # batch 10 as Mammoth's gss_minibatch_size.
    shortcuts: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "er": ("replay",),
        "mir": ("replay",),
        "gss": ("replay",),
    }
    shortcut_settings: ClassVar[Mapping[str, Mapping[str, Mapping[str, Any]]]] = {
        "mir": {"replay": {"retrieve": "mir", "batch": 10}},
        "gss": {"replay": {"select": "gss", "batch": 10, "candidates": 10}},
    }
    size: int = param(200, "samples the memory holds", ge=1)
    batch: int = param(
        0, "samples replayed with every incoming batch (0: as many as the incoming batch)", ge=0
    )
    balanced: bool = param(False, "keep classes balanced instead of a uniform sample")
    retrieve: str = param(
        "random", "which stored samples are replayed (mir: most interfered)", choices=RETRIEVALS
    )
    select: str = param(
        "reservoir",
        "which samples are kept (gss: most gradient-diverse; herding: iCaRL's exemplars)",
        choices=SELECTIONS,
    )
    candidates: int = param(50, "stored samples MIR scores, or GSS compares with", ge=1)
    virtual_lr: float = param(0.1, "learning rate of MIR's virtual step (the learner's)", gt=0)
    per_task: bool = param(
        False, "keep size / n_tasks samples of each task (GEM's episodic memories)"
    )

    x: Tensor = field(init=False, repr=False, compare=False)
    y: Tensor = field(init=False, repr=False, compare=False)
    task_ids: Tensor = field(init=False, repr=False, compare=False)
    logits: Tensor = field(init=False, repr=False, compare=False)
    seen: int = field(init=False, repr=False, compare=False)
    task: int = field(init=False, repr=False, compare=False)
    generator: torch.Generator = field(init=False, repr=False, compare=False)
    n_outputs: int = field(init=False, repr=False, compare=False)
    class_seen: Tensor = field(init=False, repr=False, compare=False)
    scores: Tensor = field(init=False, repr=False, compare=False)
    replay_batch: int = field(init=False, repr=False, compare=False)  # batch, 0 resolved
    region: int = field(init=False, repr=False, compare=False)  # per_task: the task's first row
    task_seen: int = field(init=False, repr=False, compare=False)  # per_task: its samples seen
    task_share: int = field(init=False, repr=False, compare=False)  # per_task: size / n_tasks
    herded: int = field(init=False, repr=False, compare=False)  # select=herding: rows held
    # bind() gives them again on every setup; they are the composite's, checkpointed there
    not_checkpointed: ClassVar[tuple[str, ...]] = ("model", "params", "fast", "closed_form")
    model: nn.Module | None = field(init=False, repr=False, compare=False, default=None)
    params: dict[str, Tensor] = field(init=False, repr=False, compare=False, default_factory=dict)
    fast: bool = field(init=False, repr=False, compare=False, default=True)
    closed_form: bool = field(init=False, repr=False, compare=False, default=False)

    def __post_init__(self) -> None:
        rules = [f"{k}=true" for k in ("balanced", "per_task") if getattr(self, k)]
        rules += [f"select={self.select}"] if self.select != "reservoir" else []
        if len(rules) > 1:
            chosen = " and ".join(rules)
            raise UserError(f"replay: {chosen} are different selection rules; choose one")

    @property
    def stackable(self) -> bool:  # type: ignore[override]
        """Only the plain policies stack over seeds: MIR, GSS and herding read each seed's
        model, and a memory per task keeps per-seed regions."""
        plain = self.retrieve == "random" and self.select == "reservoir"
        return plain and not self.per_task

    @property
    def needs_boundaries(self) -> bool:  # type: ignore[override]
        """A memory per task needs to know where a task starts, herding where one ends."""
        return self.per_task or self.select == "herding"

    def bind(self, model: nn.Module, params: dict[str, Tensor]) -> None:
        self.model, self.params = model, params
        if self.select == "herding":
            feature_dim(model, "replay's select=herding")  # a model without features: refused
        # MIR's and GSS's scores by hand (lifelong.fast.sample_factors) where they apply
        every_weight = len(params) == len(list(model.parameters()))
        self.closed_form = self.fast and every_weight and has_closed_form(model)

    def setup(self, info: StreamInfo, device: torch.device, generator: torch.Generator) -> None:
        rows = self.size + 1  # the last row is scratch space that absorbs discarded writes
        self.x = torch.zeros(rows, info.input_dim, device=device)
        self.y = torch.zeros(rows, dtype=torch.long, device=device)
        self.task_ids = torch.zeros(rows, dtype=torch.long, device=device)
        self.logits = torch.zeros(rows, info.n_outputs, device=device)
        self.seen, self.task, self.generator = 0, 0, generator
        self.fast = info.fast
        self.n_outputs = info.n_outputs
        self.class_seen = torch.zeros(info.n_tasks * info.n_outputs, device=device)
        self.scores = torch.zeros(rows, device=device)
        self.replay_batch = self.replay_rows(info.batch_size)
        self.region, self.task_seen, self.herded = 0, 0, 0
        self.task_share = max(self.size // max(info.n_tasks, 1), 1)

    def __len__(self) -> int:
        if self.select == "herding":
            return self.herded
        if self.per_task:  # earlier tasks' rows, then the current task's
            return self.region + min(self.task_seen, self._task_room())
        return min(self.seen, self.size)

    def _task_room(self) -> int:
        """per_task: the rows the current task may fill, its share or what is left."""
        return max(min(self.task_share, self.size - self.region), 0)

    def replay_rows(self, batch_size: int) -> int:
        return min(self.batch or batch_size, self.size)

    @classmethod
    def stacked(cls, memories: list[Reservoir]) -> StackedReservoirs:
        return StackedReservoirs(memories)

    def stored(self) -> Batch | None:
        n = len(self)
        if n == 0:
            return None
        return Batch(self.x[:n], self.y[:n], self.task_ids[:n], self.task)

    def sample(self) -> Replay | None:
        pick = self._sample_rows()
        if pick is None:
            return None
        # gathered when a step reads it (GEM takes the rows in its own order)
        return Replay.drawn(Batch(self.x, self.y, self.task_ids, self.task), self.logits, pick)

    def joined(self, batch: Batch, replay: Replay) -> Batch:
        """ER's training batch: the incoming samples followed by the replayed ones."""
        stored = replay.batch
        x, y = torch.cat([batch.x, stored.x]), torch.cat([batch.y, stored.y])
        return Batch(x, y, torch.cat([batch.task_ids, stored.task_ids]), batch.task)

    def sample_for(self, batch: Batch) -> Replay | None:
        """:meth:`sample`, or with ``retrieve=mir`` the ``batch`` most interfered of
        ``candidates`` random stored samples (:func:`strategies.mir.interference`)."""
        if self.retrieve == "random" or self.model is None or len(self) == 0:
            return self.sample()
        rows = torch.randperm(len(self), generator=self.generator, device=self.y.device)
        rows = rows[: self.candidates]
        if self.closed_form:  # acceleration: lifelong.fast.sample_factors, no weights formed
            weights = list(self.params.values())
            scored = fast_interference(weights, batch, self.at(rows), self.virtual_lr)
            chosen = mir.most_interfered(scored.scores, self.replay_batch)
            pick = rows[chosen]
            replayed = self.at(pick)
            ahead = scored.activations(chosen, replayed)  # the step's forward pass, taken
            return Replay(replayed, self.logits.index_select(0, pick), ahead)
        scores = mir.interference(self.model, self.params, batch, self.at(rows), self.virtual_lr)
        pick = rows[mir.most_interfered(scores, self.replay_batch)]
        return Replay(self.at(pick), self.logits.index_select(0, pick))

    def at(self, rows: Tensor) -> Batch:
        """The stored samples at ``rows`` (int64 ``[R]``) as a batch."""
        x, y = self.x.index_select(0, rows), self.y.index_select(0, rows)
        return Batch(x, y, self.task_ids.index_select(0, rows), self.task)

    def add(self, batch: Batch, logits: Tensor | None) -> None:
        if self.select == "herding":  # chosen when the task ends (after_task)
            self._count(len(batch.y), batch.task)
            return
        slots = self._slots(batch)
        self.x.index_copy_(0, slots, batch.x)
        self.y.index_copy_(0, slots, batch.y)
        self.task_ids.index_copy_(0, slots, batch.task_ids)
        if logits is not None:
            self.logits.index_copy_(0, slots, logits)
        self._count(len(batch.y), batch.task)

    def after_task(self, data: TrainingData) -> None:
        """``select=herding``: the exemplars of every class seen, chosen now
        (:func:`strategies.herding.herded_update`); the other policies chose as they went."""
        if self.select != "herding":
            return
        assert self.model is not None  # bound at setup
        n = self.herded
        keep, rows, x = herding.herded_update(
            self.model, self.y[:n], self.task_ids[:n], data, self.size
        )
        y, task_ids = data.y[rows], data.task_ids[rows]
        with torch.no_grad(), eval_mode(self.model):
            logits = self.model(x, task_ids)  # the stored answers: the model's at the task's end
        parts = [
            (self.x, x),
            (self.y, y),
            (self.task_ids, task_ids),
            (self.logits, logits.to(self.logits.dtype)),
        ]
        held = min(len(keep) + len(rows), self.size)  # more classes than rows: the first
        for buffer, new in parts:
            joined = torch.cat([buffer.index_select(0, keep), new])
            buffer[:held] = joined[:held]
        self.herded = held

    def draw(self) -> Tensor | None:
        """The rows of a replay batch (``replay_batch`` of them, without replacement), for a
        strategy that reads or rewrites what is stored there (X-DER); None while empty."""
        return self._sample_rows()

    def _sample_rows(self) -> Tensor | None:
        """The rows :meth:`sample` replays, drawn without replacement; None while empty."""
        if len(self) == 0:
            return None
        device = self.y.device
        return torch.randperm(len(self), generator=self.generator, device=device)[
            : self.replay_batch
        ]

    def _slots(self, batch: Batch) -> Tensor:
        """The slot :meth:`add` writes each sample of ``batch`` to (``size``: dropped)."""
        if self.select == "gss" and self.model is not None:
            return self._gss_slots(batch)
        if self.per_task:
            return self._task_slots(batch)
        if self.balanced:
            return self._balanced_slots(batch)
        return self._reservoir_slots(batch, self.seen, self.size)

    def _gss_slots(self, batch: Batch) -> Tensor:
        """GSS-Greedy (:mod:`strategies.gss`): fill while there is room, then replace
        slots drawn by score with samples whose gradients differ from the memory's."""
        assert self.model is not None
        n, device = len(batch.y), batch.y.device
        slots = torch.full((n,), self.size, dtype=torch.long, device=device)
        cosines = None
        if len(self):
            rows = torch.randperm(len(self), generator=self.generator, device=device)
            cosines = self._cosines(self.at(rows[: self.candidates]))
        c_batch = torch.tensor(gss.EMPTY_SCORE, device=device)
        if cosines is not None:
            c_batch = cosines.batch_score(batch)
        room = max(self.size - self.seen, 0)
        slots[:room] = torch.arange(self.seen, self.seen + min(room, n), device=device)
        self.scores[slots[:room]] = c_batch
        if room < n and cosines is not None and c_batch < 1:
            rest = Batch(batch.x[room:], batch.y[room:], batch.task_ids[room:], batch.task)
            c = cosines.sample_scores(rest)
            chosen, scores = gss.greedy_slots(c, self.scores[: self.size], self.generator)
            slots[room:], self.scores[: self.size] = chosen, scores
        return slots

    def _cosines(self, stored: Batch) -> gss.Cosines | MlpCosines:
        """GSS's scores against the gradients of the ``stored`` samples."""
        assert self.model is not None
        if self.closed_form:  # acceleration: lifelong.fast.sample_factors, no [N, P] formed
            return MlpCosines(list(self.params.values()), stored)
        return gss.Cosines(self.model, self.params, stored)

    def _task_slots(self, batch: Batch) -> Tensor:
        """per_task: reservoir sampling within the current task's rows, which start after
        the earlier tasks' when a new task arrives (GEM's memory of each task: a uniform
        sample of ``size // n_tasks`` of its samples, as Avalanche's and Mammoth's GEM)."""
        # a new task opens its rows after the earlier tasks'; a detected task past the
        # stream's count (no full share left) shares the last task's rows
        if self.seen and batch.task != self.task and len(self) + self.task_share <= self.size:
            self.region, self.task_seen = len(self), 0
        slots = self._reservoir_slots(batch, self.task_seen, self._task_room(), self.region)
        self.task_seen += len(batch.y)
        return slots

    def _count(self, n: int, task: int) -> None:
        self.seen += n
        self.task = task

    def _reservoir_slots(self, batch: Batch, seen: int, rows: int, first: int = 0) -> Tensor:
        """The slot each sample of ``batch`` goes to by reservoir sampling into the ``rows``
        rows from ``first`` on, ``seen`` samples having come before; ``size`` (scratch)
        when it is dropped."""
        device = batch.y.device
        u = self._draws(len(batch.y), device)
        if device.type == "cpu":  # the same rule in numpy: a dozen fewer tensor ops
            local = reservoir_slots(u.numpy(), seen, rows)
            return torch.from_numpy(np.where(local < rows, local + first, self.size))
        slots = reservoir_slots_on_device(u, seen, rows)
        return torch.where(slots < rows, slots + first, self.size)

    def _draws(self, n: int, device: torch.device) -> Tensor:
        """The uniform draws that decide where ``n`` new samples go."""
        return torch.rand(n, generator=self.generator, device=device, dtype=torch.float64)

    def _balanced_slots(self, batch: Batch) -> Tensor:
        """Class-balancing reservoir, sample by sample, with device tensors only."""
        device = batch.y.device
        keys = batch.task_ids * self.n_outputs + batch.y
        stored = self.task_ids * self.n_outputs + self.y  # class of each slot
        slots = torch.full_like(keys, self.size)
        for i in range(len(keys)):
            key = keys[i]
            self.class_seen.index_add_(0, key[None], torch.ones(1, device=device))
            filling = self.seen + i < self.size
            slot = self.seen + i if filling else self._balanced_victim(stored, key)
            stored[slot] = key
            slots[i] = slot
        # The scratch row may have been written by dropped samples; only the last write to
        # each real slot counts, as for the plain reservoir.
        order = torch.arange(len(keys), device=device)
        last = torch.full((self.size + 1,), -1, device=device, dtype=torch.long)
        last.scatter_reduce_(0, slots, order, reduce="amax")
        return torch.where(last[slots] == order, slots, self.size)

    def _balanced_victim(self, stored: Tensor, key: Tensor) -> Tensor:
        """The slot a full balanced memory gives to a sample of class ``key`` (``size``: none)."""
        device = stored.device
        live = stored[: self.size]
        ones = torch.ones_like(live, dtype=self.class_seen.dtype)
        counts = torch.zeros_like(self.class_seen).scatter_add_(0, live, ones)
        largest = counts.max()
        small = counts[key] < largest
        victim_class = torch.where(small, counts.argmax(), key)
        keep_prob = counts[key] / self.class_seen[key]
        accept = small | (torch.rand((), generator=self.generator, device=device) < keep_prob)
        scores = torch.rand(self.size, generator=self.generator, device=device)
        scores = torch.where(live == victim_class, scores, -1.0)
        return torch.where(accept, scores.argmax(), self.size)


class StackedReservoirs:
    """The reservoirs of a vectorized run's seeds, their buffers stacked ``[S, size + 1, ...]``.

    Every seed's :class:`Reservoir` keeps its own draws (its generator, its rule, balanced
    or not) and sees its buffers as views of row ``s`` of the stacks, so each seed's
    memory holds exactly what it would hold in a run of its own; only the copies in and
    out are done for all seeds at once.
    """

    def __init__(self, memories: list[Reservoir]):
        self.memories = memories
        self.x = torch.stack([m.x for m in memories])
        self.y = torch.stack([m.y for m in memories])
        self.task_ids = torch.stack([m.task_ids for m in memories])
        self.logits = torch.stack([m.logits for m in memories])
        for s, m in enumerate(memories):
            m.x, m.y, m.task_ids, m.logits = self.x[s], self.y[s], self.task_ids[s], self.logits[s]
        rows = self.x.shape[1]
        self.offsets = torch.arange(len(memories), device=self.y.device)[:, None] * rows

    def sample(self) -> tuple[Batch, Tensor] | None:
        """Every seed's replay batch stacked (``x [S, R, D]``, ``y`` ``[S, R]``...) and the
        stored logits ``[S, R, C]``; None while the memories are empty."""
        picks = [m._sample_rows() for m in self.memories]
        if picks[0] is None:  # the seeds have seen equally many samples
            return None
        flat = (torch.stack(picks) + self.offsets).view(-1)  # type: ignore[arg-type]
        rows = (len(self.memories), -1)
        x = self.x.flatten(0, 1).index_select(0, flat).view(*rows, self.x.shape[-1])
        y = self.y.flatten(0, 1).index_select(0, flat).view(rows)
        task_ids = self.task_ids.flatten(0, 1).index_select(0, flat).view(rows)
        logits = self.logits.flatten(0, 1).index_select(0, flat).view(*rows, self.logits.shape[-1])
        return Batch(x, y, task_ids, self.memories[0].task), logits

    def add(self, stacked: Batch, logits: Tensor | None) -> None:
        """Add seed ``s``'s incoming batch, row ``s`` of ``stacked`` (``x [S, B, D]``...),
        with ``logits [S, B, C]`` when they are kept."""
        n, device = stacked.y.shape[1], stacked.y.device
        if any(m.balanced for m in self.memories):  # decided sample by sample, per memory
            seeds = range(len(self.memories))
            batches = [Batch(stacked.x[s], stacked.y[s], stacked.task_ids[s], 0) for s in seeds]
            slots = torch.stack([m._slots(b) for m, b in zip(self.memories, batches, strict=True)])
        else:  # each memory's own draws, the plain rule applied to all at once
            draws = torch.stack([m._draws(n, device) for m in self.memories])
            first = self.memories[0]  # the seeds have seen equally many samples
            slots = reservoir_slots_on_device(draws, first.seen, first.size)
        flat = (slots + self.offsets).view(-1)
        self.x.flatten(0, 1).index_copy_(0, flat, stacked.x.flatten(0, 1))
        self.y.flatten(0, 1).index_copy_(0, flat, stacked.y.flatten())
        self.task_ids.flatten(0, 1).index_copy_(0, flat, stacked.task_ids.flatten())
        if logits is not None:
            self.logits.flatten(0, 1).index_copy_(0, flat, logits.flatten(0, 1))
        for m in self.memories:
            m._count(n, stacked.task)


def reservoir_slots(draws: np.ndarray, seen: int, size: int) -> np.ndarray:
    """Reservoir sampling's slot for each new sample, ``size`` (scratch) when it is dropped.

    Sample ``n`` (counting from 0 over the stream; ``seen`` came before) fills slot ``n``
    while the memory has room, else goes to ``floor(u_n * (n + 1))`` when that is below
    ``size`` (probability ``size / (n + 1)``); of several new samples sent to one slot only
    the last is kept. ``draws`` are the uniform ``u_n`` in [0, 1) (float64); returns int64.
    """
    # a loop over the batch's few dozen draws: cheaper here than a dozen numpy calls
    slots = np.full(len(draws), size)
    kept: dict[int, int] = {}  # slot -> the last new sample sent to it
    for i, u in enumerate(draws.tolist()):
        n = seen + i
        slot = n if n < size else int(u * (n + 1))  # floor: u * (n + 1) >= 0
        if slot < size:
            kept[slot] = i
    for slot, i in kept.items():
        slots[i] = slot
    return slots


def reservoir_slots_on_device(draws: Tensor, seen: int, size: int) -> Tensor:
    """:func:`reservoir_slots` with device tensors only (no host synchronisation).

    ``draws`` is ``[B]``, or ``[S, B]`` for ``S`` memories that have each seen ``seen``
    samples (a vectorized run's seeds): each row is decided on its own.
    """
    device, width = draws.device, draws.shape[-1]
    n = torch.arange(seen, seen + width, device=device)
    slots = torch.where(n < size, n, (draws * (n + 1)).long()).clamp(max=size)
    rows = slots.view(-1, width)
    flat = rows + torch.arange(len(rows), device=device)[:, None] * (size + 1)
    order = torch.arange(width, device=device).expand_as(rows)
    last = torch.full((len(rows) * (size + 1),), -1, device=device, dtype=torch.long)
    last.scatter_reduce_(0, flat.reshape(-1), order.reshape(-1), reduce="amax")
    return torch.where(last[flat] == order, rows, size).view_as(slots)
