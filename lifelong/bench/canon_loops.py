"""Hand-written loops of GEM, ER-ACE, MIR and GSS: the floor lifelong's runs of them are
measured against (the same stream, model, batch, memory and replay sizes).

Plain tensors and one SGD optimiser; a reservoir memory (GEM's: one per task, as its
paper); each method's own step written
out. They follow the papers as ``strategies/`` does, with host-side bookkeeping where that
is the simplest to write (this is the hand loop a user would write, not a second
reference).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lifelong.bench.handloop import evaluate
from lifelong.contracts.stream import Stream
from lifelong.models.mlp import MLP

__all__ = ["CANON", "hand_canon"]

CANON = ("gem", "er-ace", "mir", "gss")


def hand_canon(
    stream: Stream,
    *,
    strategy: str,
    seed: int,
    lr: float,
    batch_size: int,
    memory_size: int = 200,
    replay_batch: int = 10,
    candidates: int = 50,
    gss_candidates: int = 10,
    margin: float = 0.5,
) -> list[list[float]]:
    """Train ``gem``, ``er-ace``, ``mir`` or ``gss`` written out by hand; return R.

    ``replay_batch`` stored samples join each batch (er-ace, mir, gss); MIR picks them from
    ``candidates``; GSS compares with ``gss_candidates`` stored samples' gradients."""
    torch.manual_seed(seed)
    model = MLP(stream.input_dim, (100, 100), stream.n_outputs, stream.n_heads)
    params = list(model.parameters())
    optimizer = torch.optim.SGD(params, lr=lr)
    g = torch.Generator().manual_seed(seed)
    mem_x = torch.zeros(memory_size, stream.input_dim)
    mem_y = torch.zeros(memory_size, dtype=torch.long)
    mem_t = torch.zeros(memory_size, dtype=torch.long)
    scores = torch.zeros(memory_size)
    seen_classes = torch.zeros(stream.n_outputs, dtype=torch.bool)
    seen = 0
    # GEM's memory is one per task (memory_size // n_tasks rows each, after the earlier
    # tasks'); the others share one reservoir of memory_size rows over the stream
    share = memory_size // len(stream.tasks) if strategy == "gem" else memory_size
    region, task_seen = 0, 0
    evaluate(model, stream)
    rows = []

    def loss_of(x: Tensor, y: Tensor, t: Tensor) -> Tensor:
        return F.cross_entropy(model(x, t), y)

    def flat_grad(x: Tensor, y: Tensor, t: Tensor) -> Tensor:
        grads = torch.autograd.grad(loss_of(x, y, t), params)
        return torch.cat([q.reshape(-1) for q in grads])

    for task in stream.tasks:
        if strategy == "gem":  # the task's rows start after the earlier tasks'
            region, task_seen = region + min(task_seen, share), 0
        perm = torch.randperm(len(task.y_train), generator=g)
        for start in range(0, len(perm), batch_size):
            idx = perm[start : start + batch_size]
            x, y = task.x_train[idx].float().div_(255), task.y_train[idx]
            t = torch.full_like(y, task.id)
            n = region + min(task_seen, share) if strategy == "gem" else min(seen, memory_size)
            optimizer.zero_grad()
            if strategy == "gem":
                g_new = flat_grad(x, y, t)
                past = [k for k in mem_t[:n].unique().tolist() if k != task.id]
                G = [
                    flat_grad(*(m[:n][mem_t[:n] == k] for m in (mem_x, mem_y, mem_t))) for k in past
                ]
                if G and bool((torch.stack(G) @ g_new < 0).any()):
                    g_new = _gem_project(g_new, torch.stack(G), margin)
                _set_grads(params, g_new)
            elif strategy == "er-ace":
                present = torch.zeros_like(seen_classes)
                present[y] = True
                seen_classes |= present
                logits = model(x, t)
                if task.id > 0:
                    newest = int(torch.nonzero(seen_classes).max())
                    keep = present | (torch.arange(len(present)) >= newest)
                    logits = logits.masked_fill(~keep, torch.finfo(logits.dtype).min)
                loss = F.cross_entropy(logits, y)
                if n:
                    pick = torch.randperm(n, generator=g)[:replay_batch]
                    loss = loss + loss_of(mem_x[pick], mem_y[pick], mem_t[pick])
                loss.backward()
            else:  # mir and gss: ER on the incoming batch joined with the chosen replay
                bx, by, bt = x, y, t
                if n:
                    pick = torch.randperm(n, generator=g)
                    if strategy == "mir":
                        pick = pick[:candidates]
                        pick = pick[
                            _mir_top(
                                model, params, x, y, t, mem_x[pick], mem_y[pick], lr, replay_batch
                            )
                        ]
                    else:
                        pick = pick[:replay_batch]
                    bx, by, bt = (
                        torch.cat([x, mem_x[pick]]),
                        torch.cat([y, mem_y[pick]]),
                        torch.cat([t, mem_t[pick]]),
                    )
                loss_of(bx, by, bt).backward()
            optimizer.step()
            if strategy == "gss":
                seen = _gss_add(
                    model, params, x, y, t, mem_x, mem_y, mem_t, scores, seen, g, gss_candidates
                )
                continue
            for i in range(len(y)):  # reservoir sampling (GEM's: within the task's rows)
                count = task_seen if strategy == "gem" else seen
                slot = count if count < share else int(torch.randint(count + 1, (1,), generator=g))
                if slot < share:
                    row = region + slot
                    mem_x[row], mem_y[row], mem_t[row] = x[i], y[i], t[i]
                seen, task_seen = seen + 1, task_seen + 1
        rows.append(evaluate(model, stream))
    return rows


