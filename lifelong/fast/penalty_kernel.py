"""A quadratic penalty's slopes and value in one compiled pass (numba).

Accelerates: :meth:`lifelong.Quadratic.value_and_slopes` (``contracts/parts.py``), the
reference, which :meth:`lifelong.fast.ClosedForm.descend` and ``loss_and_grads`` read
every step of a run whose objective holds EWC's, online EWC's or MAS's penalty (with
``sgd.proximal=false``). For each weight the reference takes ``d = theta - c`` and the
slopes ``s = w d`` (two operators, each a pass over the weights) and the value
``offset + scale * sum(s . d)`` (a dot product per weight, stacked and summed): about
twenty operators a step, whose dispatch cost more than their arithmetic (the EWC workload
of ``lifelong bench`` 5% shorter with this kernel). Compiled, each weight is one pass
that reads ``theta``, ``c`` and ``w``, writes ``s`` and sums ``s d`` as it goes.

The slopes are the reference's bit for bit (one subtraction and one product per element,
as the operators take them), and they are all that moves the weights, so a run's
accuracies are the reference's exactly. The value's sum is taken in another order (vector
lanes), equal up to float rounding: it is only reported (the step's loss).

Applies when: the objective declares a closed form (``fast`` on), numba (the extra
``fast``) is installed and compiles here, and the weights, centres and curvatures are
contiguous CPU tensors of one float dtype; else :func:`compiled_value_and_slopes` returns
None and the reference runs. The slopes are written into buffers kept with the views
(:class:`PenaltyViews`), which the caller consumes before its next call. Compiled on first
use (about a second) and cached on disk by numba. Tested in ``tests/test_closed_form.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from lifelong.fast.compiled import Kernel

if TYPE_CHECKING:
    from lifelong.contracts.parts import Quadratic

__all__ = ["PenaltyViews", "compiled_value_and_slopes", "kernel"]

Params = dict[str, Tensor]


@dataclass(frozen=True)
class PenaltyViews:
    """The arrays the kernel reads and writes for one penalty at one set of weights: for
    each weight its ``theta``, centre and curvature (numpy views of the tensors, no copy),
    its slopes buffer, and a running sum; valid while the penalty and the weights are the
    same tensors in the same storage (:meth:`hold`)."""

    tensors: tuple[Tensor, ...]  # weights, centres and parameters, by identity
    pointers: tuple[int, ...]  # the parameters' storage
    arrays: tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], ...]
    slopes: Params
    sums: np.ndarray  # float64, one per weight

    @classmethod
    def of(cls, quadratic: Quadratic, params: Params) -> PenaltyViews | None:
        """The views for ``quadratic`` at ``params``; None where the kernel cannot take them."""
        names = list(quadratic.weights)
        triples = [(params[n], quadratic.center[n], quadratic.weights[n]) for n in names]
        dtype = triples[0][0].dtype if triples else None
        if dtype not in (torch.float32, torch.float64):
            return None
        for triple in triples:
            for t in triple:
                if not (t.is_cpu and t.dtype == dtype and t.is_contiguous()):
                    return None
                if t.shape != triple[0].shape:
                    return None
        slopes = {n: torch.empty_like(quadratic.weights[n]) for n in names}
        arrays = tuple(
            (_flat(theta), _flat(center), _flat(weight), _flat(slopes[n]))
            for n, (theta, center, weight) in zip(names, triples, strict=True)
        )
        return cls(
            tensors=tuple(t for triple in triples for t in triple),
            pointers=tuple(params[n].data_ptr() for n in names),
            arrays=arrays,
            slopes=slopes,
            sums=np.zeros(len(names)),
        )

    def hold(self, quadratic: Quadratic, params: Params) -> bool:
        """Whether these are the views of ``quadratic`` at ``params``."""
        names = list(quadratic.weights)
        if 3 * len(names) != len(self.tensors):
            return False
        for i, n in enumerate(names):
            theta, center, weight = self.tensors[3 * i : 3 * i + 3]
            here = params[n]
            if here is not theta or center is not quadratic.center[n]:
                return False
            if weight is not quadratic.weights[n] or here.data_ptr() != self.pointers[i]:
                return False
        return True


def compiled_value_and_slopes(
    quadratic: Quadratic, params: Params, views: PenaltyViews | None
) -> tuple[Tensor, Params, PenaltyViews] | None:
    """:meth:`lifelong.Quadratic.value_and_slopes`, compiled: the penalty at ``params``,
    ``w (theta - c)`` by name (written into the views' buffers), and the views to pass to
    the next call (``views``: the last call's, reused while they :meth:`PenaltyViews.hold`).
    None where the kernel cannot run (the caller takes the reference)."""
    state = kernel()
    if state.compiled is None or state.unusable:
        return None
    if views is None or not views.hold(quadratic, params):
        views = PenaltyViews.of(quadratic, params)
        if views is None:
            return None
    try:
        for i, (theta, center, weight, slopes) in enumerate(views.arrays):
            state.compiled(theta, center, weight, slopes, views.sums, i)
    except Exception as error:
        from numba.core.errors import NumbaError

        if not isinstance(error, NumbaError):
            raise
        state.give_up(error)
        return None
    total = float(views.sums.sum()) * quadratic.scale
    offset = quadratic.offset
    if isinstance(offset, Tensor):
        value = offset + total
    else:
        value = torch.tensor(offset + total, dtype=views.tensors[0].dtype)
    return value, views.slopes, views


def _flat(t: Tensor) -> np.ndarray:
    """A 1-d numpy view of a contiguous CPU tensor's storage (no copy)."""
    return t.detach().numpy().reshape(-1)


@functools.cache
def kernel() -> Kernel:
    """This process's kernel, made on first use (numba compiles it once per process and
    dtype, and caches it on disk)."""
    return Kernel(_compiled(), "the quadratic penalty's CPU kernel")


def _compiled() -> Callable[..., Any] | None:
    try:
        import numba
    except Exception:  # absent, or built for another numpy: the reference serves
        return None
    # Reassociation lets the sum use vector lanes (it does not reorder a subtraction and a
    # product, so the slopes round as the operators' do); NaN and inf keep their meaning.
    options: dict[str, Any] = {"fastmath": {"reassoc", "nsz", "arcp"}, "boundscheck": False}
    return numba.njit(cache=True, **options)(_slopes_and_sum)


def _slopes_and_sum(theta, center, weight, slopes, sums, i):
    """The loop :func:`compiled_value_and_slopes` compiles (plain Python, readable as such):
    ``slopes = weight * (theta - center)`` and ``sums[i] = sum(slopes * (theta - center))``,
    the sum kept in the weights' dtype (so that it runs in vector lanes)."""
    total = slopes.dtype.type(0)
    for j in range(theta.size):
        d = theta[j] - center[j]
        s = weight[j] * d
        slopes[j] = s
        total += s * d
    sums[i] = total
