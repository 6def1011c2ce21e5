"""The training protocol: how a stream is fed to a strategy, and the network it trains."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from lifelong.contracts.params import param

__all__ = ["Protocol"]


@dataclass(frozen=True)
class Protocol:
    """Epochs, batches, glances, evaluation schedule, the network and its precision.

    With ``glances > 1`` every incoming batch is given to the strategy that many times in
    a row, as La-MAML's single-pass protocol does (use it with ``epochs=1``).
    """

    epochs: int = param(1, "passes over each task's training data", ge=1)
    batch_size: int = param(32, "samples per training batch", ge=1)
    glances: int = param(1, "times each batch is repeated (single-pass protocols)", ge=1)
    eval_every: int = param(5, "batches between curve evaluations (0: only at task ends)", ge=0)
    hidden: tuple[int, ...] = param(
        (100, 100), "widths of the MLP's hidden layers (model=mlp)", ge=1, min_len=1
    )
    model: str = param(
        "",
        "the network: mlp, cnn, resnet18-reduced, lamaml-conv, path/to/file.py:factory or "
        "module:factory (fields: model.KEY=V; empty: the scenario's default for its inputs)",
    )
    eval_batch_size: int = param(
        2048,
        "test samples per evaluation batch (on a CPU, conv nets take at most twice batch_size: "
        "cache-sized batches run 3-4x faster there)",
        ge=1,
    )
    fast: bool = param(
        True, "take the accelerations of lifelong.fast where they apply (false: reference only)"
    )
    amp: str = param(
        "none", "mixed precision: bf16 autocasts the step and evaluation", choices=("none", "bf16")
    )
    channels_last: bool = param(
        False,
        "conv weights in channels-last memory format (faster convolutions on GPUs, and measured "
        "1.6x faster for cnn on a CPU)",
    )
    model_fields: tuple[tuple[str, Any], ...] = dataclasses.field(
        default=(), metadata={"setting": False}
    )
    """The model's fields as ``model.KEY=V`` set them
    (:func:`lifelong.models.axis.configure_model`), sorted by name; not a ``--set`` key of its
    own."""
