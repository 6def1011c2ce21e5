"""The engine (lifelong/) knows the contracts, never the built-ins it ships with."""

from __future__ import annotations

import ast
from pathlib import Path

import lifelong

ENGINE = Path(lifelong.__file__).parent
BUILT_INS = ("lifelong.strategies", "lifelong.scenarios")

KNOWN = {
    # Engine imports of built-ins that other branches of issue 17 remove; delete each
    # entry with its import (the test fails on an entry that no longer applies).
    "lifelong/bench/harness.py": {
        "lifelong.strategies.lamaml",
        "lifelong.strategies.lamaml.LaMaml",
    },
    "lifelong/metatrain.py": {
        "lifelong.scenarios.rotated",
        "lifelong.scenarios.rotated.RotatedScenario",
    },
    "lifelong/suite.py": {"lifelong.scenarios"},  # to find the suites' TOML files
}


def _imports(source: str, module: str) -> set[str]:
    """The modules that ``source`` (module ``module``) imports, absolute, and the names
    it takes from them (``from lifelong import strategies`` gives
    ``lifelong.strategies``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            package = module.split(".")[: -node.level] if node.level else []
            base = ".".join([*package, *([node.module] if node.module else [])])
            names.update([base, *(f"{base}.{alias.name}" for alias in node.names)])
    return names


def _offenders() -> dict[str, set[str]]:
    found = {}
    for path in sorted(ENGINE.rglob("*.py")):
        module = ".".join(path.relative_to(ENGINE.parent).with_suffix("").parts)
        imported = _imports(path.read_text(), module)
        bad = {
            m for m in imported if m in BUILT_INS or m.startswith(tuple(f"{b}." for b in BUILT_INS))
        }
        if bad:
            found[path.relative_to(ENGINE.parent).as_posix()] = bad
    return found


def test_the_engine_imports_no_built_in_strategy_or_scenario() -> None:
    found = _offenders()
    unexpected = {f: m for f, m in found.items() if not m <= KNOWN.get(f, set())}
    assert not unexpected, f"engine modules importing built-ins: {unexpected}"
    stale = {f for f in KNOWN if f not in found}
    assert not stale, f"known exceptions that no longer apply, remove them: {stale}"


def test_the_import_check_sees_every_form_of_import() -> None:
    source = (
        "import lifelong.strategies.replay\n"
        "from lifelong.scenarios import rotated\n"
        "from ..strategies import naive\n"
        "def f():\n    from lifelong import strategies\n"
    )
    assert _imports(source, "lifelong.bench.harness") >= {
        "lifelong.strategies.replay",
        "lifelong.scenarios.rotated",
        "lifelong.strategies.naive",
        "lifelong.strategies",
    }
