"""A small functional core for meta-learning: parameters as dicts, inner loops, meta-gradients.

Every forward pass is ``torch.func.functional_call(model, params, (x, task_ids))`` with
``params`` a dict keyed by parameter name, so an inner loop is a sequence of dicts
``theta_0 -> theta_1 -> ... -> theta_K`` built with ordinary tensor arithmetic, and an outer
(meta-) loss evaluated at ``theta_K`` is differentiated with one ``torch.autograd.grad``
call back to ``theta_0`` and to the learning rates. There is no copy of the module and no
dependency on ``higher``.

Second order (MAML): the inner gradients are built with ``create_graph=True``, so the outer
gradient includes the Hessian-vector products of the inner steps. First order (FOMAML,
La-MAML's MNIST runs): the inner gradients are constants, so ``d theta_K / d theta_0`` is
the identity and the outer gradient at the fast weights is used as the gradient at the
initial weights; the gradient with respect to a learning rate is still exact given those
constant inner gradients (``-sum_k g_k * d outer / d theta_K``).

Why ``torch.autograd.grad`` rather than ``torch.func.grad`` for the inner step: La-MAML
takes one inner step per sample, so the per-step overhead dominates; the autograd form has
the least of it, and it differentiates with respect to any tensor that requires grad
(per-parameter learning rates included) without threading ``argnums`` through every call.
``functional_call`` keeps the model stateless either way.

References: Finn et al. 2017 (MAML, first-order MAML); Gupta et al. 2020 (La-MAML);
Javed & White 2019 (OML).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from lifelong.contracts.strategy import Batch

__all__ = [
    "LossFn",
    "Params",
    "forward",
    "load_params",
    "loss_fn",
    "meta_gradient",
    "params_of",
    "sgd_inner_loop",
    "sgd_step",
]

Params = dict[str, Tensor]
"""Tensors keyed by parameter name, as ``model.named_parameters()`` names them."""

B = TypeVar("B")
LossFn = Callable[[Params, Batch], Tensor]
"""``loss(params, batch) -> 0-d`` loss of the model with weights ``params`` on ``batch``."""


def params_of(model: nn.Module, *, detach: bool = True) -> Params:
    """The parameters of ``model`` as a dict keyed by name.

    Args:
        model: any module.
        detach: ``True`` (default) gives fresh leaves: clones, detached from the module,
            that require grad, so a meta-learner owns them and nothing it does touches the
            module. ``False`` gives the module's live ``nn.Parameter`` objects (an optimiser
            built on them updates the module).

    Returns:
        ``{name: tensor}`` in ``named_parameters`` order.
    """
    if not detach:
        return dict(model.named_parameters())
    return {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}


@torch.no_grad()
def load_params(model: nn.Module, params: Params) -> None:
    """Copy ``params`` into ``model``'s parameters (all names must match exactly)."""
    own = dict(model.named_parameters())
    if own.keys() != params.keys():
        missing, extra = sorted(own.keys() - params.keys()), sorted(params.keys() - own.keys())
        raise ValueError(f"parameter names differ: missing {missing}, unexpected {extra}")
    for name, p in own.items():
        if p.shape != params[name].shape:
            raise ValueError(f"{name}: shape {tuple(params[name].shape)} != {tuple(p.shape)}")
        p.copy_(params[name])


def forward(model: nn.Module, params: Params, x: Tensor, task_ids: Tensor | None = None) -> Tensor:
    """``model(x, task_ids)`` computed with the weights ``params`` (the module is not touched).

    Args:
        params: weights by name; names left out fall back to the module's own parameters.
        x: float ``[B, D]``.
        task_ids: int64 ``[B]`` (multi-head models only).

    Returns:
        Logits ``[B, n_outputs]``.
    """
    return functional_call(model, params, (x, task_ids))


def loss_fn(model: nn.Module) -> LossFn:
    """Mean cross-entropy of ``model`` with weights ``params`` on a :class:`lifelong.Batch`."""

    def loss(params: Params, batch: Batch) -> Tensor:
        return F.cross_entropy(forward(model, params, batch.x, batch.task_ids), batch.y)

    return loss


