"""The training protocol: how a stream is fed to a strategy, and the network it trains."""

from __future__ import annotations

from dataclasses import dataclass

from lifelong.contracts.params import param

__all__ = ["Protocol"]


@dataclass(frozen=True)
class Protocol:
    """Epochs, batches, glances, evaluation schedule and network widths of a run.

    With ``glances > 1`` every incoming batch is given to the strategy that many times in
    a row, as La-MAML's single-pass protocol does (use it with ``epochs=1``).
    """

    epochs: int = param(1, "passes over each task's training data", ge=1)
    batch_size: int = param(32, "samples per training batch", ge=1)
    glances: int = param(1, "times each batch is repeated (single-pass protocols)", ge=1)
    eval_every: int = param(5, "batches between curve evaluations (0: only at task ends)", ge=0)
    hidden: tuple[int, ...] = param(
        (100, 100), "widths of the MLP's hidden layers", ge=1, min_len=1
    )
    eval_batch_size: int = param(2048, "test samples per evaluation batch", ge=1)
    fast: bool = param(
        True, "take the accelerations of lifelong.fast where they apply (false: reference only)"
    )
