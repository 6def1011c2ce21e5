"""Closed-form cross-entropy gradients of a model that declares them.

Accelerates: the gradient of an objective that is the mean cross-entropy of a model
(plus quadratic penalties), which the reference path builds with autograd
(``torch.autograd.grad`` of the objective: the ``sgd`` learner, :func:`lifelong.supervised_step`,
MER's single-sample steps). The gradient is the chain rule written out for ``relu(x W^T + b)``
layers and a softmax output, with no graph: autograd's values up to float rounding, a step
about two thirds of autograd's cost on the CPU.

Applies when: the model declares the capability (:class:`lifelong.ClosedFormModel` with
``closed_form_grads()`` true: the one-head :class:`lifelong.MLP`), every one of its weights
learns, the run has ``fast`` on, and the objective says so by carrying a :class:`ClosedForm`
(a composite builds it in ``setup``). Tested equal to the reference in
``tests/test_closed_form.py``.

:func:`cross_entropy_descent` goes one step further for the ``sgd`` learner's plain step
(no momentum, no per-weight rates, the cross-entropy with at most quadratic penalties,
whose gradient no part reads): it moves each weight matrix by its gradient's product in
place, forming no gradient, and :meth:`ClosedForm.descend` then takes each penalty's step
from its slopes at the weights before the step. When the
replay batch carries the step's forward pass, taken by MIR's scoring on the same weights
(:class:`Activations`), the step starts from it instead of running its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.fast.penalty_kernel import PenaltyViews, compiled_value_and_slopes
from lifelong.models.mlp import ClosedFormModel

if TYPE_CHECKING:
    from lifelong.contracts.parts import Quadratic, Regularizer, Replay
    from lifelong.contracts.strategy import Batch

__all__ = [
    "Activations",
    "ClosedForm",
    "cross_entropy_descent",
    "cross_entropy_grads",
    "has_closed_form",
    "sample_step",
    "softmax_error",
]

Params = dict[str, Tensor]


@dataclass(frozen=True)
class Activations:
    """A one-head MLP's forward pass on a step's rows (the incoming batch joined with the
    replay batch), taken ahead of the step by another acceleration on the same weights
    (MIR's scoring, :func:`lifelong.fast.interference`): each hidden layer's input, the
    logits, the inputs they were computed for (``rows``: the incoming batch's and the
    replay batch's ``x``) and the weights' version counters at the time.
    :meth:`ClosedForm.descend` uses them instead of its own forward pass while they
    :meth:`hold` for its batch, replay batch and weights. The numbers are those of its own
    pass up to float rounding; on the CPU bit for bit (a row's products there do not depend
    on the rows beside it; a GPU library may pick another kernel for another row count)."""

    hidden: tuple[Tensor, ...]
    logits: Tensor
    rows: tuple[Tensor, Tensor]
    versions: tuple[int, ...]

    def current(self, weights: Sequence[Tensor]) -> bool:
        """Whether no weight has changed in place since the pass was taken."""
        return self.versions == versions(weights)

    def hold(self, batch: Batch, replay: Replay, weights: Sequence[Tensor]) -> bool:
        """Whether the pass is the step's: taken for this very batch and replay batch (the
        same tensors), at these weights unchanged since."""
        incoming, replayed = self.rows
        return incoming is batch.x and replayed is replay.batch.x and self.current(weights)


def versions(weights: Sequence[Tensor]) -> tuple[int, ...]:
    """The version counters of ``weights`` (each in-place change adds one)."""
    return tuple(w._version for w in weights)


def has_closed_form(model: nn.Module) -> bool:
    """Whether ``model`` declares closed-form cross-entropy gradients and all its weights learn."""
    declared = isinstance(model, ClosedFormModel) and model.closed_form_grads()
    return declared and all(p.requires_grad for p in model.parameters())


@dataclass(frozen=True)
class ClosedForm:
    """What an objective declares when its gradient has a closed form.

    The objective is the mean cross-entropy of a :class:`lifelong.ClosedFormModel` whose
    weights are ``names`` (in layer order, all of them), plus ``lam * penalty`` for each
    of ``quadratics`` (regularizers that state their penalty as a :class:`lifelong.Quadratic`).
    """

    names: tuple[str, ...]
    quadratics: tuple[Regularizer, ...] = ()
    gradients_read: bool = False
    """A part may read each step's gradient (:attr:`lifelong.Regularizer.reads_gradients`:
    SI's path integral, and any part that does not declare otherwise), so a learner must
    form it: no :meth:`descend`."""
    views: dict[int, PenaltyViews] = field(default_factory=dict, compare=False, repr=False)
    """The compiled penalty kernel's views of each quadratic penalty (by its place in
    ``quadratics``), kept while its tensors stay the same (:mod:`lifelong.fast.penalty_kernel`)."""

    def covers(self, params: Params, *, penalties: bool = True) -> bool:
        """Whether it holds for the weights ``params`` (and, ``penalties=False``, no penalty)."""
        return (penalties or not self.quadratics) and tuple(params) == self.names

    def descends(self, params: Params) -> bool:
        """Whether :meth:`descend` may take a plain SGD step on ``params``: the objective
        is the cross-entropy (plus its quadratic penalties) and no part reads the step's
        gradient."""
        return not self.gradients_read and self.covers(params)

    def descend(self, params: Params, batch: Batch, replay: Replay | None, lr: float) -> Tensor:
        """``theta -= lr * grad`` of the objective on ``batch`` joined with the replay
        batch, in place, with no gradient formed: the cross-entropy's step by
        :func:`cross_entropy_descent`, then each quadratic penalty's, ``-lr lam 2 scale
        w (theta - c)`` at the weights before the step (equal to the gradient's step up to
        float rounding). Returns the objective before the step. Only where :meth:`descends`."""
        x, y = _joined(batch, replay)
        weights = list(params.values())
        ahead = replay.activations if replay is not None else None
        if ahead is not None and (replay is None or not ahead.hold(batch, replay, weights)):
            ahead = None
        penalty, pulls = self._penalty_slopes(params, batch, replay)
        loss = cross_entropy_descent(weights, x, y, lr, ahead)
        with torch.no_grad():
            for names, slopes, rate in pulls:
                torch._foreach_add_([params[n] for n in names], slopes, alpha=-lr * rate)
        return loss if penalty is None else loss + penalty

    def _penalty_slopes(
        self, params: Params, batch: Batch, replay: Replay | None
    ) -> tuple[Tensor | None, list[tuple[list[str], list[Tensor], float]]]:
        """``sum(lam * penalty)`` over the quadratic penalties (None: there are none) and,
        for each one stated, the names of the weights it pulls, its slopes ``w (theta - c)``
        and the factor ``2 scale lam`` that makes them its share of the gradient."""
        penalty: Tensor | None = None
        pulls = []
        for place, reg in enumerate(self.quadratics):
            quadratic = reg.quadratic()
            if quadratic is None:  # nothing consolidated yet: its value, no gradient
                value = reg.penalty(params, batch, replay).detach()
            else:
                value, slopes = self._value_and_slopes(place, quadratic, params)
                rate = 2 * quadratic.scale * reg.lam
                pulls.append((list(slopes), list(slopes.values()), rate))
            penalty = reg.lam * value if penalty is None else penalty + reg.lam * value
        return penalty, pulls

    def _value_and_slopes(
        self, place: int, quadratic: Quadratic, params: Params
    ) -> tuple[Tensor, Params]:
        """:meth:`lifelong.Quadratic.value_and_slopes`, by the compiled kernel where it runs
        (:func:`lifelong.fast.penalty_kernel.compiled_value_and_slopes`: the same slopes bit
        for bit, written into buffers that the caller consumes before the next step)."""
        compiled = compiled_value_and_slopes(quadratic, params, self.views.get(place))
        if compiled is None:
            return quadratic.value_and_slopes(params)
        value, slopes, self.views[place] = compiled
        return value, slopes

    def loss_and_grads(
        self, params: Params, batch: Batch, replay: Replay | None
    ) -> tuple[Tensor, Params]:
        """The objective on ``batch`` joined with the replay batch, and its gradient by name."""
        x, y = _joined(batch, replay)
        loss, by_hand = cross_entropy_grads(list(params.values()), x, y)
        grads = dict(zip(params, by_hand, strict=True))
        penalty, pulls = self._penalty_slopes(params, batch, replay)
        for names, slopes, rate in pulls:
            torch._foreach_add_([grads[n] for n in names], slopes, alpha=rate)
        return (loss if penalty is None else loss + penalty), grads


def _joined(batch: Batch, replay: Replay | None) -> tuple[Tensor, Tensor]:
    """The MLP's flat rows of ``batch`` (images ``[B, C, H, W]`` flattened), followed by
    the replay batch's, and their targets."""
    x, y = batch.x.flatten(1), batch.y
    if replay is None:
        return x, y
    return torch.cat([x, replay.batch.x.flatten(1)]), torch.cat([y, replay.batch.y])


