"""The results directory: ``summary.json`` and ``results.csv``, written atomically."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
import time
import warnings
from collections.abc import Iterable
from pathlib import Path

from lifelong.errors import UserError, check_path
from lifelong.evaluation.result import CSV_COLUMNS, RunResult

__all__ = [
    "check_out_dir",
    "load_runs",
    "remove_stale_temps",
    "rescue_runs",
    "save_runs",
    "set_aside",
    "write_atomic",
]

SUMMARY = "summary.json"
RESULTS = "results.csv"


def check_out_dir(path: str | os.PathLike[str]) -> Path:
    """Fail early if ``path`` cannot be a results directory (leaves nothing behind)."""
    out = check_path(path, "--out")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory; give a directory path")
    for name in (SUMMARY, RESULTS):
        if (out / name).exists() and not (out / name).is_file():
            raise UserError(
                f"--out {out}: {out / name} is not a file, so no result could be saved; "
                "remove it or choose another directory"
            )
    missing = [p for p in (out, *out.parents) if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".probe."):
            pass
    except OSError as error:
        raise UserError(
            f"--out {out}: cannot write there ({error.strerror}); choose another directory"
        ) from None
    finally:
        for created in missing:
            if created.is_dir():
                created.rmdir()
    return out


def load_runs(path: str | os.PathLike[str]) -> list[RunResult]:
    """The runs recorded in a results directory (empty when there is none yet)."""
    summary = Path(path) / SUMMARY
    if not summary.exists():
        return []
    try:
        data = json.loads(summary.read_text(), parse_constant=_not_json, parse_float=_finite)
        entries = data["runs"]
        if not isinstance(entries, list):
            raise ValueError("'runs' is not a list")
    except OSError as error:
        raise UserError(f"{summary} cannot be read ({error.strerror}); fix or remove it") from None
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(
            f"{summary} is not a lifelong summary ({error}); fix or remove it"
        ) from None
    runs, seen = [], set()
    for i, entry in enumerate(entries):
        try:
            run = RunResult.from_summary(entry)
        except ValueError as error:
            raise UserError(f"{summary}: run {i} is damaged ({error}); fix or remove it") from None
        if run.key in seen:
            raise UserError(
                f"{summary}: run {i} ({run.strategy}, seed {run.seed}) appears twice; "
                "remove one of them"
            )
        seen.add(run.key)
        runs.append(run)
    return runs


def _not_json(word: str) -> float:
    """NaN and Infinity are not JSON: lifelong never writes them (it writes null)."""
    raise ValueError(f"{word} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is too large for a number")
    return value


def save_runs(path: str | os.PathLike[str], runs: Iterable[RunResult]) -> None:
    """Write ``summary.json`` and ``results.csv`` for ``runs``, each atomically."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    runs = list(runs)
    summary = json.dumps({"runs": [r.summary() for r in runs]}, indent=1, allow_nan=False)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for run in runs:
        writer.writerows(run.rows())
    write_atomic(out / RESULTS, buffer.getvalue())
    write_atomic(out / SUMMARY, summary + "\n")


def write_atomic(path: Path, text: str) -> None:
    """Write a file via a temporary sibling and a rename, so readers never see half of it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are for sharing
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_stale_temps(out: Path) -> list[Path]:
    """Remove the temporary files that a killed process left in ``out``; the removed ones.

    A ``checkpoints`` that is not a directory is set aside (with a warning) first.

    Called while holding ``out`` (:func:`lifelong.execution.sweep.sweep`), so every temporary
    results file there is stale; a checkpoint's carries the pid of the process writing it
    (``.KEY.pt.PID.tmp``) and is stale when that process is gone.
    """
    stale = [*out.glob(f".{SUMMARY}.*.tmp"), *out.glob(f".{RESULTS}.*.tmp")]
    checkpoints = out / "checkpoints"
    if checkpoints.exists() and not checkpoints.is_dir():
        aside = set_aside(checkpoints)
        warnings.warn(
            f"{checkpoints} is not a directory; set aside as {aside.name}",
            RuntimeWarning,
            stacklevel=2,
        )
    if checkpoints.is_dir():
        for tmp in checkpoints.glob(".*.pt.*.tmp"):
            pid = tmp.name.rsplit(".", 2)[-2]
            if pid.isdigit() and not _alive(int(pid)):
                stale.append(tmp)
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def set_aside(path: Path) -> Path:
    """Rename ``path`` (a file or a directory) to a free ``NAME.set-aside[.N]`` beside it,
    where a user can still look at it; returns the new path."""
    target = path.with_name(f"{path.name}.set-aside")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.set-aside.{n}")
        n += 1
    os.replace(path, target)
    return target


def rescue_runs(out: Path, runs: Iterable[RunResult]) -> Path:
    """Save ``runs`` into a fresh folder when ``out`` cannot take them; the folder.

    The folder is ``$LIFELONG_CACHE/unsaved/OUTNAME-TIME-PID`` (else the same in the
    system's temporary directory): a results directory that ``lifelong report`` reads and
    that can be copied over ``out`` once ``out`` is fixed.
    """
    from lifelong.cache_dir import cache_home

    name = f"{out.resolve().name or 'results'}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    runs = list(runs)
    for root in (cache_home() / "unsaved", Path(tempfile.gettempdir()) / "lifelong-unsaved"):
        try:
            save_runs(root / name, runs)
        except OSError:
            continue
        return root / name
    raise UserError(f"cannot save into {out}, nor into a folder for unsaved runs")
