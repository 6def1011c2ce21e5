"""A quadratic penalty's slopes and value in one compiled pass (numba).

Accelerates: :meth:`lifelong.Quadratic.value_and_slopes` (``contracts/parts.py``), the
reference, which :meth:`lifelong.fast.ClosedForm.descend` and ``loss_and_grads`` read
every step of a run whose objective holds EWC's, online EWC's, MAS's or SI's penalty (with
``sgd.proximal=false``). For each weight the reference takes ``d = theta - c`` and the
slopes ``s = w d`` (two operators, each a pass over the weights) and the value
``offset + scale * sum(s . d)`` (a dot product per weight, stacked and summed): about
twenty operators a step, whose dispatch cost more than their arithmetic (the EWC workload
of ``lifelong bench`` 7.5% shorter with this kernel, in paired runs in one process).
Compiled, each weight is one pass that reads ``theta``, ``c`` and ``w``, writes ``s``
and sums ``s d`` as it goes.

The slopes are the reference's bit for bit (one subtraction and one product per element,
as the operators take them), and they are all that moves the weights, so a run's
accuracies are the reference's exactly. The value's sum is taken in another order (vector
lanes), equal up to float rounding: it is only read as the step's loss (the progress
bar, the check for a non-finite loss and, with hidden boundaries, the loss-based detector).

Applies when: the objective declares a closed form (``fast`` on), numba (the extra
``fast``) is installed and compiles here, and the weights, centres and curvatures are
contiguous CPU tensors of one float dtype; else :func:`compiled_value_and_slopes` returns
None and the reference runs. The slopes are written into buffers kept with the views
(:class:`PenaltyViews`), which the caller consumes before its next call. Compiled on first
use (about a second) and cached on disk by numba. Tested in ``tests/test_penalty_kernel.py``.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from lifelong.fast.compiled import Kernel, numba_kernel

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

    tensors: tuple[Tensor, ...]  # (parameter, centre, curvature) of each name, by identity
    pointers: tuple[int, ...]  # their storage, in the same order
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
            pointers=tuple(t.data_ptr() for triple in triples for t in triple),
            arrays=arrays,
            slopes=slopes,
            sums=np.zeros(len(names)),
        )

    def hold(self, quadratic: Quadratic, params: Params) -> bool:
        """Whether these are the views of ``quadratic`` at ``params``."""
        names = list(quadratic.weights)
        if 3 * len(names) != len(self.tensors):
            return False
        now = itertools.chain(
            *((params[n], quadratic.center[n], quadratic.weights[n]) for n in names)
        )
        for kept, pointer, t in zip(self.tensors, self.pointers, now, strict=True):
            if t is not kept or t.data_ptr() != pointer:  # another tensor, or new storage
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
    offset, dtype = quadratic.offset, views.tensors[0].dtype
    if isinstance(offset, Tensor):  # the reference's dtype: the wider of the two
        value = offset.to(torch.promote_types(offset.dtype, dtype)) + total
    else:
        value = torch.tensor(offset + total, dtype=dtype)
    return value, views.slopes, views


def _flat(t: Tensor) -> np.ndarray:
    """A 1-d numpy view of a contiguous CPU tensor's storage (no copy)."""
    return t.detach().numpy().reshape(-1)


@functools.cache
def kernel() -> Kernel:
    """This process's kernel, made on first use (numba compiles it once per process and
    dtype, and caches it on disk). Reassociation lets the sum use vector lanes (it cannot
    shorten ``w * (theta - c)``, one subtraction and one product, so the slopes round as
    the operators' do; the tests hold them bit for bit); no contraction; NaN and inf keep
    their meaning."""
    fastmath = {"reassoc", "nsz", "arcp"}
    return numba_kernel(_slopes_and_sum, "the quadratic penalty's CPU kernel", fastmath)


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
