"""The one exception type that means "the user asked for something wrong"."""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Iterable

__all__ = ["UserError", "closest", "one_line_warnings"]


class UserError(Exception):
    """A mistake in the user's input: printed as one line, exit status 2, no traceback.

    The message says what was wrong and what to do about it.
    """


def closest(name: str, choices: Iterable[str]) -> str:
    """Return a " (did you mean 'x'?)" suffix naming the nearest valid choice, or ""."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


def one_line_warnings() -> None:
    """Print warnings as ``lifelong: warning: MESSAGE``, one line without the source line
    (the command line and its worker processes call this; a library user keeps Python's)."""
    warnings.formatwarning = _one_line


def _one_line(message: Warning | str, *args: object, **kwargs: object) -> str:
    return f"lifelong: warning: {message}\n"
