"""The one exception type that means "the user asked for something wrong"."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["ContractError", "UserError", "closest"]


class UserError(Exception):
    """A mistake in the user's input: printed as one line, exit status 2, no traceback.

    The message says what was wrong and what to do about it.
    """


class ContractError(TypeError):
    """A strategy returned what its hook's contract does not allow (a float for a loss
    tensor, labels for logits); the message names the rule and what came instead."""


def closest(name: str, choices: Iterable[str]) -> str:
    """Return a " (did you mean 'x'?)" suffix naming the nearest valid choice, or ""."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""
