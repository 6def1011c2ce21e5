"""Plain SGD: the arithmetic of ``torch.optim.SGD`` without importing ``torch.optim``'s machinery.

The first ``torch.optim`` optimiser a process builds imports ``torch._dynamo`` (about 1.5 s
on a 2-core CPU, a fifth of a short run's whole process). The SGD-based strategies need
none of it, so they step with :class:`SGD`; Adam and meta-training keep ``torch.optim``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import torch
from torch import Tensor

__all__ = ["SGD", "Stepper"]


class Stepper(Protocol):
    """What a strategy steps with: ``torch.optim`` optimisers and :class:`SGD` alike."""

    def zero_grad(self, set_to_none: bool = True) -> None: ...

    def step(self) -> object: ...


class SGD:
    """``torch.optim.SGD(params, lr, momentum)`` step for step (no dampening, no Nesterov).

    ``buf <- momentum * buf + grad`` (``buf = grad`` on the first step) and
    ``param <- param - lr * buf``; with ``momentum = 0``, ``param <- param - lr * grad``.
    The updates are the same elementwise operations torch's SGD runs, so the results are
    bit-identical. Parameters without a gradient are skipped, as there. Its state is
    plain attributes, which checkpoints capture and restore.
    """

    def __init__(self, params: Iterable[Tensor], lr: float, momentum: float = 0.0) -> None:
        self.params = list(params)
        self.lr = lr
        self.momentum = momentum
        self.buffers: list[Tensor | None] = [None] * len(self.params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def step(self) -> None:
        stepped = [i for i, p in enumerate(self.params) if p.grad is not None]
        self._descend(stepped, [self.params[i].grad for i in stepped])  # type: ignore[misc]

    def descend(self, grads: Sequence[Tensor]) -> None:
        """:meth:`step` with the gradient of every parameter given, in order, instead of
        read from ``param.grad`` (which it leaves as it is)."""
        self._descend(range(len(self.params)), grads)

    def _descend(self, stepped: Sequence[int], grads: Sequence[Tensor]) -> None:
        """The update of the parameters at ``stepped`` by their ``grads``."""
        with torch.no_grad():
            if self.momentum:
                for i, g in zip(stepped, grads, strict=True):
                    buf = self.buffers[i]
                    if buf is None:
                        self.buffers[i] = g.detach().clone()
                    else:
                        buf.mul_(self.momentum).add_(g)
                grads = [self.buffers[i] for i in stepped]  # type: ignore[misc]
            params = [self.params[i] for i in stepped]
            torch._foreach_add_(params, list(grads), alpha=-self.lr)
