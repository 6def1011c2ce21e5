"""Finding scenario families and strategies by short name, module path or file path."""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import inspect
import pkgutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from lifelong.contracts.init_axis import Init
from lifelong.contracts.parts import Learner, Memory, Regularizer
from lifelong.contracts.scenario import ScenarioFamily
from lifelong.contracts.strategy import Strategy
from lifelong.errors import UserError, check_path, closest, failure

__all__ = [
    "check_strategy_class",
    "find_scenario",
    "find_strategy",
    "parts",
    "scenarios",
    "strategies",
]


@functools.cache
def scenarios() -> dict[str, type[ScenarioFamily]]:
    """Every scenario family in ``lifelong.scenarios`` by name, ``avalanche`` and ``own-data``."""
    from lifelong.data.own_scenario import OwnDataScenario
    from lifelong.interop import AvalancheScenario  # avalanche itself is imported only on use

    found = _collect("lifelong.scenarios", ScenarioFamily)
    return {**found, "avalanche": AvalancheScenario, "own-data": OwnDataScenario}


@functools.cache
def strategies() -> dict[str, type[Strategy]]:
    """Every built-in strategy in ``lifelong.strategies``, by name."""
    return _collect("lifelong.strategies", Strategy)


@functools.cache
def parts() -> dict[str, type[Init | Learner | Memory | Regularizer]]:
    """Every built-in part (init, learner, memory, regularizer) in ``lifelong.strategies``."""
    found: dict[str, type[Init | Learner | Memory | Regularizer]] = {}
    for base in (Init, Learner, Memory, Regularizer):
        for name, cls in _collect("lifelong.strategies", base).items():
            if name in found:
                raise TypeError(f"part name '{name}' is used by {found[name]} and {cls}")
            found[name] = cls
    return found


def find_scenario(name: str) -> type[ScenarioFamily]:
    """The scenario family registered as ``name``."""
    found = scenarios()
    if name not in found:
        raise UserError(
            f"unknown scenario '{name}'{closest(name, found)}; "
            f"known: {', '.join(sorted(found))} (see `lifelong list`)"
        )
    return found[name]


def find_strategy(spec: str) -> type[Strategy]:
    """A strategy class from a short name, ``package.module:Class``, ``file.py:Class`` or
    ``avalanche:NAME`` (an Avalanche strategy as a baseline; the optional extra)."""
    if spec.startswith("avalanche:"):
        from lifelong.interop import resolve  # imports avalanche only when it is named

        return resolve(spec)
    if ":" not in spec:
        found = strategies()
        if spec not in found:
            raise UserError(
                f"unknown strategy '{spec}'{closest(spec, found)}; known: "
                f"{', '.join(sorted(found))}, or give path/to/file.py:ClassName"
            )
        return found[spec]
    where, _, class_name = spec.rpartition(":")
    _check_form(spec, where, class_name)
    module = _import_file(where) if where.endswith(".py") else _import_module(where)
    cls = getattr(module, class_name, None)
    if cls is None:
        names = [n for n, v in vars(module).items() if inspect.isclass(v)]
        raise UserError(f"{where} defines no class '{class_name}'{closest(class_name, names)}")
    return _check_not_builtin(check_strategy_class(cls, spec), spec)


def _check_form(spec: str, where: str, class_name: str) -> None:
    """Refuse, before importing anything, what is not ``path.py:Class`` or
    ``package.module:Class`` naming a module outside the standard library."""
    module = where.split(".")
    if not class_name.isidentifier() or not (
        where.endswith(".py") or all(part.isidentifier() for part in module)
    ):
        raise UserError(
            f"strategy '{spec}' is neither a short name, path/to/file.py:Class nor "
            "package.module:Class"
        )
    if not where.endswith(".py") and module[0] in sys.stdlib_module_names:
        raise UserError(
            f"strategy '{spec}': {where} is part of Python's standard library, not a "
            "strategy; give path/to/file.py:Class or package.module:Class"
        )


def _check_not_builtin(cls: type[Strategy], spec: str) -> type[Strategy]:
    """Refuse a plug-in named like a built-in strategy, part or shortcut: it would hide the
    built-in, and its runs would carry the built-in's label."""
    from lifelong.composition.compose import shortcuts

    if strategies().get(cls.name) is cls:  # a built-in named by its module
        return cls
    if cls.name in strategies() or cls.name in parts() or cls.name in shortcuts():
        raise UserError(
            f"{spec} is named '{cls.name}', as a built-in is; give it another name "
            "(its class attribute `name`)"
        )
    return cls


def check_strategy_class(cls: object, spec: str) -> type[Strategy]:
    """Reject a plug-in that breaks the strategy contract, saying what is missing."""
    if not (inspect.isclass(cls) and issubclass(cls, Strategy)):
        raise UserError(f"{spec} is not a subclass of lifelong.Strategy")
    missing = sorted(getattr(cls, "__abstractmethods__", ()))
    if missing:
        raise UserError(f"{spec} does not implement {', '.join(missing)} of lifelong.Strategy")
    if not isinstance(cls.__dict__.get("name"), str):
        raise UserError(f'{spec} must set a class attribute name = "short-name"')
    if "__dataclass_fields__" not in cls.__dict__:
        raise UserError(f"{spec} must be decorated with @dataclass (hyperparameters are fields)")
    return cls


def _collect(package: str, base: type) -> dict[str, Any]:
    found: dict[str, Any] = {}
    root = importlib.import_module(package)
    for info in pkgutil.iter_modules(root.__path__):
        module = importlib.import_module(f"{package}.{info.name}")
        for value in vars(module).values():
            if (
                inspect.isclass(value)
                and issubclass(value, base)
                and value.__module__ == module.__name__
                and not inspect.isabstract(value)
                and isinstance(value.__dict__.get("name"), str)
            ):
                found[value.__dict__["name"]] = value
    return found


def _import_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name and name.startswith(error.name):
            raise UserError(f"no module named '{name}'; check the spelling or PYTHONPATH") from None
        raise UserError(_import_failure(name, error)) from None
    except (Exception, SystemExit, KeyboardInterrupt) as error:  # a plug-in's own bug
        raise UserError(_import_failure(name, error)) from None


def _import_file(path_text: str) -> ModuleType:
    path = check_path(path_text, "strategy file").resolve()
    if not path.is_file():
        raise UserError(f"strategy file {path_text} does not exist")
    return _import_resolved(path, path.stat().st_mtime_ns)


def plugin_module_name(path: Path) -> str:
    """The module name a plug-in file is imported under: its stem and a digest of its
    resolved path, so that two files of the same name in different folders never share
    one ``sys.modules`` entry."""
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    return f"lifelong_plugin_{path.stem}_{digest}"


@functools.cache
def _import_resolved(path: Path, mtime_ns: int) -> ModuleType:
    """Import a plug-in file once per process and version, so its classes keep one identity."""
    module_name = plugin_module_name(path)
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit, KeyboardInterrupt) as error:  # a plug-in's own bug
        del sys.modules[module_name]
        raise UserError(_import_failure(str(path), error)) from None
    return module


def _import_failure(what: str, error: BaseException) -> str:
    return failure(f"cannot import {what}", error)
