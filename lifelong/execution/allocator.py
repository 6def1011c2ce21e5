"""Keep resident memory flat on long streams (glibc's malloc tuning).

These settings are process-wide and cannot be undone (glibc has no way back to its own
moving threshold), so only the ``lifelong`` command makes them, for its own process and
the processes it starts (:func:`pin_for_processes`); the library never does.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

__all__ = [
    "MMAP_THRESHOLD",
    "large_step",
    "pin_for_processes",
    "pin_mmap_threshold",
    "threshold_for",
]

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers in glibc's malloc.h
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 512 * 1024
"""Buffers from this size up are mapped apart and given back when freed (bytes; one run's)."""
MAX_MMAP_THRESHOLD = 32 * 1024 * 1024
"""glibc's ceiling for the mmap threshold on 64-bit systems (bytes)."""
TRIM_THRESHOLD = 64 * 1024 * 1024
"""Free memory glibc keeps at the top of the heap instead of returning it (bytes)."""


def pin_mmap_threshold(size: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold so that freed large buffers go back to the system.

    glibc raises the threshold every time a large mmapped buffer is freed; the evaluation's
    test batches (megabytes, allocated and freed again and again) then land on the heap and
    fragment it, and resident memory creeps up task after task (measured: 413 MiB to 866 MiB
    over 100 permuted tasks with replay). A fixed threshold keeps it flat. 512 KiB keeps
    weight-sized buffers (the 784 x 100 layer's gradients, 313 KB, allocated several times
    per step by meta-learners) on the heap, where a fresh ``mmap`` would page-fault on
    every allocation: measured on 2026-11-30 (torch 2.13, 100 permuted tasks with er), RSS
    369 to 374 MiB over the run at 512 KiB, 342 to 342 MiB at 128 KiB, 369 to 398 MiB at
    1 MiB, while a fresh La-MAML process (5 tasks x 500) trained in 5.2 s at 512 KiB and
    7.8 s at 128 KiB. ``--vectorize`` scales it with the number of seeds in a stack, whose
    stacked buffers are that many times larger (8 seeds of naive on Split-MNIST: 1.54 s at 512 KiB,
    0.90 s at 32 MiB, 0.98 s with glibc's own rule; measured 2026-11-30). Each call sets
    it anew.

    Fixing the threshold also fixes glibc's trim threshold, at 128 KiB: every free that
    left more than that at the top of the heap gave it back to the system, and the next
    weight-sized buffer page-faulted again. It is set to :data:`TRIM_THRESHOLD` (64 MiB;
    the heap keeps at most that much free memory, a constant, so resident memory stays
    flat). La-MAML on 2 permuted tasks of 1,000 digits, 5 glances, interleaved in one
    process (2026-12-01): 4.05-4.63 s at 128 KiB, 3.75-3.96 s at 16 MiB, 3.56-3.78 s at
    64 MiB. The price is resident memory held in reserve: the bench's 100-task row went
    from 1,031 to 1,094 MiB, flat over the run. A no-op away from glibc. Returns whether
    it was applied.
    """
    libc = _libc()
    if libc is None:
        return False
    try:
        trimmed = libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, size)) and bool(trimmed)
    except AttributeError:
        return False


def large_step(step_bytes: int) -> bool:
    """Whether a training batch whose largest activation takes ``step_bytes`` is one that
    :data:`MMAP_THRESHOLD` would map apart (a conv net's, about 3 MB for ``cnn`` at batch
    32; the default MLP's about 100 KB, its input)."""
    return 2 * step_bytes > MMAP_THRESHOLD


def threshold_for(step_bytes: int, stack: int = 1) -> int:
    """The mmap threshold for runs whose training batch's largest activation takes
    ``step_bytes``: ``stack`` times :data:`MMAP_THRESHOLD` (the seeds of a stack), or, for a
    :func:`large_step`, four times ``step_bytes`` up to glibc's ceiling, so that the
    buffers allocated and freed every step stay on the heap instead of being mapped and
    page-faulted anew each time. ``cnn`` at batch 32 on a CPU (torch 2.13, one thread,
    2026-12-05): 30.5 ms a training step at 512 KiB, 19.1 ms at 4 MiB and above; its
    evaluation in batches of 64, 482 ms per 1,000 test images at 512 KiB, 318 at 8 MiB."""
    base = stack * MMAP_THRESHOLD
    if not large_step(step_bytes):
        return base
    return max(base, min(MAX_MMAP_THRESHOLD, 4 * step_bytes))


def pin_for_processes(size: int) -> bool:
    """:func:`pin_mmap_threshold` in this process, and the same settings for the
    processes it starts from now on (glibc reads ``MALLOC_MMAP_THRESHOLD_`` and
    ``MALLOC_TRIM_THRESHOLD_`` from the environment when a process starts). For the
    ``lifelong`` command's entry point only. Returns whether it was applied here."""
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(size)
    os.environ["MALLOC_TRIM_THRESHOLD_"] = str(TRIM_THRESHOLD)
    return pin_mmap_threshold(size)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None
