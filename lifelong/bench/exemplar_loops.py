"""Hand-written loops of iCaRL, BiC and SCR: the floor lifelong's runs of them are measured
against (the same stream, model, batch, exemplar and replay sizes, lifelong's defaults).

Plain tensors, one ``torch.optim.SGD`` and the step of ``strategies/icarl.py``, ``bic.py``
and ``scr.py`` written out: the same samples joined to each batch, the same losses and
masks, herding's exemplars (iCaRL's Algorithms 4-5) at each task's end, and the nearest
mean of L2-normalised ``body`` features (the memory's where it holds the class, else the
running mean of the class's incoming samples) to predict with iCaRL and SCR. They depart
only where a hand loop is simpler to write, with the same work: class-incremental streams
only (a prototype per class, not per task and class; lifelong's are the same there);
iCaRL's weight decay is ``SGD(weight_decay=...)`` (the same ``grad + wd * theta``); SCR's
projection takes PyTorch's default initialisation from the global generator, not
lifelong's sampling generator; reservoir sampling decides sample by sample on the host;
the prototypes are computed once per evaluation and every test set scored in one batch per
task. Draws come from one generator, so the numbers are not lifelong's bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from lifelong.bench.handloop import evaluate
from lifelong.contracts.stream import Stream, Task
from lifelong.models.mlp import MLP

__all__ = ["EXEMPLAR", "hand_exemplar"]

EXEMPLAR = ("icarl", "bic", "scr")

Stages = list[tuple[Tensor, Tensor, Tensor]]  # BiC: (new classes [C] bool, alpha, beta)

# lifelong's defaults that the bench leaves as they are
VAL_FRACTION = 0.1  # BiC: share of each class's exemplars held out for the correction
BIAS_STEPS, BIAS_LR = 200, 0.1  # BiC: full-batch SGD fit of alpha and beta
PROJECTION_DIM = 128  # SCR: width of the projection's output
SHIFT = 2  # SCR: largest translation of the augmented view, in pixels


def hand_exemplar(
    stream: Stream,
    *,
    strategy: str,
    seed: int,
    lr: float,
    batch_size: int,
    memory_size: int = 200,
    replay_batch: int | None = None,
    weight_decay: float = 1e-3,
    temperature: float | None = None,
) -> list[list[float]]:
    """Train ``icarl``, ``bic`` or ``scr`` written out by hand; return R (a row per task).

    Args:
        memory_size: exemplars (icarl, bic) or reservoir samples (scr) kept in all.
        replay_batch: stored samples joined to each batch (None: lifelong's defaults:
            for icarl every exemplar once an epoch, spread evenly over the task's
            batches; 32 for bic, 100 for scr).
        weight_decay: iCaRL's L2 weight decay.
        temperature: BiC's distillation temperature or SCR's contrastive one (None: 2.0
            and 0.07).

    References: Rebuffi et al. 2017 (iCaRL); Wu et al. 2019 (BiC); Mai et al. 2021 (SCR).
    """
    if strategy not in EXEMPLAR:
        raise ValueError(f"hand_exemplar runs {', '.join(EXEMPLAR)}, not {strategy!r}")
    if stream.setting != "class":
        raise ValueError(f"hand_exemplar runs class-incremental streams, not {stream.setting!r}")
    torch.manual_seed(seed)
    model = MLP(stream.input_dim, (100, 100), stream.n_outputs, stream.n_heads)
    g = torch.Generator().manual_seed(seed)
    evaluate(model, stream, model)  # the init row: no prototype yet, the model's own logits
    run = (stream, model, g, lr, batch_size, memory_size)
    if strategy == "icarl":
        return _icarl(*run, replay_batch, weight_decay)
    if strategy == "bic":
        return _bic(*run, replay_batch or 32, temperature or 2.0)
    return _scr(*run, replay_batch or 100, temperature or 0.07)


def _icarl(
    stream: Stream,
    model: MLP,
    g: torch.Generator,
    lr: float,
    batch_size: int,
    size: int,
    replay: int | None,  # None or 0: spread
    weight_decay: float,
) -> list[list[float]]:
    """iCaRL: BCE on the batch and its exemplars (``replay`` drawn for each batch, or
    None: the task's k-th of B batches takes the k-th of B near-equal shares of the
    exemplars in a random order), the old network's sigmoid outputs the targets of the
    classes learned before; herding and a copy of the network after each task; the
    nearest mean of exemplars to predict."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay)
    ex_x, ex_y = torch.zeros(0, stream.input_dim), torch.zeros(0, dtype=torch.long)
    sums, counts = torch.zeros(stream.n_outputs, model.feature_dim), torch.zeros(stream.n_outputs)
    seen = torch.zeros(stream.n_outputs, dtype=torch.bool)
    learned = torch.zeros_like(seen)
    old: dict[str, Tensor] | None = None
    rows = []
    for task in stream.tasks:
        current = torch.zeros_like(seen)
        current[task.y_train] = True
        seen |= current
        distilled = learned & ~current
        n, batches = len(ex_y), -(-len(task.y_train) // batch_size)
        order = None if replay else torch.randperm(n, generator=g)
        for k, (x, y) in enumerate(_batches(task, batch_size, g)):
            if order is not None:  # every exemplar once in the task's pass
                pick = order[k * n // batches : (k + 1) * n // batches]
            else:  # without replacement
                pick = torch.randperm(n, generator=g)[:replay]
            bx, by = torch.cat([x, ex_x[pick]]), torch.cat([y, ex_y[pick]])
            logits = model(bx)
            target = F.one_hot(by, stream.n_outputs).float()
            if old is not None:
                with torch.no_grad():
                    old_out = functional_call(model, old, (bx,)).sigmoid()
                target = torch.where(distilled, old_out, target)
            # summed over the classes seen, averaged over the batch (icarl.sigmoid_loss)
            bce = F.binary_cross_entropy_with_logits(
                logits[:, seen], target[:, seen], reduction="sum"
            )
            optimizer.zero_grad()
            (bce / len(bx)).backward()
            optimizer.step()
            _observe(model, x, y, sums, counts)
        ex_x, ex_y = _herded(model, task, ex_x, ex_y, size)
        old = {n: p.detach().clone() for n, p in model.named_parameters()}
        learned = seen.clone()
        rows.append(evaluate(model, stream, _nearest_mean(model, sums, counts, ex_x, ex_y)))
    return rows


def _bic(
    stream: Stream,
    model: MLP,
    g: torch.Generator,
    lr: float,
    batch_size: int,
    size: int,
    replay: int,
    t: float,
) -> list[list[float]]:
    """BiC: CE on the batch and ``replay`` exemplars not held out plus ``lam T^2 KL`` to the
    old (corrected) network; herding, a held-out split and a fit of the new classes'
    ``alpha``, ``beta`` after each task; the corrected logits to predict."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    ex_x, ex_y = torch.zeros(0, stream.input_dim), torch.zeros(0, dtype=torch.long)
    held = torch.zeros(0, dtype=torch.bool)
    seen = torch.zeros(stream.n_outputs, dtype=torch.bool)
    learned = torch.zeros_like(seen)
    old: dict[str, Tensor] | None = None
    stages: Stages = []
    old_stages: Stages = []
    rows = []
    for task in stream.tasks:
        current = torch.zeros_like(seen)
        current[task.y_train] = True
        seen |= current
        distilled = learned & ~current
        lam = float(distilled.sum()) / float(seen.sum())
        for x, y in _batches(task, batch_size, g):
            train = (~held).nonzero().flatten()  # the held-out exemplars are not replayed
            pick = train[torch.randperm(len(train), generator=g)[:replay]]
            bx, by = torch.cat([x, ex_x[pick]]), torch.cat([y, ex_y[pick]])
            logits = _corrected(model(bx), stages).masked_fill(~seen, float("-inf"))
            loss = F.cross_entropy(logits, by)
            if old is not None and lam > 0:
                with torch.no_grad():
                    target = _corrected(functional_call(model, old, (bx,)), old_stages)
                log_new = F.log_softmax(logits[:, distilled] / t, 1)
                log_old = F.log_softmax(target[:, distilled] / t, 1)
                kl = F.kl_div(log_new, log_old, reduction="batchmean", log_target=True)
                loss = loss + lam * t * t * kl
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        ex_x, ex_y = _herded(model, task, ex_x, ex_y, size)
        held = _hold_out(ex_y, g)
        new = current & ~learned
        if bool(learned.any()) and bool(new.any()):
            per_class = int(held.sum()) // int(seen.sum())
            val_x, val_y = _validation(task, ex_x, ex_y, held & ~new[ex_y], new, per_class, g)
            stages.append(_fit_correction(model, stages, val_x, val_y, new, seen))
        old, old_stages = {n: p.detach().clone() for n, p in model.named_parameters()}, list(stages)
        learned = seen.clone()
        rows.append(evaluate(model, stream, _corrected_scores(model, stages, seen)))
    return rows


def _scr(
    stream: Stream,
    model: MLP,
    g: torch.Generator,
    lr: float,
    batch_size: int,
    size: int,
    replay: int,
    t: float,
) -> list[list[float]]:
    """SCR: SupCon on two views (as is, translated) of the batch and ``replay`` reservoir
    samples, through the body and a projection; the memory's nearest class mean to predict."""
    width = model.feature_dim
    projection = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, PROJECTION_DIM))
    optimizer = torch.optim.SGD([*model.body.parameters(), *projection.parameters()], lr=lr)
    mem_x, mem_y = torch.zeros(size, stream.input_dim), torch.zeros(size, dtype=torch.long)
    sums, counts = torch.zeros(stream.n_outputs, width), torch.zeros(stream.n_outputs)
    seen, rows = 0, []
    for task in stream.tasks:
        for x, y in _batches(task, batch_size, g):
            pick = torch.randperm(min(seen, size), generator=g)[:replay]
            bx, by = torch.cat([x, mem_x[pick]]), torch.cat([y, mem_y[pick]])
            views = torch.cat([bx, _translated(bx, g)])
            z = F.normalize(projection(model.body(views)), dim=1)
            loss = _supcon(z, torch.cat([by, by]), t)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            for i in range(len(y)):  # reservoir sampling
                slot = seen if seen < size else int(torch.randint(seen + 1, (1,), generator=g))
                if slot < size:
                    mem_x[slot], mem_y[slot] = x[i], y[i]
                seen += 1
            _observe(model, x, y, sums, counts)
        n = min(seen, size)
        predict = _nearest_mean(model, sums, counts, mem_x[:n], mem_y[:n])
        rows.append(evaluate(model, stream, predict))
    return rows