def cross_entropy_grads(
    weights: Sequence[Tensor], x: Tensor, y: Tensor
) -> tuple[Tensor, list[Tensor]]:
    """Mean cross-entropy of a one-head ReLU MLP and its gradient, written out by hand.

    The forward pass keeps each layer's activations; the backward pass is the chain rule
    for ``relu(x W^T + b)`` layers and a softmax output, with no autograd graph.

    Args:
        weights: ``(W_1, b_1, ..., W_L, b_L)``, ``W_l`` shaped ``[out, in]`` (read only).
        x: float ``[N, D]``; y: int64 ``[N]`` targets.

    Returns:
        ``(loss, [dW_1, db_1, ..., dW_L, db_L])``, the loss detached.
    """
    loss, acts, errors = _backward(weights, x, y)
    grads: list[Tensor] = []
    for below, error in zip(acts, errors, strict=True):
        grads += [error.t() @ below, error.sum(0)]
    return loss, grads


@torch.no_grad()
def cross_entropy_descent(
    weights: Sequence[Tensor], x: Tensor, y: Tensor, lr: float, ahead: Activations | None = None
) -> Tensor:
    """One SGD step ``theta -= lr * grad`` of :func:`cross_entropy_grads`' loss, in place,
    with no gradient formed: walking down the layers, each weight matrix takes
    ``-lr E^T A`` in one matrix product into itself and each bias ``-lr E^T 1`` in one
    matrix-vector product, once the error below has been formed from the old weights (an
    ER run on the default MLP about 4-5% shorter; equal to the gradient's step up to float
    rounding, the sums being taken in another order).

    Accelerates: the ``sgd`` learner's step (the objective's gradient, then
    ``SGD.descend``) when its momentum is 0, no per-weight rates are set and the objective
    :meth:`ClosedForm.descends`. Returns the loss before the step. ``ahead``: the forward
    pass on ``x`` at these weights, taken already (:class:`Activations`).
    """
    loss, acts, error = _forward(weights, x, y, ahead)
    for layer in range(len(acts) - 1, -1, -1):
        matrix, below = weights[2 * layer], acts[layer]
        lower = torch.ops.aten.threshold_backward(error @ matrix, below, 0) if layer else error
        matrix.addmm_(error.t(), below, alpha=-lr)
        weights[2 * layer + 1].sub_(error.sum(0), alpha=lr)
        error = lower
    return loss


