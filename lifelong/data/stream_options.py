"""Stream options: hidden, blurry or gradual boundaries, data-incremental and imbalanced
tasks, and the online metrics' schedule, on top of any scenario's stream.

A scenario builds its stream of clean tasks; :func:`apply_options` then changes what
*arrives* during each task's stretch of the stream, while every task keeps its own test
set, so the accuracy matrix R, forgetting and transfer stay defined on the true partition.
``boundaries`` is applied by the runner (:mod:`lifelong.execution.runner`), not here.

References: Koh et al. 2022, "Online Continual Learning on Class Incremental Blurry Task
Configuration with Anytime Inference" (ICLR; i-Blurry-N-M); Aljundi, Kelchtermans &
Tuytelaars 2019, "Task-Free Continual Learning" (CVPR); Lomonaco & Maltoni 2017, CORe50
(its "new instances" scenario: every class in every task); Cui et al. 2019, "Class-Balanced
Loss Based on Effective Number of Samples" (the imbalance ratio rho).
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import ClassVar

import torch

from lifelong.contracts.params import as_config, param
from lifelong.contracts.stream import Stream, Task
from lifelong.errors import UserError

__all__ = ["BOUNDARIES", "StreamOptions", "apply_options", "check_options"]

BOUNDARIES = ("given", "hidden", "detect")


@dataclass(frozen=True)
class StreamOptions:
    """How a stream's tasks arrive and which online metrics are measured.

    Set from the CLI like any parameter (``--set boundaries=hidden --set blurry=10``);
    every option composes with the others and with every setting, except hidden (or
    detected) boundaries with ``setting=task``, which needs the task id.
    """

    name: ClassVar[str] = "stream"

    boundaries: str = param(
        "given",
        "given (task ids and boundary hooks), hidden (neither) or detect (hidden; "
        "the hooks fire where the loss plateaus)",
        choices=BOUNDARIES,
    )
    blurry: int = param(
        0,
        "i-Blurry-N-M's M: percent of each task's samples from other tasks' blurry classes",
        ge=0,
        le=100,
    )
    disjoint: int = param(
        50,
        "with blurry: percent of classes that never leave their task (i-Blurry-N-M's N)",
        ge=0,
        le=100,
    )
    gradual: int = param(
        0,
        "samples over which each task blends linearly into the next (0: a sharp switch)",
        ge=0,
    )
    incremental: str = param(
        "task",
        "task (the scenario's tasks) or data (every task holds every class, in chunks)",
        choices=("task", "data"),
    )
    imbalance: float = param(
        1.0, "ratio of a task's most to least frequent class, long-tailed (1: as built)", ge=1
    )
    anytime_every: int = param(
        0, "samples seen between anytime evaluations (0: none; A_AUC needs them)", ge=0
    )
    anytime_size: int = param(
        500,
        "test samples of the classes seen so far that each anytime evaluation scores",
        ge=1,
    )
    lca_beta: int = param(
        0, "batches of each new task that LCA_beta follows (0: none; A-GEM uses 10)", ge=0
    )
    few_shot: bool = param(
        False, "measure accuracy after 1, 5, 10 SGD steps on each task before training it"
    )
    few_shot_lr: float = param(0.1, "SGD learning rate of the few-shot adaptation", gt=0)

    @property
    def boundaries_given(self) -> bool:
        """Whether the strategy is told task ids and gets its boundary hooks."""
        return self.boundaries == "given"

    def changed(self) -> dict[str, object]:
        """The options that differ from their defaults (what a run's config records)."""
        default = as_config(StreamOptions())
        return {k: v for k, v in as_config(self).items() if default[k] != v}


def check_options(options: StreamOptions, stream: Stream) -> None:
    """Refuse, before any work, options that cannot hold for ``stream`` (as built)."""
    if not options.boundaries_given and stream.setting == "task":
        raise UserError(
            f"boundaries={options.boundaries} with setting=task: a task-incremental model "
            "picks its head by the task id, which hidden boundaries withhold; use "
            "setting=class or domain, or boundaries=given"
        )
    if options.incremental == "data" and stream.setting == "task":
        raise UserError(
            "incremental=data with setting=task: every task then holds every class, so no "
            "task id tells the heads apart; use setting=class or domain"
        )
    if options.blurry and stream.n_tasks < 2:
        raise UserError(f"blurry={options.blurry} needs at least 2 tasks; set n_tasks >= 2")
    if options.blurry and options.disjoint == 100:
        raise UserError(
            f"blurry={options.blurry} with disjoint=100 leaves no class to blur; "
            "lower disjoint (i-Blurry uses 50)"
        )


def apply_options(stream: Stream, options: StreamOptions, seed: int) -> Stream:
    """``stream`` with its training samples rearranged as ``options`` say: data-incremental
    chunks, then the imbalance, then blurry classes, then the gradual blend. Test sets stay
    those of the true tasks (in chunks too, when data-incremental). Same seed, same stream.
    """
    check_options(options, stream)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + 17)
    if options.incremental == "data":
        stream = _data_incremental(stream, generator)
    if options.imbalance > 1:
        stream = _imbalanced(stream, options.imbalance, generator)
    if options.blurry:
        stream = _blurry(stream, options.blurry, options.disjoint, generator)
    if options.gradual:
        stream = _gradual(stream, options.gradual, generator)
    return stream


