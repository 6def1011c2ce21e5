"""The init axis of a strategy: the weights the stream starts from (DESIGN.md, "The four axes").

An :class:`Init` part runs once, before any other part of a :class:`lifelong.Composite` is
set up: it writes the starting weights into the freshly built model and says which of the
model's parameters learn during the stream. The learner, the memory and the regularizers
then see only those parameters, so ``oml+er`` replays and updates the prediction network
alone while the meta-learned representation stays fixed.

A meta-learned init (``maml``, ``reptile``, ``oml``) is a :class:`lifelong.MetaInit`
(lifelong/meta/metatrain.py), meta-trained on a pool of tasks from lifelong/meta/meta_tasks.py.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lifelong.contracts.composable import Composable
from lifelong.contracts.strategy import StreamInfo
from lifelong.execution.checkpoint import Checkpointed

__all__ = ["Init"]


@dataclass
class Init(Composable, Checkpointed, abc.ABC):
    """The weights the stream starts from, and which of them learn during the stream."""

    @abc.abstractmethod
    def prepare(
        self, model: nn.Module, info: StreamInfo, generator: torch.Generator
    ) -> set[str] | None:
        """Set the model's starting weights in place; return the names of the parameters
        that learn during the stream (None: all).

        Args:
            model: the freshly initialised network of the run (on the run's device).
            info: the stream's layout, scenario, seed and data directory.
            generator: the run's sampling generator (the only randomness a part may use).

        Returns:
            Names as ``model.named_parameters()`` gives them, or None when every parameter
            learns. A part that freezes parameters also sets their ``requires_grad`` to
            False, so that no gradient flows into them.
        """

    def gives_rates(self) -> bool:
        """Whether :meth:`learning_rates` gives rates (Meta-SGD's), which the learner must
        take (:attr:`lifelong.Learner.takes_rates`); the default: no."""
        return False

    def learning_rates(self) -> dict[str, Tensor] | None:
        """Per-parameter learning rates learned with the starting weights, by name, read
        after :meth:`prepare`; the learner steps with them (None, the default: its own)."""
        return None

    def check(self, model: nn.Module, info: StreamInfo) -> None:
        """Raise :class:`lifelong.UserError` for settings that cannot work with this model
        and stream, without training anything: the CLI calls it for every configuration
        before the first run starts, so a mistake stops a sweep before it spends time."""