@torch.no_grad()
def mlp_logits(weights: Sequence[Tensor], x: Tensor) -> Tensor:
    """The logits of a one-head ReLU MLP on ``weights`` (``W_1, b_1, ..., W_L, b_L``,
    ``W_l`` shaped ``[out, in]``) for ``x [N, ...]``, with no autograd graph.

    Accelerates: ``functional_call(model, params, (x, task_ids))`` under ``no_grad`` of a
    model that declares closed-form gradients (:func:`has_closed_form`) on a set of weights
    that is not its own: the old network of iCaRL and BiC (``strategies/herding.py``),
    called every step. The same operators as the model's layers (``nn.Linear``'s
    ``addmm``, then ReLU), so the same numbers, without swapping the weights into the
    module (227 us -> about 140 us on 40 rows of the default MLP).
    """
    out = x.flatten(1)
    n_layers = len(weights) // 2
    for layer in range(n_layers):
        out = torch.addmm(weights[2 * layer + 1], out, weights[2 * layer].t())
        if layer < n_layers - 1:
            out = out.relu_()
    return out


def _forward(
    weights: Sequence[Tensor], x: Tensor, y: Tensor, ahead: Activations | None = None
) -> tuple[Tensor, list[Tensor], Tensor]:
    """The mean cross-entropy (detached), each layer's input ``A_l`` and the error at the
    output ``E_L = (softmax - one_hot(y)) / N``, at the weights as they are (``ahead``:
    the hidden inputs and logits, computed already)."""
    if ahead is not None:
        acts, out = [x, *ahead.hidden], ahead.logits
    else:
        weights = [w.detach() for w in weights]
        n_layers = len(weights) // 2
        acts = [x]
        for layer in range(n_layers):
            out = torch.addmm(weights[2 * layer + 1], acts[-1], weights[2 * layer].t())
            if layer < n_layers - 1:
                acts.append(out.relu_())
    log_p = F.log_softmax(out, 1)
    loss = F.nll_loss(log_p, y)
    return loss, acts, softmax_error(log_p, y).div_(y.shape[0])


