"""Reservoir sampling's slots for a batch in one compiled loop (numba).

Accelerates: :func:`lifelong.strategies.replay.reservoir_slots` (``strategies/replay.py``),
the reference, and the memory's mapping of its result onto its rows, which every replay
memory on the CPU runs once a batch (``er``, ``der``, ``gem``'s memory per task and the
others that keep a reservoir). The reference walks the batch's draws in Python, keeps the
last new sample sent to each slot in a dict, then maps the slots with ``np.where``: about
50 microseconds a batch of 32, the most of a replay memory's update on a small model (the
``gem`` workload of ``lifelong bench`` about 3% shorter with this kernel). Compiled, it is
one loop over the draws and one over the later draws that could claim the same slot.

Equal to the reference slot for slot (integers: no rounding; the draws are read as the
reference reads them, ``floor(u * (n + 1))`` in float64), so runs are unchanged.

Applies when: the memory is on the CPU, ``fast`` is on and numba (the extra ``fast``) is
installed and compiles here; else :func:`compiled_reservoir_slots` returns None and the
reference runs. Compiled on first use and cached on disk by numba. Tested in
``tests/test_parts.py`` (against the reference, collisions included).
"""

from __future__ import annotations

import functools

import numpy as np

from lifelong.fast.compiled import Kernel, numba_kernel

__all__ = ["compiled_reservoir_slots", "kernel"]


def compiled_reservoir_slots(
    draws: np.ndarray, seen: int, rows: int, first: int, scratch: int
) -> np.ndarray | None:
    """The memory row of each new sample: ``first`` plus its reservoir slot among ``rows``
    rows (``seen`` samples having come before), ``scratch`` where it is dropped or a
    later sample of the batch takes its slot; int64 like ``draws`` (float64 uniforms in
    [0, 1)). None where the kernel cannot run (the caller takes the reference)."""
    state = kernel()
    if state.compiled is None or state.unusable:
        return None
    out = np.empty(len(draws), dtype=np.int64)
    try:
        state.compiled(draws, seen, rows, first, scratch, out)
    except Exception as error:
        from numba.core.errors import NumbaError

        if not isinstance(error, NumbaError):
            raise
        state.give_up(error)
        return None
    return out


@functools.cache
def kernel() -> Kernel:
    """This process's kernel, made on first use. No fastmath: the slot's product is
    taken in float64 and floored as the reference's ``int(u * (n + 1))``."""
    return numba_kernel(_slots, "reservoir sampling's CPU kernel", ())


def _slots(draws, seen, rows, first, scratch, out):
    """The loop :func:`compiled_reservoir_slots` compiles (plain Python, readable as such)."""
    count = len(draws)
    for i in range(count):  # each sample's slot (rows or above: dropped)
        n = seen + i
        out[i] = n if n < rows else int(draws[i] * (n + 1))
    for i in range(count):  # of several samples sent to one slot only the last is kept
        slot = out[i]
        kept = slot < rows
        j = i + 1
        while kept and j < count:  # the later samples still hold their slots
            kept = out[j] != slot
            j += 1
        out[i] = slot + first if kept else scratch
