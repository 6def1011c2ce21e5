"""Typed hyperparameters: parsing from strings and TOML values, ranges, errors."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from lifelong import UserError, param
from lifelong.contracts.params import as_config, build, param_specs


@dataclass
class Example:
    """A dataclass with one field of every supported type."""

    lr: float = param(0.1, "learning rate", gt=0)
    steps: int = param(3, "number of steps", ge=1)
    flag: bool = param(False, "a switch")
    mode: str = param("a", "a mode", choices=("a", "b"))
    widths: tuple[int, ...] = param((4, 4), "widths", ge=1)
    seed: int | None = param(None, "optional seed")


def test_strings_are_parsed_into_declared_types() -> None:
    obj = build(
        Example,
        {"lr": "0.5", "steps": "7", "flag": "yes", "mode": "b", "widths": "8,16", "seed": "4"},
        owner="example",
    )
    assert (obj.lr, obj.steps, obj.flag, obj.mode, obj.widths, obj.seed) == (
        0.5,
        7,
        True,
        "b",
        (8, 16),
        4,
    )


def test_toml_values_and_none() -> None:
    obj = build(Example, {"lr": 1, "widths": [2, 3], "seed": "none"}, owner="example")
    assert obj.lr == 1.0 and isinstance(obj.lr, float)
    assert obj.widths == (2, 3) and obj.seed is None


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"lr": "-1"}, "greater than 0"),
        ({"lr": "fast"}, "not a valid float"),
        ({"steps": "0"}, "at least 1"),
        ({"steps": "2.5"}, "not a valid int"),
        ({"flag": "maybe"}, "not a valid bool"),
        ({"mode": "c"}, "not one of a, b"),
        ({"widths": "4,0"}, "at least 1"),
        ({"lrr": "1"}, "did you mean 'lr'"),
        ({"lr": "nan"}, "not a valid float"),
    ],
)
def test_bad_values_are_one_line_user_errors(values: dict[str, str], fragment: str) -> None:
    with pytest.raises(UserError, match=fragment) as info:
        build(Example, values, owner="example")
    assert "\n" not in str(info.value)


def test_specs_and_config_follow_the_fields() -> None:
    specs = param_specs(Example)
    assert list(specs) == ["lr", "steps", "flag", "mode", "widths", "seed"]
    assert specs["lr"].doc == "learning rate"
    assert as_config(Example()) == {
        "lr": 0.1,
        "steps": 3,
        "flag": False,
        "mode": "a",
        "widths": [4, 4],
        "seed": None,
    }
