"""The ``gem`` learner: SGD whose gradient is projected so that no past task's loss rises.

GEM (Lopez-Paz & Ranzato 2017) keeps an episodic memory per task and, before each step,
checks the incoming gradient ``g`` against the gradient ``g_k`` of every past task's
memory. When some ``g . g_k < 0`` it steps along the closest gradient that violates none:

    minimise_z  1/2 ||g - z||^2   subject to  G z >= 0       (G: rows g_k)

solved in its dual, a quadratic program with as many variables as past tasks:

    minimise_v  1/2 v^T (G G^T) v + g^T G^T v   subject to  v >= margin,   z = G^T v + g

``margin`` is the official code's ``memory_strength`` (a margin on the dual variables that
pushes the step further into the feasible cone) and ``eps`` its ridge on ``G G^T``. The
memory here is the ``replay`` part (the shortcut ``gem`` is ``gem+replay``), which GEM
sets to its paper's episodic memories (``per_task``: ``size // n_tasks`` samples of each
task, as the official code, Mammoth and Avalanche keep them): the samples of each past
task in the replay batch give that task's gradient, and GEM declares a replay batch of
256 so the whole memory (of up to 256 samples) takes part. The quadratic program is
solved by ``quadprog`` (the official code's solver, a dependency), or by coordinate descent
in torch (``solver=torch``, and wherever quadprog is not importable); both give the same
solution to 1e-6. On a model with
closed-form gradients (the default MLP) the incoming gradient and the per-task ones (one
pass over the batch and the memory) are written out by hand (:mod:`lifelong.fast`, equal up
to float rounding; ``--set fast=false`` runs autograd).

Defaults: the official MNIST runs (facebookresearch/GradientEpisodicMemory,
``run_experiments.sh``): lr 0.1, memory_strength 0.5.

References: Lopez-Paz & Ranzato 2017, "Gradient Episodic Memory for Continual Learning"
(NeurIPS), eq. 10-13.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, final

import numpy as np
import torch
from torch import Tensor

from lifelong import (
    SGD,
    Batch,
    Learner,
    Objective,
    Replay,
    Step,
    StreamInfo,
    UnformedGradients,
    gradients,
    param,
)
from lifelong.fast import GemGradients

Params = dict[str, Tensor]
SOLVERS = ("auto", "quadprog", "torch")
EPS = 1e-3  # the official code's ridge on G G^T


def project(
    g: Tensor, memories: Tensor, margin: float, solver: str = "auto", dots: Tensor | None = None
) -> Tensor:
    """GEM's projection of ``g [P]`` onto ``{z : memories z >= 0}`` (rows ``g_k``, ``[t, P]``).

    ``dots``: ``memories @ g`` when the caller has it already.

    Returns:
        ``G^T v + g`` with ``v`` the dual solution (:func:`solve_dual`), float like ``g``.
        Only the ``[t, t]`` program is solved in float64 (the official code converts the
        ``[t, P]`` gradients too; here that copy took most of the projection's time).
    """
    q = memories @ g if dots is None else dots
    v = solve_dual(memories @ memories.T, q, margin, solver)
    return torch.addmv(g, memories.T, v.to(g.dtype))


def solve_dual(gram: Tensor, q: Tensor, margin: float, solver: str = "auto") -> Tensor:
    """``argmin_v 1/2 v^T (gram + eps I) v + q^T v`` subject to ``v >= margin``.

    ``quadprog`` when it is importable (``auto``) or asked for; else coordinate descent
    (exact minimisation over one ``v_i`` at a time, clipped at ``margin``), which converges
    for a positive definite matrix. Float64 on the CPU; returns ``[t]`` on ``q``'s device.
    """
    # a [t, t] program: numpy's operations on it cost a fraction of torch's dispatch
    P = _float64(gram)
    P = (P + P.T) * 0.5
    P.flat[:: len(P) + 1] += EPS  # the ridge on the diagonal
    b = _float64(q)
    if solver != "torch":
        try:
            import quadprog  # the official code's solver
        except ImportError:
            if solver == "quadprog":
                raise
        else:
            v = quadprog.solve_qp(P, -b, np.eye(len(b)), np.full(len(b), margin))[0]
            solution = torch.from_numpy(v)
            return solution if q.device.type == "cpu" else solution.to(q.device)
    return _coordinate_descent(torch.from_numpy(P), torch.from_numpy(b), margin).to(q.device)


def _float64(values: Tensor) -> np.ndarray:
    """``values`` on the host in float64 (exact from float32, float16 and bfloat16)."""
    if values.dtype in (torch.float32, torch.float64) and values.device.type == "cpu":
        return values.detach().numpy().astype(np.float64)
    return values.detach().to("cpu", torch.float64).numpy()


def _coordinate_descent(P: Tensor, b: Tensor, margin: float, sweeps: int = 10_000) -> Tensor:
    v = torch.full_like(b, margin)
    for _ in range(sweeps):
        moved = 0.0
        for i in range(len(b)):
            new = max(margin, float(v[i] - (P[i] @ v + b[i]) / P[i, i]))
            moved, v[i] = max(moved, abs(new - float(v[i]))), new
        if moved < 1e-12:
            break
    return v


@final
@dataclass
class Gem(Learner):
    """GEM: SGD on the incoming batch, its gradient projected by a quadratic program so
    that it agrees (non-negative dot product) with each past task's memory gradient.

    Each past task's gradient is the composite's objective on that task's samples in the
    replay batch (task ids other than the current one). Quadratic penalties are applied
    after the step as an exact proximal step at ``lr``, as under ``sgd`` and ``agem``.

    References: Lopez-Paz & Ranzato 2017, "Gradient Episodic Memory for Continual
    Learning" (NeurIPS).
    """

    name: ClassVar[str] = "gem"
    # it constrains the step by each past task's gradient, by task id
    needs_boundaries: ClassVar[bool] = True
    shortcuts: ClassVar[Mapping[str, tuple[str, ...]]] = {"gem": ("gem", "replay")}
    partner_defaults: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "replay": {"batch": 256, "per_task": True}
    }
    needs_memory: ClassVar[bool] = True
    passes_replay: ClassVar[bool] = False
    takes_drawn_rows: ClassVar[bool] = True  # its one pass gathers the rows by task
    lr: float = param(0.1, "SGD learning rate", gt=0)
    margin: float = param(0.5, "margin on the dual variables (memory_strength)", ge=0)
    solver: str = param("auto", "QP solver (auto: quadprog when installed)", choices=SOLVERS)

    not_checkpointed: ClassVar[tuple[str, ...]] = (
        "flat",
        "sizes",
        "weights",
        "storage",
        "by_hand",
    )
    optimizer: SGD = field(init=False, repr=False, compare=False)
    flat: list[Tensor] = field(init=False, repr=False, compare=False)  # the weights, flat views
    sizes: list[int] = field(init=False, repr=False, compare=False)
    weights: list[Tensor] = field(init=False, repr=False, compare=False)  # detached views
    storage: list[int] = field(init=False, repr=False, compare=False)  # what they view
    by_hand: GemGradients = field(init=False, repr=False, compare=False)  # its buffers

    def setup(self, params: Params, info: StreamInfo, generator: torch.Generator) -> None:
        self.optimizer = SGD(params.values(), lr=self.lr)
        self.by_hand = GemGradients()
        self._view(params)

    def _view(self, params: Params) -> None:
        """The views of ``params`` the step reads and writes (they follow in-place steps)."""
        # the step on flat views of the weights where they have them (not channels-last)
        plain = all(p.is_contiguous() for p in params.values())
        self.flat = [p.detach().view(-1) for p in params.values()] if plain else []
        self.sizes = [p.numel() for p in params.values()]
        self.weights = [p.detach() for p in params.values()]
        self.storage = [p.data_ptr() for p in params.values()]

    def proximal_rate(self) -> float:
        return self.lr

    def step(
        self, params: Params, batch: Batch, replay: Replay | None, objective: Objective
    ) -> Step:
        if [p.data_ptr() for p in params.values()] != self.storage:  # moved since setup
            self._view(params)
        loss, g, memories = self._gradients(params, batch, replay, objective)
        update = g
        if memories is not None:
            dots = memories @ g
            if float(dots.min()) < 0:  # GEM projects only on a violated constraint
                update = project(g, memories, self.margin, self.solver, dots)
        if self.flat:  # the SGD step, theta -= lr * update, on the flat views
            torch._foreach_add_(self.flat, update.split_with_sizes(self.sizes), alpha=-self.lr)
        else:
            self.optimizer.descend(list(_unflat(update, params).values()))
        # the gradient before the projection, for a part that reads it (SI)
        if objective.closed_form is not None and not objective.closed_form.gradients_read:
            return Step(loss.detach(), UnformedGradients())
        return Step(loss.detach(), _unflat(g.clone(), params))  # g may be a kept buffer

    def _gradients(
        self, params: Params, batch: Batch, replay: Replay | None, objective: Objective
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """The loss on ``batch``, its gradient ``g`` flattened (``[P]``, in the order of
        ``params``), and ``[t, P]``: the objective's gradient on each past task's
        replayed samples (None: no past task)."""
        closed = objective.closed_form
        one_pass = closed is not None and closed.covers(params, penalties=False)
        if one_pass and replay is not None:
            # acceleration: lifelong.fast.sample_factors, the batch and the memory in one
            # pass, the memory's rows gathered once, grouped by task (not the replay batch)
            if replay.rows is not None:
                found = self.by_hand(self.weights, batch, *replay.source())
            else:
                found = self.by_hand(self.weights, batch, replay.batch)
            if found is not None:  # kept buffers, rewritten by the next step
                loss, kept, _ = found
                return loss, kept[0], kept[1:]
            replay = None  # the memory holds no past task: the plain gradient
        stored = replay.batch if replay is not None else None
        tasks = [] if stored is None else _past_tasks(stored, batch.task)
        if closed is not None and closed.covers(params):  # acceleration: lifelong.fast
            loss, grads = closed.loss_and_grads(params, batch, None)
        else:
            loss = objective(params, batch, None)
            grads = gradients(loss, params)
        if stored is None or not tasks:
            return loss, _flat(grads), None
        past = []
        for t in tasks:
            mine = stored.task_ids == t
            own = Batch(stored.x[mine], stored.y[mine], stored.task_ids[mine], t)
            past.append(_flat(gradients(objective(params, own, None), params)))
        return loss, _flat(grads), torch.stack(past)


def _past_tasks(stored: Batch, task: int) -> list[int]:
    """The task ids in ``stored`` other than ``task``, in increasing order."""
    ids = stored.task_ids
    found = np.unique(ids.numpy()).tolist() if ids.device.type == "cpu" else ids.unique().tolist()
    return [t for t in found if t != task]


def _flat(grads: Params) -> Tensor:
    return torch.cat([g.reshape(-1) for g in grads.values()])


def _unflat(flat: Tensor, like: Params) -> Params:
    parts = flat.split([g.numel() for g in like.values()])
    return {name: part.view_as(g) for (name, g), part in zip(like.items(), parts, strict=True)}
