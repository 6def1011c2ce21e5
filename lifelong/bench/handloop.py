"""Minimal hand-written PyTorch loops: the floor that lifelong's runner is measured against.

No framework: index slices of tensors, one model, SGD, evaluation of every task before
training and after each task. Same model, data, batch size, epochs and seeds as the
lifelong runs they are compared with (the stream is built by lifelong and handed over).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from lifelong.contracts.stream import Stream
from lifelong.execution.protocol import Protocol
from lifelong.models.axis import build_model

__all__ = ["hand_la_maml", "hand_loop"]


def hand_loop(
    stream: Stream,
    *,
    strategy: str,
    seed: int,
    lr: float,
    batch_size: int,
    epochs: int = 1,
    hidden: tuple[int, ...] = (100, 100),
    memory_size: int = 200,
    replay_batch: int = 32,
    ewc_lambda: float = 100.0,
    fisher_samples: int = 500,
) -> list[list[float]]:
    """Train ``naive``, ``er`` or ``ewc`` written out by hand; return the accuracy matrix R."""
    torch.manual_seed(seed)
    model = build_model(Protocol(hidden=hidden), stream)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    mem_x = torch.zeros(memory_size, stream.input_dim)
    mem_y = torch.zeros(memory_size, dtype=torch.long)
    mem_t = torch.zeros(memory_size, dtype=torch.long)
    seen = 0
    anchors: list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = []
    evaluate(model, stream)
    rows = []
    for task in stream.tasks:
        x_all, y_all = task.x_train, task.y_train
        for _ in range(epochs):
            perm = torch.randperm(len(y_all), generator=order)
            for start in range(0, len(perm), batch_size):
                idx = perm[start : start + batch_size]
                x = x_all[idx].float().div_(255)
                y = y_all[idx]
                t = torch.full_like(y, task.id)
                bx, by, bt = x, y, t
                if strategy == "er" and seen > 0:
                    pick = torch.randint(min(seen, memory_size), (replay_batch,), generator=order)
                    bx = torch.cat([x, mem_x[pick]])
                    by = torch.cat([y, mem_y[pick]])
                    bt = torch.cat([t, mem_t[pick]])
                optimizer.zero_grad()
                loss = F.cross_entropy(model(bx, bt), by)
                for fisher, anchor in anchors:
                    for name, p in model.named_parameters():
                        drift = (fisher[name] * (p - anchor[name]) ** 2).sum()
                        loss = loss + ewc_lambda / 2 * drift
                loss.backward()
                optimizer.step()
                if strategy == "er":
                    for i in range(len(y)):
                        slot = (
                            seen
                            if seen < memory_size
                            else int(torch.randint(seen + 1, (1,), generator=order))
                        )
                        if slot < memory_size:
                            mem_x[slot], mem_y[slot], mem_t[slot] = x[i], y[i], t[i]
                        seen += 1
        if strategy == "ewc":
            keep = torch.randperm(len(task.y_train), generator=order)[:fisher_samples]
            anchors.append(_fisher(model, task.x_train[keep], task.y_train[keep], task.id))
        rows.append(evaluate(model, stream))
    return rows


def _fisher(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, task_id: int
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Empirical diagonal Fisher: the mean of per-sample squared gradients."""
    params = {n: p.detach() for n, p in model.named_parameters()}

    def sample_loss(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, p, (xi[None], torch.full((1,), task_id)))
        return F.cross_entropy(logits, yi[None])

    grads = vmap(grad(sample_loss), in_dims=(None, 0, 0))(params, x.float().div(255), y)
    fisher = {n: g.pow(2).mean(0) for n, g in grads.items()}
    return fisher, {n: p.clone() for n, p in params.items()}


@torch.inference_mode()
def evaluate(
    model: nn.Module, stream: Stream, predict: Callable[[Tensor], Tensor] | None = None
) -> list[float]:
    """Accuracy on every task's test set, the model in eval mode (batch norm's running
    statistics, not the test batch's, and none of them updated); ``predict`` scores a test
    set ``[B, C]`` in place of the model's logits (a nearest-mean or corrected head)."""
    out = []
    model.eval()
    for task in stream.tasks:
        x = task.x_test.float().div_(255)
        scores = model(x, torch.full_like(task.y_test, task.id)) if predict is None else predict(x)
        pred = scores.argmax(1)
        out.append(float((pred == task.y_test).float().mean()))
    model.train()
    return out