def _batches(task: Task, batch_size: int, g: torch.Generator) -> list[tuple[Tensor, Tensor]]:
    """The task's training samples, shuffled, as float batches ``x / 255``."""
    perm = torch.randperm(len(task.y_train), generator=g)
    out = []
    for start in range(0, len(perm), batch_size):
        idx = perm[start : start + batch_size]
        out.append((task.x_train[idx].float().div_(255), task.y_train[idx]))
    return out


def _embed(model: MLP, x: Tensor) -> Tensor:
    """L2-normalised ``body`` features ``[B, F]``."""
    return F.normalize(model.body(x), dim=1)


@torch.no_grad()
def _observe(model: MLP, x: Tensor, y: Tensor, sums: Tensor, counts: Tensor) -> None:
    """The running class means of the incoming samples' features (after the step)."""
    sums.index_add_(0, y, _embed(model, x))
    counts.index_add_(0, y, torch.ones(len(y)))


@torch.no_grad()
def _nearest_mean(
    model: MLP, sums: Tensor, counts: Tensor, mem_x: Tensor, mem_y: Tensor
) -> Callable[[Tensor], Tensor]:
    """Scores of the nearest class mean: the memory's class means where it holds the
    class, else the running means; a class with neither scores the lowest float."""
    means, known = sums / counts.clamp(min=1)[:, None], counts > 0
    if len(mem_y):
        kept = torch.zeros_like(sums).index_add_(0, mem_y, _embed(model, mem_x))
        n = torch.bincount(mem_y, minlength=len(sums)).float()
        means = torch.where((n > 0)[:, None], kept / n.clamp(min=1)[:, None], means)
        known = known | (n > 0)
    means = F.normalize(means, dim=1)

    def predict(x: Tensor) -> Tensor:
        scores = -torch.cdist(_embed(model, x), means).pow(2)
        return scores.masked_fill(~known, torch.finfo(scores.dtype).min)

    return predict


