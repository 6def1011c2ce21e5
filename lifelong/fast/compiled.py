"""What the single-kernel accelerations share: a compiled kernel and whether it is usable.

:mod:`lifelong.fast.mer_kernel` and :mod:`lifelong.fast.penalty_kernel` each compile one
numba function on first use; where numba is missing or cannot compile here, their callers
take the PyTorch reference. This holds that state, one per kernel and process.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

__all__ = ["Kernel", "numba_kernel"]


@dataclass
class Kernel:
    """A process's compiled kernel, and whether it is usable.

    Attributes:
        compiled: the kernel, compiled on first call (None: numba is not installed).
        what: what it computes, for the one warning (e.g. "MER's CPU kernel").
        unusable: why numba could not compile it here ("" while it has not failed); once
            set, the reference serves and no compile is tried again.
    """

    compiled: Callable[..., Any] | None
    what: str
    unusable: str = ""

    def give_up(self, error: Exception) -> None:
        """Numba failed to compile: say so once; the reference serves from now on."""
        self.unusable = f"{type(error).__name__}: {str(error).splitlines()[0]}"
        warnings.warn(
            f"lifelong: numba cannot compile {self.what} here ({self.unusable}); "
            "PyTorch operators compute the same numbers, more slowly",
            RuntimeWarning,
            stacklevel=4,
        )


def numba_kernel(
    loop: Callable[..., Any],
    what: str,
    fastmath: Collection[str],
    helpers: tuple[Callable[..., Any], ...] = (),
) -> Kernel:
    """``loop`` compiled by numba on its first call (cached on disk next to its module), or
    a kernel that is not there (``compiled`` None) where numba is not importable.

    ``fastmath``: the LLVM flags the loop may use; ``helpers``: plain functions the loop
    calls, which numba compiles into it where it calls them (plain Python stays plain
    Python), so its disk cache holds.
    """
    try:
        import numba
        from numba.extending import register_jitable
    except Exception:  # absent, or built for another numpy: the reference serves
        return Kernel(None, what)
    options: dict[str, Any] = {"fastmath": set(fastmath), "boundscheck": False}
    for helper in helpers:
        register_jitable(**options)(helper)
    return Kernel(numba.njit(cache=True, **options)(loop), what)
