"""Minimal hand-written PyTorch loops: the floor that lifelong's runner is measured against.

No framework: index slices of tensors, one model, SGD, evaluation of every task before
training and after each task. Same model, data, batch size, epochs and seeds as the
lifelong runs they are compared with (the stream is built by lifelong and handed over).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from lifelong.model import MLP
from lifelong.stream import Stream

__all__ = ["hand_loop"]


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
    model = MLP(stream.input_dim, hidden, stream.n_outputs, stream.n_heads)
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
    model: MLP, x: torch.Tensor, y: torch.Tensor, task_id: int
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
def evaluate(model: MLP, stream: Stream) -> list[float]:
    """Accuracy on every task's test set."""
    out = []
    for task in stream.tasks:
        x = task.x_test.float().div_(255)
        pred = model(x, torch.full_like(task.y_test, task.id)).argmax(1)
        out.append(float((pred == task.y_test).float().mean()))
    return out
