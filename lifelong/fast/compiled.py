"""What the single-kernel accelerations share: a compiled kernel and whether it is usable.

:mod:`lifelong.fast.mer_kernel` and :mod:`lifelong.fast.penalty_kernel` each compile one
numba function on first use; where numba is missing or cannot compile here, their callers
take the PyTorch reference. This holds that state, one per kernel and process.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Kernel"]


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
