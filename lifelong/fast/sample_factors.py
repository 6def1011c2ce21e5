"""Per-sample cross-entropy gradients of an MLP, kept as their layer factors and never formed.

For a layer ``out = a W^T + b`` the gradient of one sample's loss is ``dW = d a^T`` and
``db = d`` (``d``: the loss's derivative by the layer's output, ``a``: the layer's input). So
a weighted sum of samples' gradients is ``D^T diag(w) A`` per layer, and the inner product
of two samples' whole gradients is ``sum_l (d_i . d_j)(a_i . a_j + 1)``: a product of
``[N, M]`` matrices, where autograd would form ``[N, P]`` per-sample gradients (P: 89,610
weights on the default MLP). One forward and one backward pass give every factor.

Accelerates (each reference builds the same numbers with autograd):

- GEM's per-task memory gradients (``strategies/gem.py``: one backward per past task):
  :func:`gem_gradients`, one pass over the incoming batch and the memory and one product
  per layer and task (one batched product for the past tasks where their counts are
  equal); a run's :class:`GemGradients` keeps its buffers and views from step to step.
- GSS's cosine scores (``strategies/gss.py``: per-sample gradients under ``vmap``,
  flattened and normalised): :class:`MlpCosines`, from Gram matrices of the factors.
- MIR's interference (``strategies/mir.py``: autograd's virtual step, two forwards):
  :func:`interference`, the stepped layers' outputs from the factors, no weights formed;
  the forward passes at the weights are handed on with the replay batch, so that the
  ``sgd`` learner's step on the batch and the chosen samples runs none of its own
  (:class:`lifelong.fast.Activations`).
- ER-ACE's step (``strategies/er_ace.py``: masked cross-entropy plus the replay's, autograd):
  :func:`ace_gradients`.
- EWC's and online EWC's Fisher diagonal (:func:`lifelong.fisher_diagonal`: forward hooks
  on the Linear layers and autograd's backward for their output gradients):
  :func:`fisher_by_hand`, the same products with the backward written out, bit for bit
  the reference's numbers (its softmax error is autograd's own kernel).

Applies when: the model declares the capability (:class:`lifelong.ClosedFormModel` with
``closed_form_grads()`` true: the one-head :class:`lifelong.MLP`), every one of its weights
learns (:func:`lifelong.fast.has_closed_form`), the gradient taken is that of the
cross-entropy alone (no penalty), and the run has ``fast`` on (``--set fast=false`` runs
the references). Tested equal to the references in ``tests/test_fast_factors.py``
(float64, within 1e-10). In float32 the two paths round differently, and over a whole
run the difference can grow: the bench's Split-MNIST runs end with the references'
accuracies, but GEM's class-incremental runs at memory 200 part from the reference's in
a late task on some seeds (seed 4: ACC 0.401 against the reference's 0.411; over seeds
0-4 0.695 against 0.697, reports/class-incremental.md), as any two float32 orders of
summation can on a run that a quadratic program steers.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lifelong.fast.closed_form import Activations, softmax_error, versions

if TYPE_CHECKING:
    from lifelong.contracts.strategy import Batch

__all__ = [
    "Factors",
    "GemGradients",
    "Interference",
    "MlpCosines",
    "ace_gradients",
    "gem_gradients",
    "interference",
    "sample_factors",
]

EPS = 1e-8  # F.normalize's, as GSS's reference normalises


@dataclass(frozen=True)
class Factors:
    """Each sample's cross-entropy gradient of a one-head ReLU MLP, by layer.

    Attributes:
        losses: float ``[N]``, each sample's cross-entropy.
        inputs: per layer, ``[N, in_l]``: what the layer read.
        errors: per layer, ``[N, out_l]``: the sample's loss derivative by the layer's
            output. Sample ``i``'s gradient is ``errors[l][i] inputs[l][i]^T`` for ``W_l``
            and ``errors[l][i]`` for ``b_l``.
    """

    losses: Tensor
    inputs: tuple[Tensor, ...]
    errors: tuple[Tensor, ...]

    def summed(self) -> list[Tensor]:
        """The sum of the samples' gradients, ``[dW_1, db_1, ..., dW_L, db_L]``."""
        grads: list[Tensor] = []
        for a, d in zip(self.inputs, self.errors, strict=True):
            grads += [d.t() @ a, d.sum(0)]
        return grads

    def dots(self, other: Factors) -> Tensor:
        """``[N, M]``: the inner products of these samples' gradients with ``other``'s."""
        layers = zip(self.inputs, self.errors, other.inputs, other.errors, strict=True)
        return torch.stack([(d @ e.T) * (a @ b.T + 1) for a, d, b, e in layers]).sum(0)

    def norms(self) -> Tensor:
        """``[N]``: the norm of each sample's gradient."""
        layers = zip(self.inputs, self.errors, strict=True)
        squares = [d.square().sum(1) * (a.square().sum(1) + 1) for a, d in layers]
        return torch.stack(squares).sum(0).sqrt()