@torch.no_grad()
def _herded(model: MLP, task: Task, ex_x: Tensor, ex_y: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """iCaRL's exemplar update: ``size // classes`` per class seen, the old classes their
    first ones (Algorithm 5), each new class a herding choice (Algorithm 4) over the
    normalised features of all its training samples."""
    per_class = max(size // len(torch.unique(torch.cat([ex_y, task.y_train]))), 1)
    keep = [torch.nonzero(ex_y == c).flatten()[:per_class] for c in ex_y.unique()]
    xs, ys = [ex_x[torch.cat(keep)] if keep else ex_x], [ex_y[torch.cat(keep)] if keep else ex_y]
    for c in task.y_train.unique():
        x = task.x_train[task.y_train == c].float().div_(255)
        feats = _embed(model, x)
        target, total = feats.mean(0), torch.zeros(feats.shape[1])
        picked = torch.zeros(len(x), dtype=torch.bool)
        order = []
        for k in range(1, min(per_class, len(x)) + 1):
            gap = (target - (total + feats) / k).norm(dim=1).masked_fill(picked, float("inf"))
            i = int(gap.argmin())
            order.append(i)
            picked[i] = True
            total += feats[i]
        xs.append(x[order])
        ys.append(torch.full((len(order),), int(c)))
    return torch.cat(xs), torch.cat(ys)


def _hold_out(y: Tensor, g: torch.Generator) -> Tensor:
    """BiC's validation split: a random ``VAL_FRACTION`` (at least one) of each class's
    exemplars, drawn anew after each exemplar update."""
    held = torch.zeros(len(y), dtype=torch.bool)
    for c in y.unique():
        rows = (y == c).nonzero().flatten()
        n = max(round(len(rows) * VAL_FRACTION), 1) if len(rows) > 1 else 0
        held[rows[torch.randperm(len(rows), generator=g)[:n]]] = True
    return held


def _validation(
    task: Task,
    ex_x: Tensor,
    ex_y: Tensor,
    old: Tensor,
    new: Tensor,
    per_class: int,
    g: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """The old classes' held-out exemplars (``old``) and ``per_class`` random samples (at
    least one) of each new class from the task."""
    picked = []
    for c in new.nonzero().flatten():
        rows = (task.y_train == c).nonzero().flatten()
        picked.append(rows[torch.randperm(len(rows), generator=g)[: max(per_class, 1)]])
    rows = torch.cat(picked)
    x = task.x_train[rows].float().div_(255)
    return torch.cat([ex_x[old], x]), torch.cat([ex_y[old], task.y_train[rows]])


def _corrected(logits: Tensor, stages: Stages) -> Tensor:
    """BiC's Eq. 4: ``alpha * o + beta`` on the logits of the classes each stage added."""
    for classes, alpha, beta in stages:
        logits = torch.where(classes, alpha * logits + beta, logits)
    return logits


def _corrected_scores(model: MLP, stages: Stages, seen: Tensor) -> Callable[[Tensor], Tensor]:
    """BiC's prediction: the corrected logits, the classes not seen yet scoring lowest."""

    def predict(x: Tensor) -> Tensor:
        return _corrected(model(x), stages).masked_fill(~seen, torch.finfo(x.dtype).min)

    return predict


def _fit_correction(
    model: MLP, stages: Stages, x: Tensor, y: Tensor, new: Tensor, seen: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """``(new, alpha, beta)`` by full-batch SGD on the validation set, the network frozen."""
    with torch.no_grad():
        logits = _corrected(model(x), stages)
    alpha, beta = torch.ones((), requires_grad=True), torch.zeros((), requires_grad=True)
    optimizer = torch.optim.SGD([alpha, beta], lr=BIAS_LR)
    for _ in range(BIAS_STEPS):
        corrected = torch.where(new, alpha * logits + beta, logits)
        loss = F.cross_entropy(corrected.masked_fill(~seen, float("-inf")), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return new, alpha.detach(), beta.detach()


def _translated(x: Tensor, g: torch.Generator) -> Tensor:
    """Each row's image moved by its own offset in ``[-SHIFT, SHIFT]`` pixels (zero fill;
    square single-channel images, other inputs as they are), as scr.py's ``_augment``."""
    side, s = math.isqrt(x.shape[1]), SHIFT
    if s == 0 or side * side != x.shape[1]:
        return x
    wide = side + 2 * s
    padded = F.pad(x.view(-1, side, side), (s, s, s, s)).flatten(1)
    dx, dy = torch.randint(0, 2 * s + 1, (2, len(x)), generator=g)
    steps = torch.arange(side)
    window = (steps[:, None] * wide + steps).flatten()
    return padded.gather(1, (dy * wide + dx)[:, None] + window)


def _supcon(z: Tensor, y: Tensor, t: float) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out) of normalised ``z [N, d]``:
    each anchor's mean ``-log softmax`` over its positives, averaged over the anchors."""
    eye = torch.eye(len(z), dtype=torch.bool)
    sim = (z @ z.T / t).masked_fill(eye, float("-inf"))
    log_prob = sim - sim.logsumexp(1, keepdim=True)
    positive = (y[:, None] == y[None, :]) & ~eye
    count = positive.sum(1)
    per_anchor = -log_prob.masked_fill(~positive, 0).sum(1) / count.clamp(min=1)
    return per_anchor[count > 0].mean()
