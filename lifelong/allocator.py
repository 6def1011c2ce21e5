"""Keep resident memory flat on long streams (glibc's malloc tuning)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

__all__ = ["pin_mmap_threshold"]

_M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h


@functools.cache
def pin_mmap_threshold(size: int = 128 * 1024) -> bool:
    """Fix glibc's mmap threshold so that freed large buffers go back to the system.

    glibc raises the threshold every time a large mmapped buffer is freed; the evaluation's
    test batches (megabytes, allocated and freed again and again) then land on the heap and
    fragment it, and resident memory creeps up task after task (measured: 413 MiB to 866 MiB
    over 100 permuted tasks with replay). A fixed threshold keeps it flat (408 MiB). A no-op
    away from glibc. Returns whether it was applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, size))
    except (OSError, AttributeError):
        return False
