"""The Avalanche side of the benchmark: its own strategies and loop on the same stream.

The stream is lifelong's (same tensors, same order), handed to Avalanche as a benchmark
built from tensors; the model is the same MLP with the same initial weights; the loop is
Avalanche's ``train(experience)`` then ``eval(test_stream)`` after every experience (and
once before training, for the init row), with an evaluation plugin that has no loggers.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from typing import Any
from unittest import mock

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.contracts.head_axis import feature_dim
from lifelong.contracts.stream import Stream
from lifelong.execution.protocol import Protocol
from lifelong.models.axis import build_model

__all__ = ["CANON", "EXEMPLAR", "avalanche_available", "avalanche_loop"]


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
    """Run Avalanche's own counterpart of ``strategy``; return the accuracy matrix R.

    ``naive``, ``er``, ``ewc``, ``der++`` and ``la-maml+replay`` are Avalanche's Naive,
    Replay, EWC, DER and LaMAML; ``CANON``'s names are set by :func:`_canon` and
    ``EXEMPLAR``'s (ICaRL, BiC, SCR) by :func:`_exemplar`.

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

    # Avalanche's ICaRL and BiC need the older benchmark's experiences (class order, data)
    older = strategy in ("icarl", "bic")
    benchmark = _classes_benchmark(stream) if older else benchmark_from_stream(stream)
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
    elif strategy in EXEMPLAR:  # ICaRL and SCR split the MLP: these build their own parts
        learner = _exemplar(strategy, net, lr if lr is not None else 0.1, memory_size, common)
    else:
        raise ValueError(f"no Avalanche counterpart for {strategy!r}")
    rows = []
    with _torch_compatible(strategy):
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


EXEMPLAR = ("icarl", "bic", "scr")


def _exemplar(
    strategy: str, net: nn.Module, lr: float, memory_size: int, common: dict[str, Any]
) -> Any:
    """Avalanche 0.6's ICaRL, BiC and SCR at lifelong's defaults (strategies/icarl.py,
    bic.py, scr.py) on ``net``'s own layers and initial weights; ``lr`` is the workload's.

    ``icarl``: ``ICaRL``, feature extractor ``net.body`` (input flattened), classifier
    ``net.head``, ``memory_size`` exemplars (``fixed_memory``, no buffer transform), SGD
    at ``lr`` with ``weight_decay = 1e-3``: lifelong adds ``1e-3 * theta`` to the
    gradient before its SGD step, which is exactly SGD's ``weight_decay``. Avalanche's
    BCE averages over all the outputs where lifelong's sums over the classes seen, so at
    the same ``lr`` each output steps a 1/outputs as far (1/10 on MNIST). Its memory is
    joined to the task's data (each exemplar replayed once an epoch, in the same batches
    of ``batch_size``); lifelong's spreads each exemplar once an epoch over the task's
    batches, added to them.

    ``bic``: ``BiC`` on the MLP as it is (the bias layer acts on the logits; any
    single-head model fits), SGD at ``lr``, ``mem_size = memory_size`` random samples
    per experience, ``val_percentage = 0.1`` (a separate validation set of 10% of
    ``memory_size``, taken out of the new data and not trained on), ``T = 2`` and 200
    epochs of the correction at 0.1 (with momentum 0.9, decay at 50/100/150 and an L2 on
    beta; only the latest task's correction is kept). ``lamb = -1`` weighs the
    cross-entropy by ``1 - lam`` (lifelong's ``bic.convex = true``).

    ``scr``: ``SCR`` on ``SCRModel(body, projection)``, the projection lifelong's
    ``F -> F -> 128`` MLP (fresh weights from torch's generator) with its output
    L2-normalised, as lifelong's ``z`` (SCRLoss does not normalise; SCRModel normalises
    the body's features before the projection, lifelong does not), SGD at ``lr`` on the
    body and projection, a class-balanced memory of ``memory_size`` filled at the end of
    each experience (lifelong's reservoir fills online) replayed 100 at a time,
    temperature 0.07 and :class:`_Shift` (2 px) as the augmentation.

    References: Rebuffi et al. 2017, "iCaRL" (CVPR); Wu et al. 2019, "Large Scale
    Incremental Learning" (CVPR); Mai et al. 2021, "Supervised Contrastive Replay"
    (CVPR-W).
    """
    from avalanche.models import SCRModel
    from avalanche.training.supervised import BiC
    from avalanche.training.supervised.icarl import ICaRL
    from avalanche.training.supervised.supervised_contrastive_replay import SCR

    body = nn.Sequential(nn.Flatten(), net.get_submodule("body"))  # the model contract's
    if strategy == "icarl":
        optimizer = torch.optim.SGD(net.parameters(), lr=lr, weight_decay=1e-3)
        return ICaRL(
            feature_extractor=body,
            classifier=net.get_submodule("head"),
            optimizer=optimizer,
            memory_size=memory_size,
            buffer_transform=None,
            fixed_memory=True,
            **common,
        )
    if strategy == "bic":
        model = _Flat(net)
        return BiC(
            model=model,
            optimizer=torch.optim.SGD(model.parameters(), lr=lr),
            criterion=nn.CrossEntropyLoss(),
            mem_size=memory_size,
            val_percentage=0.1,
            T=2,
            stage_2_epochs=200,
            lr=0.1,
            **common,
        )
    width = feature_dim(net, "Avalanche's SCR")
    projection = nn.Sequential(
        nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 128), _Normalized()
    )
    scr_model = SCRModel(feature_extractor=body, projection=projection)
    return SCR(
        model=scr_model,
        optimizer=torch.optim.SGD(scr_model.parameters(), lr=lr),
        augmentations=_Shift(2),
        mem_size=memory_size,
        batch_size_mem=100,
        temperature=0.07,
        **common,
    )