def _backward(
    weights: Sequence[Tensor], x: Tensor, y: Tensor
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """:func:`_forward`, and the error at every layer's output ``E_l``
    (``d loss / d (A_l W_l^T + b_l)``), by layer: the gradient of ``W_l`` is ``E_l^T A_l``
    and of ``b_l`` the column sums of ``E_l``."""
    loss, acts, error = _forward(weights, x, y)
    errors = [error]
    for layer in range(len(acts) - 1, 0, -1):
        back = errors[-1] @ weights[2 * layer].detach()
        errors.append(torch.ops.aten.threshold_backward(back, acts[layer], 0))
    errors.reverse()
    return loss, acts, errors


def softmax_error(log_p: Tensor, y: Tensor) -> Tensor:
    """``softmax - one_hot(y)``, the cross-entropy's gradient at the logits, in place of
    ``log_p [N, C]`` (log-probabilities; one scatter, not an indexed read and write)."""
    error = log_p.exp_()
    return error.scatter_add_(1, y[:, None], error.new_full((y.shape[0], 1), -1.0))


@torch.no_grad()
def sample_step(weights: tuple[Tensor, ...], x: Tensor, y: Tensor, lr: float) -> Tensor:
    """One SGD step of a one-head ReLU MLP on one sample's cross-entropy, in place, by hand.

    Accelerates MER's single-sample step (``strategies/mer.py``: the objective's autograd
    gradient, then ``theta -= lr * grad``), about 2.4x faster. ``weights`` are
    ``(W_1, b_1, ..., W_L, b_L)`` (``W_l`` shaped ``[out, in]``); ``x`` is ``[D]`` and
    ``y`` a 0-d target. The backward pass walks down the layers and moves each one as
    soon as the error below it is formed from its old weights (a rank-one update per
    matrix), which is the step ``theta - lr * grad`` of the whole network.

    Returns:
        The sample's loss at the weights before the step (0-d).
    """
    acts = [x.flatten()]
    n_layers = len(weights) // 2
    for layer in range(n_layers):
        out = torch.addmv(weights[2 * layer + 1], weights[2 * layer], acts[-1])
        if layer < n_layers - 1:
            acts.append(out.relu_())
    log_p = out.log_softmax(0)
    loss = -log_p[y]
    error = log_p.exp_()
    error[y] -= 1
    for layer in range(n_layers - 1, -1, -1):
        matrix, below = weights[2 * layer], acts[layer]
        lower = torch.ops.aten.threshold_backward(matrix.t() @ error, below, 0) if layer else error
        matrix.addr_(error, below, alpha=-lr)
        weights[2 * layer + 1].sub_(error, alpha=lr)
        error = lower
    return loss
