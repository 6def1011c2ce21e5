"""The conv workloads of ``lifelong bench``: CIFAR-shaped random tensors and the
hand-written loops of naive, er and der++ on any backbone.

Random pixels and labels are enough to time a loop (the work per step does not depend on
the values); ACC on them is chance. The stream is flat uint8 ``[N, 3*32*32]`` with shape
``(3, 32, 32)`` and no normalisation or augmentation (``x / 255``), so that lifelong, the
hand loop and Avalanche feed the network the same floats.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from lifelong.bench.handloop import evaluate
from lifelong.contracts.scenario import make_task
from lifelong.contracts.stream import Stream
from lifelong.execution.protocol import Protocol
from lifelong.models.axis import build_model

__all__ = ["cifar_shaped_stream", "conv_protocol", "hand_conv"]

SHAPE = (3, 32, 32)


def cifar_shaped_stream(
    n_tasks: int = 5, train_per_task: int = 200, test_per_task: int = 100, seed: int = 0
) -> Stream:
    """Split-CIFAR-10's shape (``n_tasks`` tasks of 2 of 10 classes, class-incremental)
    filled with random uint8 pixels and labels."""
    g = torch.Generator().manual_seed(seed)
    dim = SHAPE[0] * SHAPE[1] * SHAPE[2]
    tasks = []
    for t in range(n_tasks):
        classes = (2 * t, 2 * t + 1)
        images = tuple(
            torch.randint(0, 256, (n, dim), dtype=torch.uint8, generator=g)
            for n in (train_per_task, test_per_task)
        )
        labels = tuple(
            torch.tensor(classes)[torch.randint(2, (n,), generator=g)]
            for n in (train_per_task, test_per_task)
        )
        tasks.append(
            make_task(t, f"{classes[0]}/{classes[1]}", images, labels, classes, 2 * t, "class")  # type: ignore[arg-type]
        )
    return Stream("cifar-shaped random", "class", tuple(tasks), 2 * n_tasks, 1, dim, SHAPE)


def conv_protocol(settings: dict[str, Any]) -> Protocol:
    """The protocol of a workload's ``model`` and ``model.KEY`` settings."""
    from lifelong.models.axis import configure_model

    model = {k: v for k, v in settings.items() if k == "model" or k.startswith("model.")}
    protocol = Protocol(model=model.pop("model"))
    return configure_model(protocol, {k: str(v) for k, v in model.items()}, set())


def hand_conv(
    stream: Stream,
    *,
    strategy: str,
    protocol: Protocol,
    seed: int,
    lr: float,
    batch_size: int,
    memory_size: int = 200,
    replay_batch: int = 32,
    der_alpha: float = 0.5,
) -> list[list[float]]:
    """``naive``, ``er`` or ``der++`` on ``protocol``'s model, written out by hand; return R.

    er: the batch joined with ``replay_batch`` reservoir samples, one cross-entropy.
    der++ (Buzzega et al. 2020, as lifelong composes it): the same joined cross-entropy
    plus ``der_alpha`` times the MSE between the model's logits on the replayed samples
    and those stored with them; a sample is stored with the logits of the model before
    the step.
    """
    torch.manual_seed(seed)
    model = build_model(protocol, stream)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    mem_x = torch.zeros(memory_size, stream.input_dim)
    mem_y = torch.zeros(memory_size, dtype=torch.long)
    mem_z = torch.zeros(memory_size, stream.n_outputs)
    seen = 0
    evaluate(model, stream)
    rows = []
    for task in stream.tasks:
        perm = torch.randperm(len(task.y_train), generator=order)
        for start in range(0, len(perm), batch_size):
            idx = perm[start : start + batch_size]
            x, y = task.x_train[idx].float().div_(255), task.y_train[idx]
            replay = strategy != "naive" and seen > 0
            if replay:
                pick = torch.randint(min(seen, memory_size), (replay_batch,), generator=order)
            bx = torch.cat([x, mem_x[pick]]) if replay else x
            by = torch.cat([y, mem_y[pick]]) if replay else y
            if strategy == "der++":
                with torch.no_grad():
                    z = model(x, torch.full_like(y, task.id))
            optimizer.zero_grad()
            loss = F.cross_entropy(model(bx, torch.full_like(by, task.id)), by)
            if strategy == "der++" and replay:
                replayed = model(mem_x[pick], torch.full_like(pick, task.id))
                loss = loss + der_alpha * F.mse_loss(replayed, mem_z[pick])
            loss.backward()
            optimizer.step()
            if strategy != "naive":
                for i in range(len(y)):  # reservoir sampling
                    slot = (
                        seen
                        if seen < memory_size
                        else int(torch.randint(seen + 1, (1,), generator=order))
                    )
                    if slot < memory_size:
                        mem_x[slot], mem_y[slot] = x[i], y[i]
                        if strategy == "der++":
                            mem_z[slot] = z[i]
                    seen += 1
        rows.append(evaluate(model, stream))
    return rows