Rows = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""Training samples as ``(x, y, task_ids)``: inputs, targets and the task each came from."""


def _rows(task: Task, index: torch.Tensor | slice = slice(None)) -> Rows:
    """The training samples ``index`` of ``task``, with the task each came from."""
    origin = task.train_task_ids
    if origin is None:
        origin = torch.full_like(task.y_train, task.id)
    return task.x_train[index], task.y_train[index], origin[index]


def _cat(pieces: list[Rows]) -> Rows:
    x, y, ids = zip(*pieces, strict=True)
    return torch.cat(x), torch.cat(y), torch.cat(ids)


def _take(rows: Rows, index: torch.Tensor | slice) -> Rows:
    return rows[0][index], rows[1][index], rows[2][index]


def _with_rows(task: Task, rows: Rows) -> Task:
    """``task`` whose training samples are ``rows``."""
    return dataclasses.replace(task, x_train=rows[0], y_train=rows[1], train_task_ids=rows[2])


def _data_incremental(stream: Stream, generator: torch.Generator) -> Stream:
    """Every task's training and test samples pooled, shuffled and cut into ``T`` chunks."""
    n = stream.n_tasks
    x = torch.cat([t.x_train for t in stream.tasks])
    y = torch.cat([t.y_train for t in stream.tasks])
    x_test = torch.cat([t.x_test for t in stream.tasks])
    y_test = torch.cat([t.y_test for t in stream.tasks])
    train = torch.randperm(len(y), generator=generator).tensor_split(n)
    test = torch.randperm(len(y_test), generator=generator).tensor_split(n)
    classes = tuple(c for t in stream.tasks for c in t.classes)
    targets = tuple(c for t in stream.tasks for c in t.targets)
    tasks = tuple(
        Task(
            k,
            f"chunk {k}",
            x[train[k]],
            y[train[k]],
            x_test[test[k]],
            y_test[test[k]],
            classes,
            targets,
            stream.tasks[0].inputs,
            torch.full((len(train[k]),), k, dtype=torch.long),
        )
        for k in range(n)
    )
    return dataclasses.replace(stream, tasks=tasks)


def _imbalanced(stream: Stream, rho: float, generator: torch.Generator) -> Stream:
    """Each task keeps ``rho ** (-r / (C - 1))`` of its class of rank ``r`` (ranks drawn at
    random among its ``C`` classes), at least one sample each: a long tail from 1 to 1/rho."""
    tasks = []
    for task in stream.tasks:
        classes = task.y_train.unique()
        ranks = torch.randperm(len(classes), generator=generator)
        keep = []
        for c, r in zip(classes.tolist(), ranks.tolist(), strict=True):
            own = (task.y_train == c).nonzero().squeeze(1)
            share = rho ** (-r / max(len(classes) - 1, 1))
            keep.append(own[: max(1, round(len(own) * share))])
        tasks.append(_with_rows(task, _rows(task, torch.cat(keep).sort().values)))
    return dataclasses.replace(stream, tasks=tuple(tasks))


