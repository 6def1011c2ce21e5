"""Typed hyperparameters: dataclass fields with a one-line doc and a range.

Strategies, scenario families and the protocol all declare their settings as dataclass
fields made with :func:`param`. The CLI (``--set key=value``), suite files and the saved
config are derived from those fields, so a value is parsed and checked in one place.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lifelong.errors import UserError, closest, failure

__all__ = [
    "MAX_SEED",
    "ParamSpec",
    "as_config",
    "build",
    "param",
    "param_specs",
    "parse_value",
]

MAX_SEED = 2**32 - 1  # numpy's limit; lifelong derives generator seeds as seed * 1_000_003 + k
_INT_RANGE = range(-(2**63), 2**63)  # what a tensor, torch's seeding and numpy can hold


def param(
    default: Any,
    doc: str,
    *,
    gt: float | None = None,
    ge: float | None = None,
    le: float | None = None,
    choices: tuple[Any, ...] | None = None,
    min_len: int = 0,
) -> Any:
    """Declare a hyperparameter field with its one-line doc and its valid range
    (``min_len``: the fewest items a tuple holds)."""
    meta = {"doc": doc, "gt": gt, "ge": ge, "le": le, "choices": choices, "min_len": min_len}
    if isinstance(default, (list, dict, set)):
        raise TypeError("param defaults must be immutable; use a tuple")
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class ParamSpec:
    """What the CLI and suites need to know about one hyperparameter."""

    name: str
    type: Any
    default: Any
    doc: str
    gt: float | None = None
    ge: float | None = None
    le: float | None = None
    choices: tuple[Any, ...] | None = None
    min_len: int = 0

    @property
    def type_name(self) -> str:
        return _type_name(self.type)


def param_specs(cls: type) -> dict[str, ParamSpec]:
    """The hyperparameters of a dataclass, by name, in declaration order."""
    return dict(_param_specs(cls))


@functools.cache
def _param_specs(cls: type) -> dict[str, ParamSpec]:
    """:func:`param_specs`, worked out once per class (resolving the annotations is slow)."""
    hints = typing.get_type_hints(cls)
    specs = {}
    for f in dataclasses.fields(cls):
        if not f.init or f.name.startswith("_"):
            continue
        meta = f.metadata
        specs[f.name] = ParamSpec(
            name=f.name,
            type=hints[f.name],
            default=f.default,
            doc=meta.get("doc", ""),
            gt=meta.get("gt"),
            ge=meta.get("ge"),
            le=meta.get("le"),
            choices=meta.get("choices"),
            min_len=meta.get("min_len", 0),
        )
    return specs


def build(cls: type, values: Mapping[str, Any], *, owner: str) -> Any:
    """Instantiate ``cls`` from raw values (strings from the CLI or TOML values), checked.

    Raises:
        UserError: an unknown key, a value of the wrong type or out of its range.
    """
    specs = param_specs(cls)
    kwargs = {}
    for key, raw in values.items():
        if key not in specs:
            raise UserError(
                f"{owner} has no parameter '{key}'{closest(key, specs)}; "
                f"see `lifelong list` for its parameters"
            )
        kwargs[key] = parse_value(specs[key], raw, owner=owner)
    try:
        obj = cls(**kwargs)
    except UserError:
        raise
    except (Exception, SystemExit) as error:  # a plug-in's __post_init__, say
        raise UserError(failure(f"cannot create {owner}", error)) from None
    for spec in specs.values():
        check_range(spec, getattr(obj, spec.name), owner=owner)
    return obj


def as_config(obj: Any) -> dict[str, Any]:
    """The hyperparameters of a dataclass instance as plain JSON-ready values.

    A field holding a dataclass (a composite's parts) becomes a nested dict that starts
    with the part's ``name``; tuples become lists.
    """
    return {name: _plain(getattr(obj, name)) for name in param_specs(type(obj))}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"name": value.name, **as_config(value)}  # type: ignore[attr-defined]
    return value


def parse_value(spec: ParamSpec, raw: Any, *, owner: str) -> Any:
    """Convert a string (CLI) or a TOML value into the field's declared type."""
    try:
        return _convert(spec.type, raw)
    except (TypeError, ValueError):
        raise UserError(
            f"{owner}: {spec.name}={raw!r} is not a valid {spec.type_name} ({spec.doc})"
        ) from None


def check_range(spec: ParamSpec, value: Any, *, owner: str) -> None:
    """Raise a UserError when ``value`` lies outside the declared range or choices."""
    where = f"{owner}: {spec.name}={value!r}"
    if spec.choices is not None and value not in spec.choices:
        options = ", ".join(map(str, spec.choices))
        raise UserError(
            f"{where} is not one of {options}{closest(str(value), map(str, spec.choices))}"
        )
    if isinstance(value, tuple) and len(value) < spec.min_len:
        raise UserError(f"{where} has {len(value)} values; give at least {spec.min_len}")
    items = value if isinstance(value, tuple) else (value,)
    for item in items:
        if not isinstance(item, (int, float)) or isinstance(item, bool):
            continue
        if spec.gt is not None and not item > spec.gt:
            raise UserError(f"{where} must be greater than {spec.gt}")
        if spec.ge is not None and not item >= spec.ge:
            raise UserError(f"{where} must be at least {spec.ge}")
        if spec.le is not None and not item <= spec.le:
            raise UserError(f"{where} must be at most {spec.le}")


def _convert(tp: Any, raw: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        is_none = raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null"))
        if is_none and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], raw)
    if origin is tuple:
        item_type = typing.get_args(tp)[0]
        if isinstance(raw, str):
            raw = [part for part in raw.split(",") if part.strip()]
        if not isinstance(raw, (list, tuple)):
            raise TypeError(raw)
        return tuple(_convert(item_type, item) for item in raw)
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(raw, str) and raw.lower() in ("false", "0", "no", "off"):
            return False
        raise ValueError(raw)
    if tp is int:
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise ValueError(raw)
        if isinstance(raw, str) and not raw.strip().isascii():  # int("１") is 1
            raise ValueError(raw)
        number = int(raw.strip()) if isinstance(raw, str) else int(raw)
        if number not in _INT_RANGE:
            raise ValueError(raw)
        return number
    if tp is float:
        if isinstance(raw, bool) or (isinstance(raw, str) and not raw.strip().isascii()):
            raise ValueError(raw)
        value = float(raw)
        if not math.isfinite(value):  # NaN or infinite: no setting means that (nor JSON)
            raise ValueError(raw)
        return value
    if tp is str:
        if not isinstance(raw, str):
            raise TypeError(raw)
        return raw
    raise TypeError(f"unsupported parameter type {tp!r}")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return f"{_type_name(inner[0])} or none"
    if origin is tuple:
        return f"comma-separated list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))