def sample_factors(
    weights: Sequence[Tensor],
    x: Tensor,
    y: Tensor,
    keep: Tensor | None = None,
    shares: Tensor | None = None,
) -> Factors:
    """The factors of each sample's cross-entropy gradient: one forward, one backward.

    Args:
        weights: ``(W_1, b_1, ..., W_L, b_L)``, ``W_l`` shaped ``[out, in]`` (read only).
        x: float ``[N, ...]`` (flattened to the MLP's rows); y: int64 ``[N]``.
        keep: bool ``[M, C]``: the logits each of the first ``M`` samples' softmax sees
            (the others are set to the float minimum, ER-ACE's mask); None: all of them.
        shares: float ``[N]``, each sample's weight in a loss: its errors are scaled by it
            (None: 1), so that :meth:`Factors.summed` is that loss's gradient.
    """
    weights = [w.detach() for w in weights]
    inputs, logits = _layer_inputs(weights, x, keep)
    log_p = F.log_softmax(logits, 1)
    losses = -log_p.gather(1, y[:, None]).squeeze(1)
    errors = _errors(weights, inputs, log_p, y, shares)
    return Factors(losses, tuple(inputs), tuple(errors))


def _layer_inputs(
    weights: Sequence[Tensor], x: Tensor, keep: Tensor | None = None
) -> tuple[list[Tensor], Tensor]:
    """Each layer's input and the logits (``keep``: as :func:`sample_factors`), the
    ``weights`` detached already."""
    n_layers = len(weights) // 2
    inputs = [x.flatten(1)]
    for layer in range(n_layers):
        out = torch.addmm(weights[2 * layer + 1], inputs[-1], weights[2 * layer].t())
        if layer < n_layers - 1:
            inputs.append(out.relu_())
    if keep is not None:
        out[: len(keep)].masked_fill_(~keep, torch.finfo(out.dtype).min)
    return inputs, out


def _errors(
    weights: Sequence[Tensor],
    inputs: Sequence[Tensor],
    log_p: Tensor,
    y: Tensor,
    shares: Tensor | None = None,
) -> list[Tensor]:
    """Each layer's output error from the log-softmax ``log_p`` (overwritten), by layer."""
    error = softmax_error(log_p, y)
    if shares is not None:
        error.mul_(shares[:, None])
    errors = [error]
    for layer in range(len(inputs) - 1, 0, -1):
        below = inputs[layer]
        errors.append(torch.ops.aten.threshold_backward(errors[-1] @ weights[2 * layer], below, 0))
    errors.reverse()
    return errors


