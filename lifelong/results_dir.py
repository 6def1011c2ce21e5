"""The results directory: ``summary.json`` and ``results.csv``, written atomically."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from lifelong.errors import UserError
from lifelong.result import CSV_COLUMNS, RunResult

__all__ = ["check_out_dir", "load_runs", "save_runs", "write_atomic"]

SUMMARY = "summary.json"
RESULTS = "results.csv"


def check_out_dir(path: str | os.PathLike[str]) -> Path:
    """Fail early if ``path`` cannot be a results directory (leaves nothing behind)."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory; give a directory path")
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
        entries = json.loads(summary.read_text())["runs"]
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
