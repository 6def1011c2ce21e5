"""Benchmark suites: TOML files naming scenarios, strategies, seeds, settings and a grid.

A suite looks like this (the first comment line is the command that runs it)::

    # lifelong sweep split-mnist --out results/split-mnist
    [suite]
    description = "Split-MNIST in its three forms: naive against joint."
    scenarios = ["split-mnist"]
    strategies = ["naive", "joint"]
    seeds = [0, 1, 2]

    [settings]          # fixed values, as with --set (``name.key`` for one strategy)
    epochs = 1

    [grid]              # every combination of these values
    setting = ["class", "domain", "task"]
"""

from __future__ import annotations

import importlib.resources
import itertools
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifelong.contracts.params import MAX_SEED
from lifelong.errors import NAME_MAX, UserError, check_path, closest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Suite", "find_suite", "load_suite", "suite_names"]

_SUITE_KEYS = ("description", "scenarios", "strategies", "seeds")
_TABLES = ("suite", "settings", "grid")


@dataclass(frozen=True)
class Suite:
    """A parsed, checked suite."""

    name: str
    path: Path
    command: str
    description: str
    scenarios: tuple[str, ...]
    strategies: tuple[str, ...]
    seeds: tuple[int, ...]
    settings: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)

    def points(self) -> list[tuple[str, dict[str, Any]]]:
        """Every (scenario, settings) combination of the grid."""
        keys = list(self.grid)
        combos = itertools.product(*(self.grid[k] for k in keys)) if keys else [()]
        return [
            (scenario, {**self.settings, **dict(zip(keys, combo, strict=True))})
            for combo in combos
            for scenario in self.scenarios
        ]


def suite_dir() -> Path:
    """Where the built-in suites live (``lifelong/scenarios/suites``)."""
    # A package-data lookup: the engine imports no scenario module by name.
    return Path(str(importlib.resources.files("lifelong.scenarios") / "suites"))


def suite_names() -> list[str]:
    """Names of the built-in suites."""
    return sorted(p.stem for p in suite_dir().glob("*.toml"))


def find_suite(target: str) -> Path | None:
    """The suite file ``target`` names (a path to a .toml file or a built-in suite name)."""
    if target.endswith(".toml"):
        path = check_path(target, "suite file")
        if path.is_dir():
            raise UserError(f"suite file {path} is a directory; give the path of a .toml file")
        if not path.is_file():
            raise UserError(f"suite file {path} does not exist")
        return path
    if len(target.encode()) + len(".toml") > NAME_MAX or "/" in target:
        return None  # no built-in suite has such a name
    builtin = suite_dir() / f"{target}.toml"
    return builtin if builtin.is_file() else None


def load_suite(path: Path) -> Suite:
    """Parse and check a suite file; every problem is one UserError naming the file."""
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"suite {path}: TOML syntax error: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"suite {path}: cannot read it ({error})") from None
    where = f"suite {path}"
    _check_keys(data, _TABLES, where)
    head = _table(data, "suite", where)
    _check_keys(head, _SUITE_KEYS, f"{where} [suite]")
    settings = _table(data, "settings", where)
    grid = _table(data, "grid", where)
    for key, values in grid.items():
        _check_list(values, f"{where} [grid] {key}", item=None)
        if key in settings:
            raise UserError(f"{where}: '{key}' is both in [settings] and in [grid]; keep one")
    seeds = head.get("seeds", [0])
    _check_list(seeds, f"{where} [suite] seeds", item=int)
    if any(not 0 <= s <= MAX_SEED for s in seeds):
        raise UserError(f"{where} [suite] seeds: seeds must be non-negative, at most {MAX_SEED}")
    return Suite(
        name=path.stem,
        path=path,
        command=_first_comment(path),
        description=str(head.get("description", "")),
        scenarios=tuple(_check_list(head.get("scenarios"), f"{where} [suite] scenarios", str)),
        strategies=tuple(
            _beside(path, name)
            for name in _check_list(head.get("strategies"), f"{where} [suite] strategies", str)
        ),
        seeds=tuple(seeds),
        settings=settings,
        grid=grid,
    )


def _beside(suite: Path, strategy: str) -> str:
    """A plug-in file named relative to the suite, as a path from here (the suite's folder
    is where its author sees the file; the working directory is wherever it is run)."""
    where, sep, name = strategy.rpartition(":")
    if sep and where.endswith(".py") and not Path(where).expanduser().is_absolute():
        return f"{suite.parent / where}:{name}"
    return strategy


def _table(data: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise UserError(f"{where}: [{name}] must be a table")
    return value


def _check_keys(table: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise UserError(
                f"{where}: unknown key '{key}'{closest(key, allowed)}; "
                f"allowed: {', '.join(allowed)}"
            )


def _check_list(value: Any, where: str, item: type | None) -> list[Any]:
    if value is None:
        raise UserError(f"{where} is missing; give a non-empty list")
    if not isinstance(value, list) or not value:
        raise UserError(f"{where} must be a non-empty list, not {value!r}")
    if item is not None and not all(isinstance(v, item) and not isinstance(v, bool) for v in value):
        raise UserError(f"{where} must hold only {item.__name__} values, not {value!r}")
    seen = [repr(v) for v in value]
    duplicates = sorted({v for v in seen if seen.count(v) > 1})
    if duplicates:
        raise UserError(f"{where} lists {', '.join(duplicates)} twice; remove the duplicate")
    return value


def _first_comment(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return f"lifelong sweep {path}"
