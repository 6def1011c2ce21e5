"""The Avalanche side of the benchmark: its own strategies and loop on the same stream.

The stream is lifelong's (same tensors, same order), handed to Avalanche as a benchmark
built from tensors; the model is the same MLP with the same initial weights; the loop is
Avalanche's ``train(experience)`` then ``eval(test_stream)`` after every experience (and
once before training, for the init row), with an evaluation plugin that has no loggers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lifelong.contracts.stream import Stream
from lifelong.execution.protocol import Protocol
from lifelong.models.axis import build_model

__all__ = ["avalanche_available", "avalanche_loop"]


def avalanche_available() -> bool:
    """Whether avalanche-lib imports here (the ``lifelong[avalanche]`` extra)."""
    try:
        import avalanche  # noqa: F401
    except Exception:  # avalanche fails in several ways beside torch builds it does not fit
        return False
    return True


class _Flat(nn.Module):
    """Avalanche calls ``model(x)``; lifelong's MLP takes ``(x, task_ids)``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


def avalanche_loop(
    stream: Stream,
    *,
    strategy: str,
    seed: int,
    lr: float | None,
    batch_size: int,
    epochs: int = 1,
    hidden: tuple[int, ...] = (100, 100),
    memory_size: int = 200,
    ewc_lambda: float = 100.0,
    replay_batch: int = 10,
    alpha_init: float = 0.15,
    opt_lr: float = 0.3,
    clip: float = 2.0,
    der_alpha: float = 0.5,
    protocol: Protocol | None = None,
) -> list[list[float]]:
    """Run Avalanche's Naive, Replay, EWC, DER or LaMAML; return the accuracy matrix R.

    ``der++`` is ``DER`` with ``alpha = der_alpha``, ``beta = 1`` and ``replay_batch``
    replayed samples; ``protocol`` names another model than the MLP (the conv workloads).

    ``la-maml+replay`` is ``lamaml_v2.LaMAML``, first order, one inner step per sample
    (``n_inner_updates = batch_size``), ``alpha_init``, ``lr_alpha = opt_lr``,
    ``grad_clip_norm = clip``, a reservoir of ``memory_size`` replayed ``replay_batch``
    at a time; ``lr`` is unused (its weights move by the learned rates).
    """
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.training.supervised import DER, EWC, Naive, Replay
    from avalanche.training.supervised.lamaml_v2 import LaMAML

    from lifelong.interop import benchmark_from_stream

    benchmark = benchmark_from_stream(stream)
    torch.manual_seed(seed)
    net = build_model(protocol or Protocol(hidden=hidden), stream)
    model: nn.Module = net if strategy == "la-maml+replay" else _Flat(net)  # LaMAML: model(x, t)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr if lr is not None else 0.1)
    common: dict[str, Any] = {
        "train_mb_size": batch_size,
        "train_epochs": epochs,
        "eval_mb_size": 2048,
        "evaluator": EvaluationPlugin(accuracy_metrics(experience=True), loggers=[]),
        "device": "cpu",
    }
    criterion = nn.CrossEntropyLoss()
    if strategy == "naive":
        learner = Naive(model=model, optimizer=optimizer, criterion=criterion, **common)
    elif strategy == "er":
        learner = Replay(
            model=model, optimizer=optimizer, criterion=criterion, mem_size=memory_size, **common
        )
    elif strategy == "der++":
        learner = DER(
            model=model,
            optimizer=optimizer,
            criterion=criterion,
            mem_size=memory_size,
            batch_size_mem=replay_batch,
            alpha=der_alpha,
            beta=1.0,
            **common,
        )
    elif strategy == "ewc":
        learner = EWC(
            model=model, optimizer=optimizer, criterion=criterion, ewc_lambda=ewc_lambda, **common
        )
    elif strategy == "la-maml+replay":
        learner = LaMAML(
            model=model,
            optimizer=optimizer,
            criterion=criterion,
            n_inner_updates=batch_size,
            second_order=False,
            grad_clip_norm=clip,
            lr_alpha=opt_lr,
            alpha_init=alpha_init,
            max_buffer_size=memory_size,
            buffer_mb_size=replay_batch,
            **common,
        )
    elif strategy in CANON:
        learner = _canon(strategy, model, optimizer, criterion, memory_size, stream, common)
    else:
        raise ValueError(f"no Avalanche counterpart for {strategy!r}")
    rows = []
    learner.eval(benchmark.test_stream)  # the init row, as lifelong and the hand loop do
    for experience in benchmark.train_stream:
        learner.train(experience)
        rows.append(_row(learner.eval(benchmark.test_stream), stream.n_tasks))
    return rows


CANON = ("gem", "er-ace", "mir", "gss")


def _canon(
    strategy: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    memory_size: int,
    stream: Stream,
    common: dict[str, Any],
) -> Any:
    """Avalanche 0.6's GEM, ER_ACE, MIR and GSS_greedy at lifelong's sizes: GEM keeps
    ``memory_size / n_tasks`` samples per experience (its memory is per task) at
    memory_strength 0.5; ER_ACE and MIR a memory of ``memory_size`` replayed 10 at a time
    (MIR from 50 candidates); GSS_greedy one replayed 32 at a time (its ReplayDataLoader's
    default, which GSS_greedy does not expose) and compared with 10 stored gradients."""
    from avalanche.training.supervised import ER_ACE, GEM, MIR, GSS_greedy

    base = {"model": model, "optimizer": optimizer, "criterion": criterion, **common}
    if strategy == "gem":
        per_task = memory_size // stream.n_tasks
        return GEM(patterns_per_exp=per_task, memory_strength=0.5, **base)
    if strategy == "er-ace":
        return ER_ACE(mem_size=memory_size, batch_size_mem=10, **base)
    if strategy == "mir":
        return MIR(mem_size=memory_size, subsample=50, batch_size_mem=10, **base)
    return GSS_greedy(mem_size=memory_size, mem_strength=10, input_size=[stream.input_dim], **base)


def _row(results: dict[str, Any], n_tasks: int) -> list[float]:
    """R's row from Avalanche's per-experience accuracy metrics."""
    row = [float("nan")] * n_tasks
    for name, value in results.items():
        if name.startswith("Top1_Acc_Exp/eval_phase/test_stream/"):
            row[int(name.rsplit("Exp", 1)[1])] = float(value)
    return row
