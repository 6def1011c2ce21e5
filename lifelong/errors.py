"""The one exception type that means "the user asked for something wrong"."""

from __future__ import annotations

import difflib
import os
import traceback
import warnings
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "NAME_MAX",
    "ContractError",
    "UserError",
    "check_path",
    "closest",
    "failure",
    "one_line_warnings",
]

NAME_MAX = 255  # bytes in one file name, on every common file system


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


def one_line_warnings() -> None:
    """Print warnings as ``lifelong: warning: MESSAGE``, one line without the source line
    (the command line and its worker processes call this; a library user keeps Python's)."""
    warnings.formatwarning = _one_line


def _one_line(message: Warning | str, *args: object, **kwargs: object) -> str:
    return f"lifelong: warning: {message}\n"


def failure(what: str, error: BaseException) -> str:
    """One line for an exception raised by a user's code: ``what``, then the file and line
    where it was raised, its type and message (a plug-in's own bug, not lifelong's)."""
    if isinstance(error, SyntaxError):
        return f"{what}: {error.filename}:{error.lineno}: {error.msg}"
    frames = traceback.extract_tb(error.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno}: " if frames else ""
    text = str(error).strip().splitlines()
    message = f": {text[0]}" if text else ""
    return f"{what}: {where}{type(error).__name__}{message}"


def check_path(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` as a Path, refused in one line when a name in it is too long for any file
    system (the system's own error would come later, as a traceback)."""
    for part in Path(path).parts:
        if len(os.fsencode(part)) > NAME_MAX:
            shown = f"{os.fspath(path)[:40]}..."
            raise UserError(
                f"{what} {shown}: a name in it is {len(os.fsencode(part))} bytes long, "
                f"more than the {NAME_MAX} a file system allows; shorten it"
            )
    return Path(path)