def _classes_benchmark(stream: Stream) -> Any:
    """The stream as Avalanche's new-classes benchmark (``nc_benchmark``), whose
    experiences carry the ``benchmark.n_classes_per_exp`` and ``classes_order`` that its
    ICaRL reads: the same samples and labels, one experience per task (its classes, in
    the stream's order), no task labels.

    Raises:
        ValueError: a task brings no new classes or its test labels are not its own
            (ICaRL is for class-incremental streams).
    """
    from avalanche.benchmarks import nc_benchmark

    from lifelong.interop.avalanche_streams import avalanche_dataset

    classes = [t.y_train.unique().tolist() for t in stream.tasks]
    order = [c for task in classes for c in task]
    tested = [t.y_test.unique().tolist() for t in stream.tasks]
    if len(set(order)) != len(order) or tested != classes:
        raise ValueError(
            "Avalanche's ICaRL needs new classes in every task, tested on its own "
            f"(class-incremental), got {classes}; use a class-IL stream"
        )
    tasks = stream.tasks
    train = avalanche_dataset(
        torch.cat([t.x_train for t in tasks]), torch.cat([t.y_train for t in tasks]), 0
    )
    test = avalanche_dataset(
        torch.cat([t.x_test for t in tasks]), torch.cat([t.y_test for t in tasks]), 0
    )
    return nc_benchmark(
        train,
        test,
        n_experiences=len(classes),
        task_labels=False,
        shuffle=False,
        fixed_class_order=order,
        per_exp_classes=dict(enumerate(map(len, classes))),
    )


class _MultiStepLR(torch.optim.lr_scheduler.MultiStepLR):
    """torch's MultiStepLR, taking and ignoring the ``verbose`` (a progress print) that
    Avalanche 0.6's BiC passes and that this torch no longer accepts."""

    def __init__(self, *args: Any, verbose: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)


def _torch_compatible(strategy: str) -> AbstractContextManager[Any]:
    """For ``bic``, Avalanche's BiC plugin given :class:`_MultiStepLR` for the run (its
    bias correction builds one with ``verbose``); nothing for the other strategies."""
    if strategy != "bic":
        return nullcontext()
    return mock.patch("avalanche.training.plugins.bic.MultiStepLR", _MultiStepLR)


class _Normalized(nn.Module):
    """Rows scaled to unit L2 norm: SCR's contrastive loss takes normalised embeddings."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1)


class _Shift(nn.Module):
    """SCR's augmentation on flat square single-channel images ``[B, side * side]``: each
    row translated by its own random offset in ``[-shift, shift]`` pixels on each axis,
    zeros shifted in (lifelong's ``scr`` augmentation); other inputs are returned as they
    are, as lifelong's are."""

    def __init__(self, shift: int) -> None:
        super().__init__()
        self.shift = shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side, s, n = math.isqrt(x.shape[1]), self.shift, len(x)
        if s == 0 or side * side != x.shape[1]:
            return x
        wide = side + 2 * s
        padded = F.pad(x.view(n, side, side), (s, s, s, s)).flatten(1)
        dx, dy = torch.randint(0, 2 * s + 1, (2, n), device=x.device)
        steps = torch.arange(side, device=x.device)
        window = (steps[:, None] * wide + steps).flatten()
        return padded.gather(1, (dy * wide + dx)[:, None] + window)


def _row(results: dict[str, Any], n_tasks: int) -> list[float]:
    """R's row from Avalanche's per-experience accuracy metrics."""
    row = [float("nan")] * n_tasks
    for name, value in results.items():
        if name.startswith("Top1_Acc_Exp/eval_phase/test_stream/"):
            row[int(name.rsplit("Exp", 1)[1])] = float(value)
    return row