def _blurry(stream: Stream, percent: int, disjoint: int, generator: torch.Generator) -> Stream:
    """i-Blurry (Koh et al. 2022): ``disjoint`` percent of each task's classes stay in it;
    from the others (its blurry classes) ``percent`` percent of its sample count leave, in
    equal parts, to every other task, so that about ``percent`` percent of each task's
    samples are other tasks' blurry classes."""
    n = stream.n_tasks
    kept: list[torch.Tensor] = []
    sent: list[list[torch.Tensor]] = []
    for task in stream.tasks:
        classes = task.y_train.unique()
        order = torch.randperm(len(classes), generator=generator)
        blurry = classes[order[round(len(classes) * disjoint / 100) :]]
        candidates = torch.isin(task.y_train, blurry).nonzero().squeeze(1)
        candidates = candidates[torch.randperm(len(candidates), generator=generator)]
        count = round(len(task.y_train) * percent / 100)
        if count > len(candidates):
            raise UserError(
                f"blurry={percent}: task {task.id} ({task.name}) has {len(candidates)} samples "
                f"of its blurry classes, fewer than the {count} to share; lower blurry or disjoint"
            )
        mask = torch.ones(len(task.y_train), dtype=torch.bool)
        mask[candidates[:count]] = False
        kept.append(mask.nonzero().squeeze(1))
        sent.append(list(candidates[:count].tensor_split(n - 1)))
    tasks = []
    for t, task in enumerate(stream.tasks):
        pieces = [_rows(task, kept[t])]
        for k in range(n - 1):  # task s sends its part k to task (s + 1 + k) mod n
            s = (t - 1 - k) % n
            pieces.append(_rows(stream.tasks[s], sent[s][k]))
        rows = _cat(pieces)
        tasks.append(
            _with_rows(task, _take(rows, torch.randperm(len(rows[1]), generator=generator)))
        )
    return dataclasses.replace(stream, tasks=tuple(tasks))


def _gradual(stream: Stream, width: int, generator: torch.Generator) -> Stream:
    """Each boundary becomes a blend of ``width`` samples, the last ``width // 2`` of one
    task and the first ``width - width // 2`` of the next, in which the next task's share
    rises linearly from 0 to 1: its samples take positions of density ``2u`` on ``[0, 1]``
    (keys ``sqrt(U)``), the leaving task's ``2(1 - u)`` (keys ``1 - sqrt(U)``), so the
    share at ``u`` is ``2u / (2u + 2(1 - u)) = u``. The true boundary stays in the middle
    of the blend. Each task's own samples are shuffled once; the order is then fixed."""
    smallest = min(stream.tasks, key=lambda t: len(t.y_train))
    if width > len(smallest.y_train):
        raise UserError(
            f"gradual={width} is larger than task {smallest.id} ({smallest.name}), which has "
            f"{len(smallest.y_train)} training samples; use gradual <= {len(smallest.y_train)}"
        )
    tail, head = width // 2, width - width // 2  # from the leaving task, from the coming one
    own = [_rows(t, torch.randperm(len(t.y_train), generator=generator)) for t in stream.tasks]
    blends = []
    for left, right in itertools.pairwise(own):
        leaving = _take(left, slice(len(left[1]) - tail, None))
        coming = _take(right, slice(0, head))
        keys = torch.cat(
            [
                1 - torch.rand(tail, generator=generator).sqrt(),
                torch.rand(head, generator=generator).sqrt(),
            ]
        )
        blends.append(_take(_cat([leaving, coming]), keys.argsort()))
    tasks = []
    last = stream.n_tasks - 1
    for t, task in enumerate(stream.tasks):
        start, stop = (head if t > 0 else 0), len(task.y_train) - (tail if t < last else 0)
        pieces = [_take(blends[t - 1], slice(tail, None))] if t > 0 else []
        pieces.append(_take(own[t], slice(start, stop)))
        pieces += [_take(blends[t], slice(0, tail))] if t < last else []
        tasks.append(_with_rows(task, _cat(pieces)))
    return dataclasses.replace(stream, tasks=tuple(tasks), ordered=True)