def _set_grads(params: Sequence[Tensor], flat: Tensor) -> None:
    start = 0
    for p in params:
        p.grad = flat[start : start + p.numel()].view_as(p).clone()
        start += p.numel()


def _gem_project(g: Tensor, G: Tensor, margin: float) -> Tensor:
    import quadprog

    M, h = G.double().numpy(), g.double().numpy()
    P = M @ M.T
    P = 0.5 * (P + P.T) + 1e-3 * torch.eye(len(P)).double().numpy()
    eye = torch.eye(len(P)).double().numpy()
    v = quadprog.solve_qp(P, -(M @ h), eye, torch.full((len(P),), margin).double().numpy())[0]
    return torch.from_numpy(v @ M + h).float()


def _mir_top(model, params, x, y, t, cx, cy, lr, k) -> Tensor:
    grads = torch.autograd.grad(F.cross_entropy(model(x, t), y), params)
    ct = torch.zeros_like(cy)
    with torch.no_grad():
        before = F.cross_entropy(model(cx, ct), cy, reduction="none")
        for p, q in zip(params, grads, strict=True):
            p.sub_(lr * q)
        after = F.cross_entropy(model(cx, ct), cy, reduction="none")
        for p, q in zip(params, grads, strict=True):
            p.add_(lr * q)
    return (after - before).topk(min(k, len(cy))).indices


def _gss_add(model, params, x, y, t, mem_x, mem_y, mem_t, scores, seen, g, k) -> int:
    size = len(mem_y)
    n = min(seen, size)
    if n:
        pick = torch.randperm(n, generator=g)[:k]
        stored = torch.stack(
            [
                _grad(model, params, mem_x[j : j + 1], mem_y[j : j + 1], mem_t[j : j + 1])
                for j in pick
            ]
        )
        c_batch = float(F.cosine_similarity(_grad(model, params, x, y, t)[None], stored).max()) + 1
    else:
        c_batch = 0.1
    for i in range(len(y)):
        if seen < size:
            slot, score = seen, c_batch
        elif c_batch < 1:
            score = (
                float(
                    F.cosine_similarity(
                        _grad(model, params, x[i : i + 1], y[i : i + 1], t[i : i + 1])[None], stored
                    ).max()
                )
                + 1
            )
            slot = int(torch.multinomial(scores.clamp_min(1e-12), 1, generator=g))
            if float(torch.rand((), generator=g)) * (scores[slot] + score) >= scores[slot]:
                slot = -1
        else:
            slot = -1
        if slot >= 0:
            mem_x[slot], mem_y[slot], mem_t[slot], scores[slot] = x[i], y[i], t[i], score
        seen += 1
    return seen


def _grad(model, params, x, y, t) -> Tensor:
    grads = torch.autograd.grad(F.cross_entropy(model(x, t), y), params)
    return torch.cat([q.reshape(-1) for q in grads])