def fisher_by_hand(weights: Sequence[Tensor], x: Tensor, y: Tensor) -> list[Tensor]:
    """The mean over samples of each weight's squared per-sample gradient, the Fisher
    diagonal of :func:`lifelong.fisher_diagonal` (``y``: the labels it differentiates,
    :func:`lifelong.fisher_labels`), with no hooks and no autograd graph.

    Args:
        weights: ``(W_1, b_1, ..., W_L, b_L)``, ``W_l`` shaped ``[out, in]`` (read only).
        x: float ``[N, ...]`` (flattened to the MLP's rows); y: int64 ``[N]``.

    Returns:
        ``[F_W1, F_b1, ...]``: ``(d^2)^T (a^2) / N`` and ``sum(d^2) / N`` per layer, ``d``
        each sample's derivative by the layer's output and ``a`` its input. Equal bit for
        bit to the reference on the CPU: the same products in the same order, the softmax
        error from autograd's log-softmax backward (:func:`softmax_error`'s exponential
        rounds differently).
    """
    weights = [w.detach() for w in weights]
    inputs, logits = _layer_inputs(weights, x.flatten(1))
    log_p = F.log_softmax(logits, 1)
    # the summed cross-entropy's derivative by log_p is -1 at each label, 0 elsewhere
    picked = torch.zeros_like(log_p).scatter_(1, y[:, None], -1.0)
    error = torch._log_softmax_backward_data(picked, log_p, 1, log_p.dtype)
    errors = [error]
    for layer in range(len(inputs) - 1, 0, -1):
        below = inputs[layer]
        errors.append(torch.ops.aten.threshold_backward(errors[-1] @ weights[2 * layer], below, 0))
    errors.reverse()
    n = max(len(y), 1)
    fisher: list[Tensor] = []
    for a, d in zip(inputs, errors, strict=True):
        squared = d.pow(2)
        fisher += [(squared.T @ a.pow(2)) / n, squared.sum(0) / n]
    return fisher


def gem_gradients(
    weights: Sequence[Tensor], incoming: Batch, memory: Batch, rows: Tensor | None = None
) -> tuple[Tensor, Tensor, list[int]] | None:
    """GEM's step gradients in one pass over the batch and the memory.

    The reference (``strategies/gem.py``) takes the objective's gradient, then one backward
    per past task. A run keeps a :class:`GemGradients` instead, which reuses its buffers.

    Args:
        weights: ``(W_1, b_1, ..., W_L, b_L)``, ``W_l`` shaped ``[out, in]`` (read only).
        incoming: the batch, ``x [B, ...]`` (flattened to the MLP's rows), ``y [B]``.
        memory: the stored samples, ``x [M, ...]``, ``y [M]``, ``task_ids [M]`` (task
            ids are non-negative).
        rows: the rows of ``memory`` to take, in this order (int64; a replay's drawn rows,
            :meth:`lifelong.Replay.drawn`); None: all of them as they are.

    Returns:
        The incoming batch's mean cross-entropy (0-d), ``[1 + T, P]``: its gradient (row
        0) and the mean gradient of each past task's samples (the task ids in ``memory``
        other than ``incoming.task``, in increasing order), flattened in the order of
        ``weights``, and those task ids; None when the rows taken hold no past task.
    """
    return GemGradients()([w.detach() for w in weights], incoming, memory, rows)


class GemGradients:
    """:func:`gem_gradients` with its buffers kept from call to call: the rows, each
    layer's inputs and errors, the ``[1 + T, P]`` result and every view that the products
    read and write, made once per layout (the batch's row count, the past tasks' counts,
    the weights) and reused while it holds, as it does through a task. The numbers are
    the same bit for bit, a few dozen operators fewer a step and no fresh buffers: at
    four past tasks on the default MLP its call took 1.15 ms where a fresh pass took
    1.74 ms (a microbenchmark outside a run), and GEM's loop in ``lifelong bench`` about
    10% less. ``weights`` are detached (read only; the views follow in-place steps). The
    result is overwritten by the next call: copy what must outlive it."""

    def __init__(self) -> None:
        self.layout: _GemLayout | None = None

    def __call__(
        self, weights: Sequence[Tensor], incoming: Batch, memory: Batch, rows: Tensor | None = None
    ) -> tuple[Tensor, Tensor, list[int]] | None:
        """As :func:`gem_gradients` (the result in kept buffers)."""
        ids = memory.task_ids if rows is None else memory.task_ids.index_select(0, rows)
        order, sizes, tasks = _past_task_rows(ids, incoming.task)
        if not tasks:
            return None
        if rows is not None:  # the memory's rows, task after task, in the drawn order
            order = rows.index_select(0, order)
        x = incoming.x
        sizes = [len(incoming.y), *sizes]
        layout = self.layout
        if layout is None or not layout.holds(weights, sizes, x):
            layout = self.layout = _GemLayout(weights, sizes, x)
        n = sizes[0]
        layout.x[:n].copy_(x.flatten(1))
        stored = memory.x.flatten(1)
        if stored.dtype == x.dtype:
            torch.index_select(stored, 0, order, out=layout.x[n:])
        else:
            layout.x[n:].copy_(stored.index_select(0, order))
        layout.y[:n].copy_(incoming.y)
        torch.index_select(memory.y, 0, order, out=layout.y[n:])
        losses, out = layout.run()
        return losses[:n].mean(), out, tasks