def hand_la_maml(
    stream: Stream,
    *,
    seed: int,
    batch_size: int,
    glances: int = 1,
    hidden: tuple[int, ...] = (100, 100),
    memory_size: int = 200,
    replay_batch: int = 10,
    alpha_init: float = 0.15,
    opt_lr: float = 0.3,
    clip: float = 2.0,
    protocol: Protocol | None = None,
) -> list[list[float]]:
    """La-MAML as the official MNIST code writes it, on plain tensors; return R.

    Per glance: reshuffle the batch; one inner SGD step per sample on a chain of fast
    weights ``fast - g * relu(alpha)`` (inner gradients not differentiated: first order);
    the meta-loss on the batch plus ``replay_batch`` memory samples after every step;
    one backward of their mean to the weights and the rates; both gradients clipped to a
    norm of ``clip``; ``alpha -= opt_lr * grad``, then ``theta -= relu(alpha) * grad``.
    The reservoir memory takes each batch after its first glance (as lifelong's does).

    References: Gupta, Yadav & Paull 2020 (La-MAML); montrealrobotics/La-MAML
    ``model/lamaml.py``.

    ``protocol`` names another model (``lamaml-conv``): its forward then takes the fast
    weights through ``torch.func.functional_call``.
    """
    if stream.n_heads != 1:
        raise ValueError("hand_la_maml runs single-head streams (its net takes no task ids)")
    torch.manual_seed(seed)
    model = build_model(protocol or Protocol(hidden=hidden), stream)
    evaluate(model, stream)
    names = [n for n, _ in model.named_parameters()]
    weights = [p.detach().clone().requires_grad_() for p in model.parameters()]
    rates = [torch.full_like(w, alpha_init).requires_grad_() for w in weights]
    order = torch.Generator().manual_seed(seed)
    mem_x = torch.zeros(memory_size, stream.input_dim)
    mem_y = torch.zeros(memory_size, dtype=torch.long)
    seen = 0

    def net(x: torch.Tensor, w: list[torch.Tensor]) -> torch.Tensor:
        if protocol is not None:
            ids = torch.zeros(len(x), dtype=torch.long)
            return functional_call(model, dict(zip(names, w, strict=True)), (x, ids))
        for i in range(0, len(w) - 2, 2):
            x = F.linear(x, w[i], w[i + 1]).relu()
        return F.linear(x, w[-2], w[-1])

    rows = []
    for task in stream.tasks:
        perm = torch.randperm(len(task.y_train), generator=order)
        for start in range(0, len(perm), batch_size):
            idx = perm[start : start + batch_size]
            x_in, y_in = task.x_train[idx].float().div_(255), task.y_train[idx]
            for _ in range(glances):
                shuffle = torch.randperm(len(y_in), generator=order)
                x, y = x_in[shuffle], y_in[shuffle]
                pick = torch.randperm(min(seen, memory_size), generator=order)[:replay_batch]
                bx, by = torch.cat([x, mem_x[pick]]), torch.cat([y, mem_y[pick]])
                fast, metas = weights, []
                for i in range(len(y)):
                    loss = F.cross_entropy(net(x[i : i + 1], fast), y[i : i + 1])
                    grads = torch.autograd.grad(loss, fast)
                    fast = [f - g * r.relu() for f, g, r in zip(fast, grads, rates, strict=True)]
                    metas.append(F.cross_entropy(net(bx, fast), by))
                meta = torch.stack(metas).mean()
                both = torch.autograd.grad(meta, weights + rates)
                g_w, g_a = (
                    _clipped(both[: len(weights)], clip),
                    _clipped(both[len(weights) :], clip),
                )
                with torch.no_grad():
                    for w, r, gw, ga in zip(weights, rates, g_w, g_a, strict=True):
                        r.sub_(ga, alpha=opt_lr)
                        w.sub_(gw * r.relu())
            for i in range(len(y_in)):  # reservoir sampling
                slot = (
                    seen
                    if seen < memory_size
                    else int(torch.randint(seen + 1, (1,), generator=order))
                )
                if slot < memory_size:
                    mem_x[slot], mem_y[slot] = x_in[i], y_in[i]
                seen += 1
        with torch.no_grad():
            for p, w in zip(model.parameters(), weights, strict=True):
                p.copy_(w)
        rows.append(evaluate(model, stream))
    return rows


def _clipped(grads: tuple[torch.Tensor, ...], max_norm: float) -> list[torch.Tensor]:
    """``torch.nn.utils.clip_grad_norm_``'s rule on a list of gradients."""
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    return [g * scale for g in grads]
