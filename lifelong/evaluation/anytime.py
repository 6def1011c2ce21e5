"""The online measurements of one run: anytime accuracy, LCA's learning curves and few-shot
adaptation, taken by the runner on the schedule the stream options set.

The numbers recorded here become metrics through the pure functions of
:mod:`lifelong.evaluation.metrics` (:func:`~lifelong.evaluation.metrics.a_auc`,
:func:`~lifelong.evaluation.metrics.lca`, :func:`~lifelong.evaluation.metrics.few_shot`).
Nothing here changes the run: evaluations are in inference mode, and few-shot adaptation
trains a copy of the weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from lifelong.contracts.head_axis import Head
from lifelong.contracts.parts import eval_mode
from lifelong.contracts.strategy import Batch
from lifelong.contracts.stream import Stream, Task
from lifelong.data.inputs import to_floats
from lifelong.data.stream_options import StreamOptions

__all__ = ["FEW_SHOT_STEPS", "OnlineRecorder", "few_shot_accuracy"]

FEW_SHOT_STEPS = (1, 5, 10)

Predict = Callable[[Tensor, Tensor], Tensor]


class OnlineRecorder:
    """What one seed's run records for the online metrics, and when.

    Args:
        stream: the run's stream (on its device).
        options: the stream options (``anytime_every``, ``anytime_size``, ``lca_beta``,
            ``few_shot``, ``few_shot_lr``).
        batch_size: the protocol's batch size (few-shot adaptation's too).
        generator: fixes the anytime sample's order and few-shot's batches (its own
            stream of draws, so the run's are untouched).
    """

    def __init__(
        self, stream: Stream, options: StreamOptions, batch_size: int, generator: torch.Generator
    ) -> None:
        self.stream, self.options, self.batch_size = stream, options, batch_size
        self.generator = generator
        device = stream.tasks[0].y_test.device
        sizes = [len(t.y_test) for t in stream.tasks]
        task_of = torch.repeat_interleave(
            torch.arange(len(sizes), device=device), torch.tensor(sizes, device=device)
        )
        row_of = torch.cat([torch.arange(n, device=device) for n in sizes])
        order = torch.randperm(len(row_of), generator=generator, device=device)
        self.task_of, self.row_of = task_of[order], row_of[order]
        self.y_of = torch.cat([t.y_test for t in stream.tasks])[order]
        self.seen = torch.zeros(stream.n_tasks, stream.n_outputs, dtype=torch.bool, device=device)
        self.samples, self.in_task = 0, 0
        self.record: dict[str, Any] = {
            "anytime": [],
            "task_ends": [],
            "lca": [],
            "few_shot": [],
            "detected": [],
        }

    def observe(self, task_ids: Tensor, y: Tensor) -> None:
        """Mark the (task, class) pairs of an incoming batch as seen."""
        if self.options.anytime_every:
            self.seen[task_ids, y] = True

    def start_task(
        self, task: Task, model: nn.Module, predict: Predict, head: Head | None = None
    ) -> None:
        """Before training ``task``: few-shot adaptation (through ``head`` where it
        classifies from a support set), and LCA's point after 0 batches."""
        self.in_task = 0
        if self.options.few_shot:
            first = task.x_train[: self.batch_size * max(FEW_SHOT_STEPS)]
            labels = task.y_train[: len(first)]
            ids = torch.full_like(labels, task.id)
            support = (first, labels, ids)
            lr, size = self.options.few_shot_lr, self.batch_size
            row = few_shot_accuracy(model, support, task, lr, size, head=head)
            self.record["few_shot"].append(row)
        if self.options.lca_beta:
            self.record["lca"].append([task_accuracy(predict, task)])

    def after_batch(self, n: int, task: Task, model: nn.Module, predict: Predict) -> None:
        """After a batch of ``n`` samples of ``task``: LCA's point and, every
        ``anytime_every`` samples, an anytime evaluation, with ``model`` in eval mode
        while it measures (batch norm's running statistics stay as they were); a batch
        with nothing to measure leaves the model's mode alone."""
        self.in_task += 1
        lca = self.in_task <= self.options.lca_beta
        every, before = self.options.anytime_every, self.samples
        self.samples += n
        anytime = bool(every) and self.samples // every > before // every
        if not (lca or anytime):
            return
        with eval_mode(model):
            if lca:
                self.record["lca"][-1].append(task_accuracy(predict, task))
            if anytime:
                self.record["anytime"].append([self.samples, self.anytime_accuracy(predict)])

    def end_task(self) -> None:
        self.record["task_ends"].append(self.samples)

    def detected(self) -> None:
        self.record["detected"].append(self.samples)

    @torch.inference_mode()
    def anytime_accuracy(self, predict: Predict) -> float:
        """Accuracy on the first ``anytime_size`` test samples, in the run's fixed random
        order, of the (task, class) pairs seen so far: a constant cost per evaluation."""
        eligible = self.seen[self.task_of, self.y_of].nonzero().squeeze(1)
        pick = eligible[: self.options.anytime_size]
        if len(pick) == 0:
            return float("nan")
        tasks, rows = self.task_of[pick], self.row_of[pick]
        correct, total = 0, 0
        for t in tasks.unique().tolist():
            task = self.stream.tasks[t]
            x = to_floats(task.x_test[rows[tasks == t]].flatten(1), task.inputs)
            y = task.y_test[rows[tasks == t]]
            correct += int((predict(x, torch.full_like(y, t)).argmax(1) == y).sum())
            total += len(y)
        return correct / total

    def state(self) -> dict[str, Any]:
        return {"seen": self.seen, "samples": self.samples, "record": self.record}

    def load_state(self, state: dict[str, Any]) -> None:
        self.seen.copy_(state["seen"])
        self.samples, self.record = int(state["samples"]), state["record"]


@torch.inference_mode()
def task_accuracy(predict: Predict, task: Task, chunk: int = 2048) -> float:
    """Accuracy of ``predict`` on ``task``'s test set."""
    correct = 0
    for start in range(0, len(task.y_test), chunk):
        x = to_floats(task.x_test[start : start + chunk].flatten(1), task.inputs)
        y = task.y_test[start : start + chunk]
        correct += int((predict(x, torch.full_like(y, task.id)).argmax(1) == y).sum())
    return correct / len(task.y_test)


def few_shot_accuracy(
    model: nn.Module,
    first: tuple[Tensor, Tensor, Tensor],
    task: Task,
    lr: float,
    batch_size: int,
    steps: tuple[int, ...] = FEW_SHOT_STEPS,
    head: Head | None = None,
) -> list[float]:
    """Accuracy on ``task``'s test set after each of ``steps`` plain SGD steps on a copy of
    ``model``'s weights, step ``i`` on the ``i``-th batch of ``first`` (uint8 inputs,
    targets, task ids: the task's first samples). The model itself is not changed.

    A ``head`` that classifies from a support set (:meth:`lifelong.Head.few_shot_scores`:
    the ``ncm`` head's nearest class mean, ProtoNets' rule) predicts after step ``i`` from
    the samples of steps 1 to ``i``; otherwise the model's own output does.

    Returns:
        One accuracy per entry of ``steps``.
    """
    params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    x, y, ids = first
    support: Batch | None = None  # the samples of the steps taken so far, for ``head``

    def predict(inputs: Tensor, task_ids: Tensor) -> Tensor:
        if head is not None and support is not None:
            scores = head.few_shot_scores(model, params, support, inputs)
            if scores is not None:
                return scores
        return functional_call(model, params, (inputs, task_ids))

    out = []
    for step in range(1, max(steps) + 1):
        chunk = slice(((step - 1) * batch_size) % len(y), None)
        xb = to_floats(x[chunk][:batch_size].flatten(1), task.inputs)  # not augmented
        logits = functional_call(model, params, (xb, ids[chunk][:batch_size]))
        loss = F.cross_entropy(logits, y[chunk][:batch_size])
        grads = torch.autograd.grad(loss, list(params.values()))
        with torch.no_grad():
            for p, g in zip(params.values(), grads, strict=True):
                p.sub_(lr * g)
        if step in steps:
            if head is not None:
                seen = min(step * batch_size, len(y))
                support = Batch(
                    to_floats(x[:seen].flatten(1), task.inputs), y[:seen], ids[:seen], task.id
                )
            out.append(task_accuracy(predict, task))
    return out
