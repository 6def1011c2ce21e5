"""The engine knows contracts, not members (STYLE.md 14): nothing in lifelong/ imports a
built-in strategy or scenario; built-ins are found through the registry by name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import lifelong

ENGINE = Path(next(iter(lifelong.__path__)))
BUILT_INS = ("lifelong.strategies", "lifelong.scenarios")
KNOWN: set[str] = set()  # engine files allowed a built-in import, each with its reason


def imported_modules(source: str, package: str) -> list[str]:
    """Every module (and ``module.name``) ``source`` imports, relative imports resolved
    from ``package``."""
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            names += [module, *(f"{module}.{alias.name}" for alias in node.names)]
    return names


def built_ins_imported(path: Path) -> list[str]:
    package = ".".join(("lifelong", *path.relative_to(ENGINE).parent.parts))
    names = imported_modules(path.read_text(), package)
    return [n for n in names if n == "lifelong.strategies" or n.startswith(BUILT_INS)]


def test_the_engine_imports_no_built_in_strategy_or_scenario() -> None:
    offenders = [
        f"{path.relative_to(ENGINE)}: {name}"
        for path in sorted(ENGINE.rglob("*.py"))
        if path.relative_to(ENGINE).as_posix() not in KNOWN
        for name in built_ins_imported(path)
    ]
    assert offenders == []


@pytest.mark.parametrize(
    "source",
    [
        "import lifelong.strategies.sgd",
        "from lifelong.strategies.lamaml import LaMaml",
        "from lifelong import strategies",
        "from .. import scenarios",
        "def f():\n    from lifelong.scenarios.rotated import RotatedScenario",
    ],
)
def test_every_form_of_import_is_seen(source: str) -> None:
    names = imported_modules(source, "lifelong.bench")
    assert any(n.startswith(BUILT_INS) for n in names)


def test_the_known_exceptions_still_import_built_ins() -> None:
    """An entry in KNOWN is dropped once its file no longer needs it."""
    for name in KNOWN:
        assert built_ins_imported(ENGINE / name), f"{name} imports no built-in: drop it"


@pytest.mark.parametrize("package", ["strategies", "scenarios"])
def test_built_ins_use_only_the_public_api(package: str) -> None:
    """A built-in strategy or scenario has no privilege a plug-in lacks: it imports
    ``lifelong`` (its ``__all__``) and the accelerations' ``lifelong.fast``, and its own
    package, nothing else (scenarios imported ``lifelong.contracts.stream.Setting`` and
    ``lifelong.contracts.params.MAX_SEED``)."""
    import importlib

    folder = Path(next(iter(importlib.import_module(f"lifelong.{package}").__path__)))
    public = {"lifelong", "lifelong.fast"}
    offenders = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module or ""]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            offenders += [
                f"{path.name}: {m}" for m in modules if m.startswith("lifelong") and m not in public
            ]
    assert offenders == []


TOP_LEVEL = {  # the modules that sit at lifelong/'s top, each with its reason
    "__init__.py": "the public API",
    "__main__.py": "python -m lifelong",
    "api.py": "the Python entry points",
    "cli.py": "the command line",
    "errors.py": "the user-error type every layer raises",
    "cache_dir.py": "where data, inits and meta-tasks are cached (data and meta share it)",
}


def test_the_top_level_holds_only_entry_points_and_foundations() -> None:
    """The architecture shows in ``ls lifelong``: everything else lives in its subpackage."""
    assert {path.name for path in ENGINE.glob("*.py")} <= set(TOP_LEVEL)
