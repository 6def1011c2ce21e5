"""The CPU kernels of La-MAML's closed-form look-ahead (``lookahead_mlp.py``), in numba.

Accelerates: three groups of PyTorch operators in ``lookahead_mlp.py``, which are their
reference. Applies when: numba (the extra ``fast``) is installed and compiles here, and
the tensors are contiguous float CPU tensors; else each function returns None and the
operators run. Tested equal to the operators (1e-5 in float32, 1e-12 in float64).

Three pieces of the look-ahead are a poor fit for PyTorch operators on the CPU:

- The inner loop takes one SGD step per incoming sample, each depending on the last, so
  it cannot be batched; in PyTorch every step is about fourteen operators on vectors of a
  hundred, whose dispatch costs more than their arithmetic (about 100 us a step on a
  2-core CPU). Compiled, a step is one pass of plain loops over the weights (about 6 us
  for the 784-100-100-10 MLP): :func:`compiled_inner_loop`.
- The first layer meets every product ``x_j * X_m`` of an incoming row with a meta-batch
  row. An MNIST digit inks about a fifth of its pixels and two digits of different
  permutations share a few dozen, but a matmul pays for every pixel that any row inks
  (on the 20-task permuted stream, 700 of 784 once the memory holds many tasks). The
  compiled loops go pixel by pixel over the rows that ink it:
  :func:`compiled_pair_products` and :func:`compiled_pair_rate_grads`.
- The sums over the look-ahead steps of the meta-gradients, plain and weighted by the
  inner gradients so far, are one pass over ``[B, P]`` instead of five operators:
  :func:`compiled_meta_sums`.

The loops run over row slices (``weights[lo:hi]``), which the compiler turns into vector
instructions; indexing the flat arrays directly made the inner loop four times slower
(224 against 57 us for ten steps, measured 2026-12-01). Each kernel is compiled on first
use (12 s for all four in float32 on this 2-core CPU) and cached on disk by numba next to
this file (or in numba's user cache where that is read-only), so a later process loads
them in about a second. Where numba is missing or cannot compile (another
platform, a numpy it does not support), or the tensors are not contiguous float CPU
tensors, the functions return ``None`` and the caller takes its PyTorch operators; tests
check both paths give the same numbers.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "Kernels",
    "compiled_inner_loop",
    "compiled_meta_sums",
    "compiled_pair_products",
    "compiled_pair_rate_grads",
    "kernels",
]

_FLOATS = (torch.float32, torch.float64)


def compiled_inner_loop(
    widths: list[int], theta: Tensor, rate: Tensor, y: Tensor, pre: Tensor, rated: Tensor
) -> tuple[Tensor, Tensor, Tensor] | None:
    """The inner steps, compiled; ``None`` when they cannot run here.

    Args:
        widths: the layer widths from the first hidden layer on, ``[h_1, ..., C]``.
        theta, rate: the weights after the first layer and their rates, flat ``[P]``
            (``b_1`` first; read only).
        y: the targets ``[B]`` of the incoming samples, in inner-loop order.
        pre: ``[M, h_1]`` every meta-batch row times ``W_1`` at ``theta_0`` (no bias); the
            first ``B`` rows are the incoming samples.
        rated: ``[B, M, h_1]``: how inner step ``j`` moves row ``m``'s pre-activation,
            ``delta_j * rated[j, m]`` (``delta_j`` the step's error at the first layer).

    Returns:
        ``(g [B, P], fast [B, P], first [B, M, h_1])``: step ``k``'s gradient at
        ``theta_k``, the weights after it (``theta_{k+1} = theta_k - rate * g_k``), and the
        first layer's output for every meta-batch row at ``theta_{k+1}`` (after the ReLU
        when a layer follows).
    """
    if not _runs_here(theta, rate, pre, rated):
        return None
    grads, fast = theta.new_empty(len(y), len(theta)), theta.new_empty(len(y), len(theta))
    first = rated.new_empty(rated.shape)
    ran = kernels().launch(
        "inner_steps",
        theta.numpy(),
        rate.numpy(),
        y.contiguous().numpy(),
        pre.numpy(),
        rated.numpy(),
        np.asarray(widths, dtype=np.int64),
        grads.numpy(),
        fast.numpy(),
        first.numpy(),
    )
    return (grads, fast, first) if ran else None


def compiled_meta_sums(
    grads: Tensor, meta: Tensor, rate: Tensor, scale: float
) -> tuple[Tensor, Tensor] | None:
    """``scale * sum_k d_k`` and ``-scale * relu'(alpha) * sum_k G_k * d_k`` in one pass.

    ``grads`` are the inner gradients ``g_k`` and ``meta`` the meta-loss gradients ``d_k``,
    both ``[B, P]``; ``G_k = sum_{j<=k} g_j``; ``rate = relu(alpha)`` ``[P]`` (its sign is
    ``relu'(alpha)``). ``None`` when it cannot run here.
    """
    if not _runs_here(grads, meta, rate):
        return None
    total, by_rate = rate.new_empty(len(rate)), rate.new_empty(len(rate))
    arrays = (grads.numpy(), meta.numpy(), rate.numpy())
    ran = kernels().launch("meta_sums", *arrays, scale, total.numpy(), by_rate.numpy())
    return (total, by_rate) if ran else None


def compiled_pair_products(meta_x: Tensor, steps: int, alpha: Tensor) -> Tensor | None:
    """``rated[j, m] = (x_j * X_m) relu(alpha)^T`` for the ``steps`` incoming rows ``x_j``
    and every row ``X_m`` of ``meta_x`` ``[M, D]``: ``[steps, M, h]``, ``alpha`` ``[h, D]``.

    Only the pixels inked in both rows enter (an MNIST digit inks about a fifth of them,
    and digits of different permutations share few), so a pair costs its common pixels
    times ``h``, not ``D`` times ``h``; the product is symmetric, so the pairs of two
    incoming rows are computed once. ``None`` when it cannot run here.
    """
    if not _runs_here(meta_x, alpha):
        return None
    rated = meta_x.new_empty(steps, len(meta_x), len(alpha))
    ran = kernels().launch("pair_products", meta_x.numpy(), steps, alpha.numpy(), rated.numpy())
    return rated if ran else None


def compiled_pair_rate_grads(
    meta_x: Tensor, steps: int, error: Tensor, deltas: Tensor, scale: float, alpha: Tensor
) -> Tensor | None:
    """The first layer's rate gradient ``[h, D]``: ``relu'(alpha) * sum_{j,m} left[j, m]
    (x_j * X_m)^T`` with ``left[j, m] = -scale * delta_j * sum_{k>=j} error[k, m]``
    (``error`` ``[steps, M, h]``, ``deltas`` ``[steps, h]``); the pairs as
    :func:`compiled_pair_products` takes them. ``None`` when it cannot run here."""
    if not _runs_here(meta_x, error, deltas, alpha):
        return None
    part = torch.empty_like(alpha)
    arrays = (meta_x.numpy(), steps, error.numpy(), deltas.numpy(), scale, alpha.numpy())
    return part if kernels().launch("pair_rate_grads", *arrays, part.numpy()) else None


@dataclass
class Kernels:
    """The compiled kernels of a process, and whether they are usable.

    Attributes:
        compiled: the kernels, compiled on first call (None: numba is not installed).
        unusable: why numba could not compile a kernel here ("" while none has failed);
            once set, the PyTorch operators serve and no compile is tried again.
    """

    compiled: _Compiled | None
    unusable: str = ""

    def launch(self, name: str, *arrays: Any) -> bool:
        """Run kernel ``name`` on ``arrays``; False where numba is missing or cannot compile
        it (then, with one warning, PyTorch operators serve for the rest of the process)."""
        if self.compiled is None or self.unusable:
            return False
        try:
            getattr(self.compiled, name)(*arrays)
        except Exception as error:
            from numba.core.errors import NumbaError

            if not isinstance(error, NumbaError):
                raise
            self.unusable = f"{type(error).__name__}: {str(error).splitlines()[0]}"
            warnings.warn(
                f"lifelong: numba cannot compile La-MAML's CPU kernels here ({self.unusable}); "
                "PyTorch operators compute the same numbers, more slowly",
                RuntimeWarning,
                stacklevel=3,
            )
            return False
        return True


@functools.cache
def kernels() -> Kernels:
    """This process's kernels, made on first use (numba compiles a kernel once per process
    and dtype, and caches it on disk)."""
    return Kernels(_compiled())


def _runs_here(first: Tensor, *others: Tensor) -> bool:
    """Float CPU tensors of one dtype, contiguous: what the kernels take."""
    dtype = first.dtype
    if dtype not in _FLOATS:
        return False
    for tensor in (first, *others):
        if not tensor.is_cpu or tensor.dtype != dtype or not tensor.is_contiguous():
            return False
    return True


class _Compiled(NamedTuple):
    inner_steps: Callable[..., Any]
    meta_sums: Callable[..., Any]
    pair_products: Callable[..., Any]
    pair_rate_grads: Callable[..., Any]


def _compiled() -> _Compiled | None:
    try:
        import numba
        from numba.extending import register_jitable
    except Exception:  # absent, or built for another numpy: the PyTorch code serves
        return None
    # Reassociation lets the dot products use vector lanes; NaN and inf keep their meaning.
    options: dict[str, Any] = {
        "fastmath": {"reassoc", "contract", "nsz", "arcp"},
        "boundscheck": False,
    }
    # The pair loops call _inkers: registered, numba compiles it into them where they call
    # it (plain Python stays plain Python), and their disk cache holds.
    register_jitable(**options)(_inkers)
    jit = numba.njit(cache=True, **options)
    return _Compiled(jit(_inner_steps), jit(_meta_sums), jit(_pair_products), jit(_pair_rate_grads))


def _inner_steps(theta, rate, y, pre, rated, widths, grads, fast, first):
    """The loop :func:`compiled_inner_loop` compiles (plain Python, readable as such).

    Per step ``k``, at ``theta_k`` (``theta`` itself, then ``fast[k - 1]``): sample ``k``'s
    first-layer pre-activation is ``pre[k] - shift[k] + b_1``, where ``shift[m]`` sums
    ``delta_j * rated[j, m]`` over the steps so far; then its forward pass, the softmax
    error, the backward pass writing ``grads[k]`` and ``fast[k] = theta_k - rate *
    grads[k]`` together (``b_1``'s gradient is the error at the first layer, ``delta_k``),
    then every row's shift and first-layer output at ``theta_{k+1}``.
    """
    steps, n_later = y.shape[0], widths.shape[0] - 1
    widest = widths.max()
    acts = np.zeros((n_later + 1, widest), dtype=theta.dtype)  # a_1 .. a_{L-1}, logits
    error = np.zeros(widest, dtype=theta.dtype)
    below = np.zeros(widest, dtype=theta.dtype)
    at_w = np.zeros(n_later, dtype=np.int64)  # where W_l and b_l start in theta
    at_b = np.zeros(n_later, dtype=np.int64)
    offset = widths[0]
    for layer in range(n_later):
        at_w[layer] = offset
        offset += widths[layer + 1] * widths[layer]
        at_b[layer] = offset
        offset += widths[layer + 1]
    last = n_later
    rows, width = pre.shape
    shift = np.zeros((rows, width), dtype=theta.dtype)
    for k in range(steps):
        weights = theta if k == 0 else fast[k - 1]
        step, stepped = grads[k], fast[k]
        for i in range(width):  # a_1 (the logits themselves when there is no hidden layer)
            value = pre[k, i] - shift[k, i] + weights[i]
            acts[0, i] = value if last == 0 else max(value, 0.0)
        for layer in range(n_later):
            n_in, n_out, w0 = widths[layer], widths[layer + 1], at_w[layer]
            below_acts = acts[layer]
            for r in range(n_out):
                row = weights[w0 + r * n_in : w0 + (r + 1) * n_in]
                total = weights[at_b[layer] + r]
                for c in range(n_in):
                    total += row[c] * below_acts[c]
                acts[layer + 1, r] = total if layer + 1 == last else max(total, 0.0)
        n_classes = widths[last]
        top = acts[last, 0]
        for r in range(1, n_classes):
            top = max(top, acts[last, r])
        norm = 0.0
        for r in range(n_classes):
            error[r] = np.exp(acts[last, r] - top)
            norm += error[r]
        for r in range(n_classes):
            error[r] /= norm
        error[y[k]] -= 1.0
        for layer in range(n_later - 1, -1, -1):
            n_in, n_out, w0 = widths[layer], widths[layer + 1], at_w[layer]
            for c in range(n_in):
                below[c] = 0.0
            below_acts = acts[layer]
            for r in range(n_out):
                e, at = error[r], at_b[layer] + r
                step[at] = e
                stepped[at] = weights[at] - rate[at] * e
                lo, hi = w0 + r * n_in, w0 + (r + 1) * n_in
                row, row_rate, row_step, row_stepped = (
                    weights[lo:hi],
                    rate[lo:hi],
                    step[lo:hi],
                    stepped[lo:hi],
                )
                for c in range(n_in):
                    g = e * below_acts[c]
                    row_step[c] = g
                    row_stepped[c] = row[c] - row_rate[c] * g
                    below[c] += row[c] * e
            for c in range(n_in):
                error[c] = below[c] if below_acts[c] > 0 else 0.0
        for c in range(width):  # b_1
            step[c] = error[c]
            stepped[c] = weights[c] - rate[c] * error[c]
        for m in range(rows):  # every row's first layer at theta_{k+1}
            moved, out, into = shift[m], first[k, m], rated[k, m]
            for c in range(width):
                moved[c] += error[c] * into[c]
                value = pre[m, c] - moved[c] + stepped[c]
                out[c] = value if last == 0 else max(value, 0.0)


def _meta_sums(grads, meta, rate, scale, total, by_rate):
    """The pass :func:`compiled_meta_sums` compiles: ``G_k`` kept as a running sum."""
    steps, size = grads.shape
    running = np.zeros(size, dtype=grads.dtype)
    total[:] = 0.0
    by_rate[:] = 0.0
    for k in range(steps):  # whole rows, so that the loop runs in vector lanes
        inner, outer = grads[k], meta[k]
        for i in range(size):
            running[i] += inner[i]
            total[i] += outer[i]
            by_rate[i] += running[i] * outer[i]
    for i in range(size):
        total[i] *= scale
        by_rate[i] = -scale * by_rate[i] if rate[i] > 0 else 0.0


def _inkers(x):
    """The rows that ink each pixel, in order: ``(rows [D, M], counts [D])``."""
    n_rows, width = x.shape
    rows = np.empty((width, n_rows), dtype=np.int64)
    counts = np.zeros(width, dtype=np.int64)
    for i in range(n_rows):
        row = x[i]
        for d in range(width):
            if row[d] != 0:
                rows[d, counts[d]] = i
                counts[d] += 1
    return rows, counts


def _pair_products(x, steps, alpha, rated):
    """The loop :func:`compiled_pair_products` compiles.

    Pixel by pixel: the pixel's rates are gathered once and added into every pair of rows
    that inks it (pair by pair, each pixel's rates would be fetched again from a table too
    large for the nearest cache: 145 against 327 us for 20 rows, measured 2026-12-01)."""
    n_rows, width = x.shape
    hidden = alpha.shape[0]
    rows, counts = _inkers(x)
    pairs = rated.reshape((steps * n_rows, hidden))
    pairs[:] = 0.0
    rate = np.empty(hidden, dtype=x.dtype)
    for d in range(width):
        inked = rows[d]
        if counts[d] == 0 or inked[0] >= steps:  # no incoming row inks it
            continue
        for h in range(hidden):
            rate[h] = max(alpha[h, d], 0.0)
        for a in range(counts[d]):
            j = inked[a]
            if j >= steps:
                break
            for b in range(a, counts[d]):  # m >= j; (m, j) is the same product
                m = inked[b]
                both = x[j, d] * x[m, d]
                out = pairs[j * n_rows + m]
                for h in range(hidden):
                    out[h] += both * rate[h]
    for j in range(steps):
        for m in range(j):
            rated[j, m] = rated[m, j]


def _pair_rate_grads(x, steps, error, deltas, scale, alpha, part):
    """The loop :func:`compiled_pair_rate_grads` compiles, pixel by pixel as
    :func:`_pair_products`: each pixel's column of the gradient is summed in one row."""
    n_rows, width = x.shape
    hidden = alpha.shape[0]
    rows, counts = _inkers(x)
    left = np.empty((steps, n_rows, hidden), dtype=x.dtype)
    later = np.zeros(hidden, dtype=x.dtype)  # sum_{k>=j} error[k, m]
    for m in range(n_rows):
        later[:] = 0.0
        for j in range(steps - 1, -1, -1):
            into, now, delta = left[j, m], error[j, m], deltas[j]
            for h in range(hidden):
                later[h] += now[h]
                into[h] = -scale * delta[h] * later[h]
    weights = np.zeros((steps * n_rows, hidden), dtype=x.dtype)  # pair (j, m), m >= j
    for j in range(steps):
        for m in range(j, n_rows):
            into = weights[j * n_rows + m]
            into[:] = left[j, m]
            if m < steps and m != j:  # (m, j) is the same product
                for h in range(hidden):
                    into[h] += left[m, j, h]
    column = np.empty(hidden, dtype=x.dtype)
    part[:] = 0.0
    for d in range(width):
        inked = rows[d]
        if counts[d] == 0 or inked[0] >= steps:
            continue
        column[:] = 0.0
        for a in range(counts[d]):
            j = inked[a]
            if j >= steps:
                break
            for b in range(a, counts[d]):
                m = inked[b]
                both = x[j, d] * x[m, d]
                weight = weights[j * n_rows + m]
                for h in range(hidden):
                    column[h] += both * weight[h]
        for h in range(hidden):  # times relu'(alpha)
            part[h, d] = column[h] if alpha[h, d] > 0 else 0.0