class _GemLayout:
    """The buffers and views of one layout (see :class:`GemGradients`): ``x [N, D]`` and
    ``y [N]`` take the rows, groups of ``sizes`` consecutive rows (the batch's, then each
    past task's); :meth:`run` gives each row's loss and each group's mean gradient."""

    def __init__(self, weights: Sequence[Tensor], sizes: Sequence[int], like: Tensor) -> None:
        self.weights, self.sizes = tuple(weights), tuple(sizes)
        self.dtype, self.device, self.width = like.dtype, like.device, like[0].numel()
        rows, n, rest = sum(sizes), sizes[0], sizes[1:]
        self.matrices, self.biases = list(weights[0::2]), list(weights[1::2])
        self.transposed = [w.t() for w in self.matrices]
        self.x = torch.empty(rows, self.width, dtype=like.dtype, device=like.device)
        self.y = torch.empty(rows, dtype=torch.long, device=like.device)
        self.labels = self.y[:, None]
        shares = np.repeat(1.0 / np.array(sizes), sizes)  # float64, as 1.0 / n
        self.shares = torch.from_numpy(shares).to(like.device, like.dtype)[:, None]
        self.minus_one = self.x.new_full((rows, 1), -1.0)
        # each layer's input (the rows, then each hidden layer's) and output error, and the
        # error times the weights above (before the ReLU's mask)
        self.inputs = [self.x, *(self.x.new_empty(rows, w.shape[0]) for w in self.matrices[:-1])]
        self.logits = self.x.new_empty(rows, self.matrices[-1].shape[0])
        self.errors = [self.x.new_empty(rows, w.shape[0]) for w in self.matrices]
        self.backs = [self.x.new_empty(rows, w.shape[1]) for w in self.matrices[1:]]
        columns = list(itertools.accumulate((w.numel() for w in weights), initial=0))
        self.out = self.x.new_empty(len(sizes), columns[-1])
        # each group's gradient, E_g^T A_g and E_g^T 1 by layer, as (operator, operands,
        # where it writes); the groups after the first of one size (the memory's full
        # per-task shares) in one batched product, on the CPU bit for bit the per-group
        # products (a GPU library may round a batched product otherwise)
        self.products: list[tuple[Callable[..., Tensor], tuple[Any, ...], Tensor]] = []
        batched = len(rest) > 1 and len(set(rest)) == 1
        bounds = list(itertools.accumulate(sizes, initial=0))
        for layer, (a, d) in enumerate(zip(self.inputs, self.errors, strict=True)):
            start, middle, end = columns[2 * layer : 2 * layer + 3]
            shape = (d.shape[1], a.shape[1])
            own = self.out[0, start:middle].view(shape)
            self.products += [
                (torch.mm, (d[:n].t(), a[:n]), own),
                (torch.sum, (d[:n], 0), self.out[0, middle:end]),
            ]
            if batched:
                groups = d[n:].view(len(rest), rest[0], shape[0])
                inputs = a[n:].view(len(rest), rest[0], shape[1])
                blocks = self.out[1:, start:middle].view(len(rest), *shape)
                self.products += [
                    (torch.bmm, (groups.transpose(1, 2), inputs), blocks),
                    (torch.sum, (groups, 1), self.out[1:, middle:end]),
                ]
                continue
            for group, (i, j) in enumerate(itertools.pairwise(bounds[1:]), start=1):
                block = self.out[group, start:middle].view(shape)
                self.products += [
                    (torch.mm, (d[i:j].t(), a[i:j]), block),
                    (torch.sum, (d[i:j], 0), self.out[group, middle:end]),
                ]

    def holds(self, weights: Sequence[Tensor], sizes: Sequence[int], like: Tensor) -> bool:
        """Whether it is the layout of these very weights, group sizes and rows."""
        same = len(weights) == len(self.weights) and all(
            a is b for a, b in zip(weights, self.weights, strict=True)
        )
        rows = (like.dtype, like.device, like[0].numel()) == (self.dtype, self.device, self.width)
        return same and rows and tuple(sizes) == self.sizes

    def run(self) -> tuple[Tensor, Tensor]:
        """Each row's loss ``[N, 1]`` and each group's mean gradient ``[G, P]`` (the kept
        buffer) at the weights as they are, from the rows in ``x`` and ``y``: the
        operators of :func:`sample_factors` (forward, softmax error scaled by each row's
        share, backward) and the products, each into its buffer."""
        last = len(self.matrices) - 1
        for layer in range(last):
            below, above = self.inputs[layer], self.inputs[layer + 1]
            torch.addmm(self.biases[layer], below, self.transposed[layer], out=above).relu_()
        torch.addmm(self.biases[last], self.inputs[last], self.transposed[last], out=self.logits)
        log_p = F.log_softmax(self.logits, 1)
        losses = log_p.gather(1, self.labels).neg_()
        # softmax - one_hot(y) (softmax_error), each row times its share
        error = torch.exp(log_p, out=self.errors[last])
        error.scatter_add_(1, self.labels, self.minus_one).mul_(self.shares)
        for layer in range(last, 0, -1):
            back = torch.mm(self.errors[layer], self.matrices[layer], out=self.backs[layer - 1])
            torch.ops.aten.threshold_backward.grad_input(
                back, self.inputs[layer], 0, grad_input=self.errors[layer - 1]
            )
        for operator, operands, written in self.products:
            operator(*operands, out=written)
        return losses, self.out


