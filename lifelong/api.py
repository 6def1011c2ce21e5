"""The Python entry point: ``lifelong.run(scenario, strategy, seed=..., device=...)``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from lifelong.errors import UserError
from lifelong.plan import plan_runs
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
    threads: int | None = 1,
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
        threads: torch's CPU threads during the run, 1 by default as in ``lifelong run``
            (small models train fastest on one, and the numbers match the CLI's bit for
            bit); the caller's setting is restored afterwards. ``None`` keeps it.

    Returns:
        The :class:`RunResult`; ``result.to_frame()`` gives the long-format DataFrame.
    """
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise UserError(f"threads={threads!r}: give a whole number >= 1, or None to keep torch's")
    (spec,) = plan_runs(scenario, [strategy], [seed], settings)
    target = resolve_device(device)
    stream = spec.scenario.build(seed, data_dir)
    with torch_threads(threads):
        return execute(spec, stream, target, progress=progress, data_dir=data_dir)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with torch at ``threads`` CPU threads (``None``: unchanged), then
    restore the caller's count."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