def sgd_step(
    loss: Callable[[Params, B], Tensor],
    params: Params,
    batch: B,
    lr: float | Params,
    *,
    only: Collection[str] | None = None,
    create_graph: bool = False,
) -> Params:
    """One differentiable SGD step: ``theta' = theta - lr * grad loss(theta, batch)``.

    Args:
        loss: ``loss(params, batch) -> 0-d``.
        params: current weights; every adapted tensor must require grad.
        batch: whatever ``loss`` takes (a :class:`lifelong.Batch` for :func:`loss_fn`).
        lr: one rate, or a rate tensor per adapted name (broadcast against the parameter,
            e.g. ``{n: relu(alpha[n])}`` for La-MAML); rates that require grad receive
            meta-gradients.
        only: names to adapt (e.g. the prediction head for OML); the others are passed
            through unchanged (same tensor objects). ``None`` adapts every name.
        create_graph: ``True`` for second-order meta-gradients; ``False`` makes the inner
            gradient a constant (first order).

    Returns:
        The new weights, a new dict; ``params`` is not modified.
    """
    names = list(params) if only is None else _checked(only, params)
    if not isinstance(lr, (int, float)) and not lr.keys() >= set(names):
        raise ValueError(f"lr has no rate for {sorted(set(names) - lr.keys())}")
    value = loss(params, batch)
    grads = torch.autograd.grad(
        value,
        [params[n] for n in names],
        create_graph=create_graph,
        allow_unused=True,
        materialize_grads=True,
    )
    fast = dict(params)
    for name, g in zip(names, grads, strict=True):  # one fused kernel per tensor
        if isinstance(lr, (int, float)):
            fast[name] = torch.add(params[name], g, alpha=-lr)
        else:
            fast[name] = torch.addcmul(params[name], lr[name], g, value=-1)
    return fast


def sgd_inner_loop(
    loss: Callable[[Params, B], Tensor],
    params: Params,
    batches: Iterable[B],
    lr: float | Params,
    *,
    only: Collection[str] | None = None,
    create_graph: bool = False,
) -> list[Params]:
    """One :func:`sgd_step` per batch, in order.

    Args:
        batches: the inner-loop data, one step per item (La-MAML: one sample per item; OML:
            the trajectory, one sample per item).
        lr, only, create_graph: as in :func:`sgd_step`.

    Returns:
        The trajectory ``[theta_1, ..., theta_K]`` (``[-1]`` is the final fast weights);
        an empty list when ``batches`` is empty.
    """
    if only is not None:
        _checked(only, params)
    trajectory: list[Params] = []
    fast = params
    for batch in batches:
        fast = sgd_step(loss, fast, batch, lr, only=only, create_graph=create_graph)
        trajectory.append(fast)
    return trajectory


def meta_gradient(
    outer_loss: Tensor,
    params: Params,
    lrs: Params | None = None,
    *,
    retain_graph: bool = False,
) -> tuple[Params, Params]:
    """Gradients of an outer loss with respect to the initial weights and the learning rates.

    Args:
        outer_loss: 0-d, computed from fast weights that :func:`sgd_inner_loop` derived
            from ``params`` (and, if given, ``lrs``).
        params: the initial weights ``theta_0`` (leaves that require grad).
        lrs: per-parameter learning rates that require grad (e.g. La-MAML's ``alpha``).
        retain_graph: keep the graph for another backward pass.

    Returns:
        ``(d outer / d params, d outer / d lrs)``; the second is ``{}`` without ``lrs``.
        Names the loss does not depend on get zeros.
    """
    lrs = lrs or {}
    inputs = [*params.values(), *lrs.values()]
    grads = torch.autograd.grad(
        outer_loss, inputs, retain_graph=retain_graph, allow_unused=True, materialize_grads=True
    )
    n = len(params)
    return dict(zip(params, grads[:n], strict=True)), dict(zip(lrs, grads[n:], strict=True))


def _checked(only: Collection[str], params: Params) -> list[str]:
    unknown = sorted(set(only) - params.keys())
    if unknown:
        raise ValueError(f"only= names {unknown} are not parameters; known: {sorted(params)}")
    return [n for n in params if n in only]