def _past_task_rows(task_ids: Tensor, current: int) -> tuple[Tensor, list[int], list[int]]:
    """The rows of each task id in ``task_ids`` other than ``current``, task after task
    (in increasing order, each task's in their order), each task's count and the task
    ids; on the CPU by one stable sort and a count in numpy (a few microseconds where
    torch's per-task ``unique`` and ``nonzero`` took fifty)."""
    if task_ids.device.type != "cpu":
        tasks = [t for t in task_ids.unique().tolist() if t != current]
        rows = [(task_ids == t).nonzero().squeeze(1) for t in tasks]
        if not rows:
            return task_ids.new_empty(0), [], []
        return torch.cat(rows), [len(r) for r in rows], tasks
    ids = task_ids.numpy()
    try:
        counts = np.bincount(ids)
    except ValueError:  # a negative id (numpy's message would not say where)
        raise ValueError(f"task ids are non-negative; the memory holds {ids.min()}") from None
    order = ids.argsort(kind="stable")
    if 0 <= current < len(counts):
        counts[current] = 0
    (found,) = counts.nonzero()
    picked = order[ids[order] != current]
    return torch.from_numpy(picked), counts[found].tolist(), found.tolist()


def ace_gradients(
    weights: Sequence[Tensor], batch: Batch, keep: Tensor, replay: Batch | None
) -> tuple[Tensor, list[Tensor]]:
    """ER-ACE's loss, the incoming batch's cross-entropy over the ``keep [C]`` logits
    plus the replay's over all, and its gradient (``[dW_1, db_1, ...]``), without autograd."""
    x, y, n = batch.x.flatten(1), batch.y, len(batch.y)
    shares = torch.full((n,), 1.0 / n, dtype=x.dtype, device=x.device)
    if replay is not None:
        r = len(replay.y)
        x, y = torch.cat([x, replay.x.flatten(1)]), torch.cat([y, replay.y])
        shares = torch.cat([shares, shares.new_full((r,), 1.0 / r)])
    factors = sample_factors(weights, x, y, keep.expand(n, -1), shares)
    return factors.losses @ shares, factors.summed()


