"""The Python entry point: ``lifelong.run(scenario, strategy, seed=..., device=...)``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lifelong.plan import check_memory, plan_runs
from lifelong.result import RunResult
from lifelong.runner import execute, resolve_device
from lifelong.scenario import ScenarioFamily
from lifelong.strategy import Strategy

__all__ = ["run"]


def run(
    scenario: str | ScenarioFamily,
    strategy: str | Strategy,
    *,
    seed: int = 0,
    device: str = "auto",
    settings: Mapping[str, Any] | None = None,
    data_dir: str | None = None,
    progress: bool = False,
) -> RunResult:
    """Run one strategy on one scenario and return its matrix, metrics and curves.

    Args:
        scenario: a registered name (``"split-mnist"``) or a configured family instance.
        strategy: a short name, ``"file.py:Class"``, ``"module:Class"`` or an instance.
        seed: fixes the stream, the initial weights, the data order and all sampling.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        settings: parameter overrides, as with ``--set`` (``{"setting": "task", "lr": 0.1}``).
        data_dir: where the IDX files of ``mnist`` or ``fashion-mnist`` lie.
        progress: show a progress bar on a terminal.

    Returns:
        The :class:`RunResult`; ``result.to_frame()`` gives the long-format DataFrame.
    """
    (spec,) = plan_runs(scenario, [strategy], [seed], settings)
    target = resolve_device(device)
    check_memory(spec, data_dir, target)
    stream = spec.scenario.build(seed, data_dir)
    return execute(spec, stream, target, progress=progress, data_dir=data_dir)
