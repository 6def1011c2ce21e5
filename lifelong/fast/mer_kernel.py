"""MER's whole update on a one-head ReLU MLP, compiled (numba).

Accelerates: :func:`lifelong.strategies.mer.mer_update` (``strategies/mer.py``), the
reference: for every incoming example, ``k`` batches of single-sample SGD steps with a
within-batch Reptile interpolation after each batch and an across-batch one after the
example (Riemer et al. 2019, algorithm 1). The reference takes each single-sample step with
PyTorch operators (autograd, or :func:`lifelong.fast.sample_step` by hand): about fourteen
operators on vectors of a hundred per step, whose dispatch costs more than their arithmetic,
and MER takes ``k (memory_batch + 1)`` = 110 steps per incoming example (440,000 on
Split-MNIST's 4,000 digits). Compiled, a step is one pass of plain loops over the weights.

Two exact savings besides: the first layer's gradient ``e x^T`` is zero in every column
where the input is zero (an MNIST digit inks about a fifth of its pixels), and in every row
where the unit's error is zero (a ReLU that did not fire), so only the inked columns of the
firing rows are read and moved; the reference moves them by ``lr * 0``, which leaves them
as they were.

Applies when: the objective declares a closed form with no penalty
(:class:`lifelong.fast.ClosedForm`: a one-head :class:`lifelong.MLP` whose weights all learn,
``fast`` on), numba (the extra ``fast``) is installed and compiles here, and the weights
and samples are contiguous float CPU tensors of one dtype; else :func:`compiled_mer_update`
returns None and the reference runs. Equal to the reference up to float rounding (sums in
another order): tested within 1e-12 in float64 and 1e-4 in float32 after 20 examples of
110 steps on the 784-100-100-10 MLP (``tests/test_mer_kernel.py``). ``--set fast=false``
turns it off. Compiled on first use (a few seconds) and cached on disk by numba.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from lifelong.fast.compiled import Kernel, numba_kernel

__all__ = ["Kernel", "compiled_mer_update", "kernel"]


@torch.no_grad()
def compiled_mer_update(
    weights: Sequence[Tensor],
    x: Tensor,
    y: Tensor,
    *,
    lr: float,
    beta: float,
    gamma: float,
) -> Tensor | None:
    """MER's update of a one-head ReLU MLP on every incoming example, in place, compiled.

    Args:
        weights: ``(W_1, b_1, ..., W_L, b_L)``, ``W_l`` shaped ``[out, in]`` (updated in place).
        x: ``[n, k, s, ...]``: for each of the ``n`` incoming examples, ``k`` batches of ``s``
            samples (the example, then the replayed ones), in the order they are learned.
        y: ``[n, k, s]`` int64 targets.
        lr, beta, gamma: the single-sample SGD rate, the within- and across-batch Reptile rates.

    Returns:
        Each example's loss at the weights it arrived to, averaged (0-d); None where the
        kernel cannot run (the caller takes the reference).
    """
    if not _runs_here(weights, x, y):
        return None
    state = kernel()
    if state.compiled is None or state.unusable:
        return None
    n, k, s = y.shape
    held = [weights[0].t(), *weights[1:]]  # W_1 transposed: a pixel's weights in one row
    theta = torch.cat([w.reshape(-1) for w in held])
    widths = [weights[0].shape[1]] + [w.shape[0] for w in weights[::2]]
    losses = theta.new_empty(n)
    rates = torch.tensor([lr, 1 - beta, 1 - gamma], dtype=torch.float64).to(theta.dtype)
    try:
        state.compiled(
            theta.numpy(),
            np.asarray(widths, dtype=np.int64),
            x.reshape(n, k, s, -1).numpy(),
            y.numpy(),
            rates.numpy(),
            losses.numpy(),
        )
    except Exception as error:
        from numba.core.errors import NumbaError

        if not isinstance(error, NumbaError):
            raise
        state.give_up(error)
        return None
    parts = theta.split([w.numel() for w in held])
    torch._foreach_copy_(held, [p.view(w.shape) for p, w in zip(parts, held, strict=True)])
    return losses.mean()


def _runs_here(weights: Sequence[Tensor], x: Tensor, y: Tensor) -> bool:
    """Contiguous float CPU tensors of one dtype (int64 targets): what the kernel takes."""
    dtype = weights[0].dtype
    if dtype not in (torch.float32, torch.float64) or y.dtype != torch.int64 or y.dim() != 3:
        return False
    return all(
        t.is_cpu and t.is_contiguous() and (t is y or t.dtype == dtype) for t in (*weights, x, y)
    )


@functools.cache
def kernel() -> Kernel:
    """This process's kernel, made on first use (numba compiles it once per process and
    dtype, and caches it on disk). Reassociation lets the dot products use vector lanes;
    NaN and inf keep their meaning."""
    fastmath = {"reassoc", "contract", "nsz", "arcp"}
    return numba_kernel(_mer_steps, "MER's CPU kernel", fastmath, (_sample_step, _lerp))


def _mer_steps(theta, widths, x, y, rates, losses):
    """The loop :func:`compiled_mer_update` compiles (plain Python, readable as such).

    ``theta`` holds ``W_1^T, b_1, W_2, b_2, ..., W_L, b_L`` flat, in that order (the first
    layer transposed, ``[D, h_1]``); ``widths`` is ``[D, h_1, ..., C]``; ``rates`` is
    ``[lr, 1 - beta, 1 - gamma]`` in ``theta``'s dtype. Each interpolation is written as
    ``torch.lerp`` computes it.
    """
    lr, beta_weight, gamma_weight = rates[0], rates[1], rates[2]
    n, k, s, _ = x.shape
    n_layers = widths.shape[0] - 1
    at_w = np.zeros(n_layers, dtype=np.int64)
    at_b = np.zeros(n_layers, dtype=np.int64)
    offset = 0
    for layer in range(n_layers):
        at_w[layer] = offset
        offset += widths[layer + 1] * widths[layer]
        at_b[layer] = offset
        offset += widths[layer + 1]
    widest = widths.max()
    acts = np.zeros((n_layers + 1, widest), dtype=theta.dtype)  # input, hidden, logits
    error = np.zeros(widest, dtype=theta.dtype)
    lower = np.zeros(widest, dtype=theta.dtype)
    inked = np.zeros(widths[0], dtype=np.int64)
    before, start = theta.copy(), theta.copy()
    for i in range(n):
        before[:] = theta
        for b in range(k):
            start[:] = theta
            for j in range(s):
                loss = _sample_step(
                    theta, widths, at_w, at_b, x[i, b, j], y[i, b, j], lr, acts, error, lower, inked
                )
                if b == 0 and j == 0:
                    losses[i] = loss
            _lerp(theta, start, beta_weight)  # start + beta * (theta - start)
        _lerp(theta, before, gamma_weight)  # before + gamma * (theta - before)


def _lerp(theta, end, weight):
    """``torch.lerp(theta, end, weight)`` in place, in its two-sided form."""
    if weight == 0:
        return
    if weight < 0.5:
        for p in range(theta.shape[0]):
            theta[p] = theta[p] + weight * (end[p] - theta[p])
    else:
        rest = 1 - weight
        for p in range(theta.shape[0]):
            theta[p] = end[p] - (end[p] - theta[p]) * rest


def _sample_step(theta, widths, at_w, at_b, x, y, lr, acts, error, lower, inked):
    """``theta -= lr * grad CE(theta; x, y)`` for one sample, each layer moved as soon as
    the error below it is formed from its old weights; the loss before the step. ``W_1``
    is held transposed, ``[D, h_1]``, so that an inked pixel's weights are one row."""
    n_layers = widths.shape[0] - 1
    n_inked = 0
    for c in range(widths[0]):
        if x[c] != 0:
            inked[n_inked] = c
            n_inked += 1
    for layer in range(n_layers):
        n_in, n_out, w0, b0 = widths[layer], widths[layer + 1], at_w[layer], at_b[layer]
        out = acts[layer + 1]
        if layer == 0:
            for r in range(n_out):
                out[r] = theta[b0 + r]
            for a in range(n_inked):
                c = inked[a]
                pixel, column = x[c], theta[w0 + c * n_out : w0 + (c + 1) * n_out]
                for r in range(n_out):
                    out[r] += column[r] * pixel
        else:
            below = acts[layer]
            for r in range(n_out):
                row = theta[w0 + r * n_in : w0 + (r + 1) * n_in]
                total = theta[b0 + r]
                for c in range(n_in):
                    total += row[c] * below[c]
                out[r] = total
        if layer < n_layers - 1:
            for r in range(n_out):
                out[r] = max(out[r], 0)
    logits, n_classes = acts[n_layers], widths[n_layers]
    top = logits[0]
    for r in range(1, n_classes):
        top = max(top, logits[r])
    norm = logits[0] * 0
    for r in range(n_classes):
        error[r] = np.exp(logits[r] - top)
        norm += error[r]
    loss = np.log(norm) + top - logits[y]
    for r in range(n_classes):
        error[r] /= norm
    error[y] -= 1
    for layer in range(n_layers - 1, 0, -1):
        n_in, n_out, w0, b0 = widths[layer], widths[layer + 1], at_w[layer], at_b[layer]
        below = acts[layer]
        for c in range(n_in):
            lower[c] = 0
        for r in range(n_out):
            e, row = error[r], theta[w0 + r * n_in : w0 + (r + 1) * n_in]
            for c in range(n_in):
                lower[c] += row[c] * e
                row[c] -= lr * (e * below[c])
            theta[b0 + r] -= lr * e
        for c in range(n_in):
            error[c] = lower[c] if below[c] > 0 else 0
    n_out, w0, b0 = widths[1], at_w[0], at_b[0]
    for a in range(n_inked):  # the input layer: only the inked pixels' weights move
        c = inked[a]
        pixel, column = x[c], theta[w0 + c * n_out : w0 + (c + 1) * n_out]
        for r in range(n_out):
            column[r] -= lr * (error[r] * pixel)
    for r in range(n_out):
        theta[b0 + r] -= lr * error[r]
    return loss