@dataclass(frozen=True)
class Interference:
    """MIR's scores of the candidates, and the forward passes they were computed from.

    Attributes:
        scores: float ``[C]``, each candidate's loss after the virtual step less before.
        batch: the incoming batch.
        incoming: the incoming batch's hidden-layer inputs and logits, at the weights.
        candidates: the candidates' hidden-layer inputs and logits, at the weights.
        versions: the weights' version counters when the passes were taken.
    """

    scores: Tensor
    batch: Batch
    incoming: tuple[Tensor, ...]
    candidates: tuple[Tensor, ...]
    versions: tuple[int, ...]

    def activations(self, chosen: Tensor, replayed: Batch) -> Activations:
        """The forward pass of the incoming batch joined with the candidates at ``chosen``
        (int64 ``[R]``), as the step on them runs it; ``replayed``: those candidates as
        the replay batch that carries it (MIR's)."""
        joined = [
            torch.cat([a, b.index_select(0, chosen)])
            for a, b in zip(self.incoming, self.candidates, strict=True)
        ]
        rows = (self.batch.x, replayed.x)
        return Activations(tuple(joined[:-1]), joined[-1], rows, self.versions)


@torch.no_grad()
def interference(
    weights: Sequence[Tensor], incoming: Batch, candidates: Batch, lr: float
) -> Interference:
    """MIR's scores (:attr:`Interference.scores`): each candidate's loss after a virtual
    SGD step on ``incoming`` at ``lr`` less its loss before, with no virtual weights formed.

    A layer's output at the stepped weights is its output at the old ones less
    ``lr / N (a A^T E + sum E)`` (``A``, ``E``: the incoming samples' factors, ``a`` the
    candidate's input there): the first layer's large product is taken once, for both.
    The forward passes at the weights are kept: the step on the batch joined with the
    chosen candidates starts from them (:meth:`Interference.activations`).
    """
    weights = [w.detach() for w in weights]
    seen_inputs, logits = _layer_inputs(weights, incoming.x)  # no losses: not read here
    errors = _errors(weights, seen_inputs, F.log_softmax(logits, 1), incoming.y)
    scale = lr / len(incoming.y)
    now = virtual = candidates.x.flatten(1)
    n_layers = len(weights) // 2
    hidden = []
    for layer in range(n_layers):
        w, b = weights[2 * layer], weights[2 * layer + 1]
        seen, error = seen_inputs[layer], errors[layer]
        out = torch.addmm(b, now, w.t())
        stepped = out if layer == 0 else torch.addmm(b, virtual, w.t())
        moved = torch.addmm(stepped, virtual @ seen.t(), error, alpha=-scale)
        moved.sub_(error.sum(0), alpha=scale)
        if layer < n_layers - 1:  # neither output is read again: rectified in place
            now, virtual = out.relu_(), moved.relu_()
            hidden.append(now)
    before = F.cross_entropy(out, candidates.y, reduction="none")
    scores = F.cross_entropy(moved, candidates.y, reduction="none") - before
    return Interference(
        scores, incoming, (*seen_inputs[1:], logits), (*hidden, out), versions(weights)
    )


class MlpCosines:
    """GSS's scores against the gradients of ``stored`` samples, from the layer factors:
    ``max_j cos(g, G_j) + 1`` for the batch's mean gradient or each sample's.

    The reference (``strategies/gss.py``'s ``Cosines``) forms every per-sample gradient
    under ``vmap`` and normalises ``[N, P]`` rows.
    """

    def __init__(self, weights: Sequence[Tensor], stored: Batch) -> None:
        self.weights = weights
        self.stored = sample_factors(weights, stored.x, stored.y)
        self.stored_norms = self.stored.norms().clamp_min(EPS)

    def batch_score(self, batch: Batch) -> Tensor:
        """0-d: the score of the gradient of ``batch``'s mean loss."""
        factors = sample_factors(self.weights, batch.x, batch.y)
        dots = factors.dots(self.stored).mean(0)  # <mean_i g_i, G_j>
        norm = factors.dots(factors).mean().clamp_min(0).sqrt().clamp_min(EPS)
        return (dots / (norm * self.stored_norms)).max() + 1

    def sample_scores(self, batch: Batch) -> Tensor:
        """``[N]``: each sample's score."""
        factors = sample_factors(self.weights, batch.x, batch.y)
        norms = factors.norms().clamp_min(EPS)
        cos = factors.dots(self.stored) / (norms[:, None] * self.stored_norms)
        return cos.max(1).values + 1
