"""Turning names and ``key=value`` settings into checked run specifications."""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from lifelong.composition.compose import configure, is_composite, setting_keys
from lifelong.composition.registry import find_scenario, find_strategy
from lifelong.contracts.params import MAX_SEED, build, param_specs
from lifelong.contracts.scenario import ScenarioFamily
from lifelong.contracts.strategy import Strategy
from lifelong.data.stream_options import StreamOptions
from lifelong.errors import UserError, closest
from lifelong.execution.protocol import Protocol
from lifelong.execution.runner import RunSpec
from lifelong.models.axis import configure_model

__all__ = ["check_memory", "parse_seeds", "parse_settings", "plan_runs"]


def parse_settings(pairs: Sequence[str]) -> dict[str, str]:
    """``["lr=0.1", "naive.lr=0.2"]`` -> ``{"lr": "0.1", "naive.lr": "0.2"}``."""
    settings: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {pair!r} is not key=value (e.g. --set lr=0.05)")
        settings[key.strip()] = value.strip()
    return settings


MAX_SEEDS = 10_000


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0-7"`` (or a mix, ``"0-3,9"``) -> a list of distinct seeds."""
    seeds: dict[int, None] = {}  # ordered and distinct
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            low, dash, high = part.partition("-")
            first, last = _seed(low), _seed(high if dash else low)
            if last > MAX_SEED:
                raise UserError(f"--seeds {text!r}: a seed is at most {MAX_SEED}")
            span = range(first, last + 1)
            if len(seeds) + len(span) > MAX_SEEDS:
                raise UserError(f"--seeds {text!r}: at most {MAX_SEEDS:,} seeds at once")
            seeds.update(dict.fromkeys(span))
    except ValueError:
        raise UserError(f"--seeds {text!r}: use a list like 0,1,2 or a range like 0-7") from None
    if not seeds or min(seeds) < 0:
        raise UserError(f"--seeds {text!r}: give at least one non-negative seed, e.g. 0,1,2")
    return list(seeds)


def _seed(text: str) -> int:
    if not text.strip().isascii():  # int("１") is 1
        raise ValueError(text)
    return int(text)


def plan_runs(
    scenario: str | ScenarioFamily,
    strategies: Sequence[str | Strategy],
    seeds: Sequence[int],
    settings: Mapping[str, Any] | None = None,
) -> list[RunSpec]:
    """One checked :class:`RunSpec` per strategy and seed.

    A setting goes to the scenario, the protocol (``model.KEY``: the model's fields) or the
    strategies that declare it; a key
    prefixed with a strategy name (``naive.lr``) goes to that strategy alone, and one
    prefixed with a part name (``ewc.lam``, ``replay.size``) to that part of every
    composite (``er+ewc``) that has it. A key that nothing declares is an error, with the
    closest valid key suggested.
    """
    settings = dict(settings or {})
    if not strategies:
        raise UserError("no strategy given; add --strategy NAME (see `lifelong list`)")
    family = find_scenario(scenario) if isinstance(scenario, str) else type(scenario)
    used: set[str] = set()
    scenario_obj = _configure(family, scenario, settings, used, prefix=None)
    protocol = configure_model(
        _configure(Protocol, None, settings, used, prefix=None), settings, used
    )
    options = _configure(StreamOptions, None, settings, used, prefix=None)
    built = [_strategy(given, settings, used) for given in strategies]
    unused = [key for key in settings if key not in used]
    if unused:
        known = _known_keys(family, built)
        key = unused[0]
        raise UserError(
            f"--set {key}: no such parameter for {family.name} or "
            f"{', '.join(s.name for s in built)}{closest(key, known)}; see `lifelong list`"
        )
    _check_boundaries(built, options)
    return [RunSpec(scenario_obj, s, protocol, seed, options) for s in built for seed in seeds]


def _check_boundaries(strategies: Sequence[Strategy], options: StreamOptions) -> None:
    """Refuse a strategy that needs task boundaries when they are hidden (not detected),
    and one that needs the true task ids when they are hidden or detected."""
    for strategy in strategies:
        if strategy.needs_true_tasks and options.boundaries != "given":
            raise UserError(
                f"{strategy.name}: it reads each task's classes by the true task id, which "
                f"boundaries={options.boundaries} withholds; drop it or give the boundaries"
            )
    if options.boundaries != "hidden":
        return
    for strategy in strategies:
        needs = strategy.boundary_needs()
        if needs:
            what = "it" if needs == [strategy.name] else f"its part {', '.join(needs)}"
            raise UserError(
                f"{strategy.name}: {what} needs the task boundaries that boundaries=hidden "
                "withholds; use --set boundaries=detect (loss-plateau detection) or drop it"
            )


def _strategy(given: str | Strategy, settings: dict[str, Any], used: set[str]) -> Strategy:
    if is_composite(given):
        composite, keys = configure(given, settings)  # type: ignore[arg-type]
        used |= keys
        return composite
    cls = find_strategy(given) if isinstance(given, str) else type(given)
    return _configure(cls, given, settings, used, prefix=cls.name, also=cls.setting_prefixes)


def _configure(
    cls: type,
    given: object,
    settings: dict[str, Any],
    used: set[str],
    prefix: str | None,
    also: tuple[str, ...] = (),
) -> Any:
    specs = param_specs(cls)
    values: dict[str, Any] = {}
    if given is not None and not isinstance(given, str):
        values = {name: getattr(given, name) for name in specs}
    prefixes = [p + "." for p in ([] if prefix is None else [prefix, *also])]
    for key, value in settings.items():
        name = key
        matched = next((p for p in prefixes if key.startswith(p)), None)
        if matched is not None:
            name = key[len(matched) :]
        elif "." in key:
            continue
        if name in specs:
            values[name] = value
            used.add(key)
    owner = getattr(cls, "name", None) or "protocol"
    return build(cls, values, owner=owner)


def _known_keys(family: type, built: Sequence[Strategy]) -> list[str]:
    keys = [*param_specs(family), *param_specs(Protocol), *param_specs(StreamOptions)]
    for strategy in built:
        if is_composite(strategy):
            keys += setting_keys(strategy)  # type: ignore[arg-type]
            continue
        keys += list(param_specs(type(strategy)))
        keys += [f"{strategy.name}.{name}" for name in param_specs(type(strategy))]
    return keys


def check_memory(spec: RunSpec, data_dir: str | None, device: torch.device) -> None:
    """Refuse, before anything is allocated, a run whose stream and model alone need more
    memory than the machine (or the GPU) has; the estimates are lower bounds."""
    from lifelong.contracts.scenario import ImageScenario

    data = spec.scenario.footprint(data_dir)
    widths = [784 if isinstance(spec.scenario, ImageScenario) else 1, *spec.protocol.hidden, 1]
    model = 2 * 4 * sum(a * b for a, b in itertools.pairwise(widths))  # float32 weights, grads
    if spec.protocol.model not in ("", "mlp"):  # another network: not known before it is built
        model = 0
    for where, need, have in (
        ("memory", data + (model if device.type == "cpu" else 0), _ram()),
        ("GPU memory", model + data, _gpu_memory(device)),
    ):
        if have and need > have:
            raise UserError(
                f"{spec.scenario.name} with these settings needs at least {need / 2**30:,.1f} "
                f"GiB (stream {data / 2**30:,.1f}, model {model / 2**30:,.1f}), more than the "
                f"{have / 2**30:,.1f} GiB of {where} here; use fewer n_tasks or "
                "samples_per_task, or a smaller hidden"
            )


def _ram() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: not known
        return 0


def _gpu_memory(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    return torch.cuda.get_device_properties(device).total_memory
