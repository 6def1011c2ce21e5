"""OML: a meta-learned representation (RLN), frozen in the stream; only the PLN learns.

The init is meta-trained before the stream on tasks disjoint from it
(:class:`lifelong.MetaInit`: the pool, the seeded start and the disk cache), then written
into the run's model.

References: Javed & White 2019, "Meta-Learning Representations for Continual Learning"
(official code khurramjaved96/mrcl).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, final

import torch
from torch import nn

from lifelong import (
    Batch,
    MetaInit,
    MetaStart,
    MetaTaskSource,
    Params,
    StreamInfo,
    UserError,
    apply_gradients,
    concat_batches,
    loss_fn,
    meta_gradient,
    param,
    sgd_inner_loop,
)

from .maml import CONFIDENT_INIT_DEFAULTS

PLN_PREFIX = "head."  # lifelong.MLP's output layer: OML's prediction network (PLN) ends with it


@final
@dataclass
class OmlInit(MetaInit):
    """OML: a meta-learned representation (RLN), frozen in the stream; only the PLN learns.

    The prediction network (PLN) is the last ``pln_layers`` Linear layers of the model, in
    module order (2, the default: the last hidden layer and ``head.*``, as OML's two final
    fully connected layers; 1: the output layer alone), the RLN everything before them;
    both are meta-trained. The official networks put the representation before two
    Linear layers (Omniglot: six convolutions, then ``linear 1024, relu, linear 1000``;
    ``model/modelfactory.py``). A PLN of the output layer alone learns the stream's later
    classes only slowly from a frozen RLN: on the small learning check (3 tasks, 20 steps
    each, a 2-step meta-init) ``oml`` reached ``[0.62, 0.5, 0.88]`` in class-IL and
    ``oml+replay`` ``[0.94, 0, 0]``; with two layers ``[1, 1, 1]`` and, at 20 meta steps,
    ``[1, 1, 1]``.

    With ``reset_head`` (the default) the whole PLN is re-drawn before the stream
    (Kaiming-normal weights, zero biases, from the run's generator), as OML's evaluation does
    (``--reset``): the meta-trained output rows belong to meta-training classes, which the
    stream's classes are not, and meta-training itself re-initializes the output rows of
    every trajectory's classes, so the RLN is trained for exactly this start.
    ``reset_head=false`` keeps the meta-trained PLN instead.

    Composed with ``der``, DER's ``lam`` is 0.1 (``der`` alone: 0.5), as with maml, meta-sgd
    and reptile (``strategies.maml.CONFIDENT_INIT_DEFAULTS``), and for OML a reason more: with the
    RLN frozen, the logit term holds the same two layers that alone must fit the new
    classes. On the small learning check (3 class-IL tasks of 20 steps, a 20-step
    meta-init) the third task reached 0.5 (der+oml+replay), 0.69 (der+la-maml+oml) and
    0.38 (der+oml+sync-la-maml) at 0.5, 0.69 / 1 / 0.88 at 0.2, 0.94 / 1 / 1 at 0.1; at
    OML's 500 meta steps the La-MAML pair still missed the second task at 0.5 (0.62, 0.31)
    and learnt every task at 0.1. ``--set der.lam=...`` still wins.

    References: Javed & White 2019, "Meta-Learning Representations for Continual Learning"
    (official code khurramjaved96/mrcl).
    """

    name: ClassVar[str] = "oml"
    partner_defaults: ClassVar[Mapping[str, Mapping[str, Any]]] = CONFIDENT_INIT_DEFAULTS
    stream_fields: ClassVar[tuple[str, ...]] = ("source", "reset_head")
    classes_per_episode: int = param(
        3, "classes of a trajectory (topped up from tasks sharing the head)", ge=1
    )
    samples_per_class: int = param(5, "single-sample PLN steps per trajectory class", ge=1)
    random_batch: int = param(20, "samples from all tasks added to the outer loss", ge=0)
    inner_lr: float = param(0.03, "learning rate of the PLN's inner SGD steps", gt=0)
    outer_lr: float = param(1e-3, "Adam learning rate of the meta update", gt=0)
    first_order: bool = param(False, "drop second derivatives through the inner loop")
    reset_rows: bool = param(True, "re-initialize the PLN rows of a trajectory's classes")
    reset_head: bool = param(True, "re-draw the PLN before the stream, as OML's evaluation does")
    pln_layers: int = param(2, "final Linear layers that form the PLN; the rest is the RLN", ge=1)

    def check(self, model: nn.Module, info: StreamInfo) -> None:
        try:
            pln_names(model, self.pln_layers)
        except ValueError as error:  # a plug-in model without the contract's Linear head
            raise UserError(f"oml: {error} (see docs/models.md)") from None
        super().check(model, info)

    def prepare(
        self, model: nn.Module, info: StreamInfo, generator: torch.Generator
    ) -> set[str] | None:
        pln = set(pln_names(model, self.pln_layers))  # before meta-training: fail early
        self.load_meta_trained(model, info)
        if self.reset_head:
            _redraw(model, pln, generator)
        for n, p in model.named_parameters():
            p.requires_grad_(n in pln)  # the RLN is fixed: no gradient flows into it
        return pln

    def meta_train(self, model: nn.Module, tasks: MetaTaskSource, start: MetaStart) -> Params:
        """Each meta update: draw a task and ``classes_per_episode`` classes
        (:func:`episode_classes`), re-initialize their output rows, take one single-sample
        SGD step on the PLN only per trajectory sample (class by class, so the trajectory
        learns classes in sequence), then an Adam step on every weight from the loss of the
        adapted network on the trajectory plus ``random_batch`` samples of all tasks,
        differentiated through the inner loop (second order unless ``first_order``)."""
        theta, g, loss = start.theta, start.generator, loss_fn(model)
        pln = pln_names(model, self.pln_layers)
        optimizer = torch.optim.Adam(list(theta.values()), lr=self.outer_lr)
        for _ in start.steps:
            chosen = episode_classes(tasks, tasks.sample_task(g), self.classes_per_episode, g)
            initial = theta
            if self.reset_rows:
                initial = _reset_rows(theta, [_output_row(tasks, t, i) for t, i in chosen], g)
            trajectory = [
                tasks.sample(t, self.samples_per_class, g, classes=(tasks.tasks[t].classes[i],))
                for t, i in chosen
            ]
            samples = [_row(b, i) for b in trajectory for i in range(len(b.y))]
            adapted = sgd_inner_loop(
                loss, initial, samples, self.inner_lr, only=pln, create_graph=not self.first_order
            )[-1]
            remember = [tasks.sample_mixed(self.random_batch, g)] if self.random_batch else []
            grads, _ = meta_gradient(loss(adapted, concat_batches([*trajectory, *remember])), theta)
            apply_gradients(optimizer, theta, grads)
        return theta


def pln_names(model: nn.Module, layers: int) -> list[str]:
    """The parameter names of OML's prediction network: the last ``layers`` Linear layers
    (every Linear layer when a model with other parameters, a conv body, has fewer: its
    convolutions are then the RLN).

    The Linear modules are taken in module order (``model.named_modules()``; for
    :class:`lifelong.MLP` ``body.0``, ``body.2``, ..., ``head``); the last must be the
    output layer ``head``. Everything else is the representation (RLN): with one layer,
    the PLN is the model's head and the RLN its body (a conv body, say), as the model
    contract splits them.

    Raises:
        UserError: when ``layers`` would leave the RLN without a parameter (an MLP with
            ``layers`` or fewer Linear layers).
        ValueError: when the model's last Linear layer is not ``head``.
    """
    linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linear or f"{linear[-1]}." != PLN_PREFIX:
        raise ValueError(
            f"OML needs a prediction network ending with the output layer {PLN_PREFIX!r}; "
            f"the model's Linear layers are {linear}"
        )
    owned = {
        f"{owner}.{name}"
        for owner in linear
        for name, _ in model.get_submodule(owner).named_parameters(recurse=False)
    }
    others = any(n not in owned for n, _ in model.named_parameters())
    most = len(linear) if others else len(linear) - 1
    names = [
        f"{owner}.{name}"
        for owner in linear[-min(layers, most) :]  # a conv body with fewer Linear layers
        for name, _ in model.get_submodule(owner).named_parameters(recurse=False)
    ]
    if layers > most and not others:
        raise UserError(
            f"oml: pln_layers={layers} leaves no representation (RLN) to meta-learn: the "
            f"model has {len(linear)} Linear layers, so pln_layers must be at most {most}"
        )
    return names


def episode_classes(
    tasks: MetaTaskSource, task: int, count: int, g: torch.Generator
) -> list[tuple[int, int]]:
    """``(task, class index)`` of one OML trajectory, in the order it learns them.

    Up to ``count`` classes of ``task`` (in index order); when it has fewer, the rest are
    drawn from the other tasks on the same head whose output rows are still free, so a
    trajectory over 2-class split tasks still spans ``count`` classes in sequence.
    """
    spec = tasks.tasks[task]
    own = sorted(torch.randperm(len(spec.classes), generator=g)[:count].tolist())
    chosen = [(task, i) for i in own]
    if len(chosen) >= count:
        return chosen
    used = {_output_row(tasks, t, i) for t, i in chosen}
    others = [
        (t, i)
        for t, other in enumerate(tasks.tasks)
        if t != task and other.head == spec.head
        for i in range(len(other.classes))
        if _output_row(tasks, t, i) not in used
    ]
    for k in torch.randperm(len(others), generator=g).tolist():
        t, i = others[k]
        if len(chosen) < count and _output_row(tasks, t, i) not in used:
            chosen.append((t, i))
            used.add(_output_row(tasks, t, i))
    return chosen


def _output_row(tasks: MetaTaskSource, task: int, index: int) -> int:
    """The PLN output row of class ``index`` of ``task`` (its head's slot for the target)."""
    spec = tasks.tasks[task]
    return spec.head * tasks.n_outputs + spec.targets[index]


def _reset_rows(params: Params, rows: list[int], g: torch.Generator) -> Params:
    """``params`` with the given PLN output rows re-drawn (weights) and zeroed (biases)."""
    weight, bias = params[f"{PLN_PREFIX}weight"], params[f"{PLN_PREFIX}bias"]
    mask = torch.zeros(len(bias), dtype=torch.bool)
    mask[rows] = True
    fresh = torch.randn(weight.shape, generator=g, dtype=weight.dtype) * math.sqrt(
        2.0 / weight.shape[1]
    )  # Kaiming-normal, as OML's reset does
    mask = mask.to(weight.device)
    return {
        **params,
        f"{PLN_PREFIX}weight": torch.where(mask[:, None], fresh.to(weight.device), weight),
        f"{PLN_PREFIX}bias": torch.where(mask, torch.zeros_like(bias), bias),
    }


def _row(batch: Batch, i: int) -> Batch:
    return Batch(batch.x[i : i + 1], batch.y[i : i + 1], batch.task_ids[i : i + 1], batch.task)


@torch.no_grad()
def _redraw(model: nn.Module, names: set[str], generator: torch.Generator) -> None:
    """Kaiming-normal (fan-in) weights and zero biases for ``names``, as OML initializes."""
    for n, p in model.named_parameters():
        if n in names and p.dim() > 1:
            noise = torch.randn(p.shape, generator=generator, device=generator.device)
            p.copy_(noise * math.sqrt(2.0 / p.shape[1]))
        elif n in names:
            p.zero_()
