"""Snapshots of a strategy's learned state, for checkpoints at task boundaries.

A strategy builds its state in ``setup`` (model, optimisers, memories, penalties). A
snapshot walks that state and keeps what ``torch.load(..., weights_only=True)`` can read
back: tensors, numbers, strings, and the ``state_dict`` of modules and optimisers. Restoring
walks a freshly set-up strategy the same way and loads the values in place, so a resumed
run continues exactly where the interrupted one stopped. A class lists attributes that are
caches, rebuilt on use, in ``not_checkpointed``.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import torch
from torch import nn

__all__ = ["CheckpointMismatch", "capture", "restore"]

_LEAF = (int, float, bool, str, type(None))


def capture(obj: Any) -> Any:
    """A nested structure of tensors and plain values holding ``obj``'s mutable state."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, _LEAF):
        return obj
    if isinstance(obj, (nn.Module, torch.optim.Optimizer)):
        return {"__state_dict__": _clone(obj.state_dict())}
    if isinstance(obj, torch.Generator):
        return {"__generator__": obj.get_state()}
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise TypeError("cannot checkpoint a dict whose keys are not strings")
        return {k: capture(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [capture(v) for v in obj]
    if isinstance(obj, random.Random):  # its state is not in its __dict__
        raise TypeError("cannot checkpoint a random.Random; use a torch.Generator")
    if dataclasses.is_dataclass(obj) or hasattr(obj, "__dict__"):
        skip = getattr(type(obj), "not_checkpointed", ())
        return {"__attrs__": {k: capture(v) for k, v in vars(obj).items() if k not in skip}}
    raise TypeError(f"cannot checkpoint a {type(obj).__name__}")


def restore(obj: Any, state: Any) -> Any:
    """Load ``state`` (from :func:`capture`) into ``obj`` in place; returns the value to keep.

    Objects with identity (modules, optimisers, generators, parts) are updated in place so
    that references shared between them (an optimiser's parameters) stay valid.
    """
    if isinstance(state, dict) and "__state_dict__" in state:
        _expect(obj, (nn.Module, torch.optim.Optimizer), "a module or optimiser")
        obj.load_state_dict(state["__state_dict__"])
        return obj
    if isinstance(state, dict) and "__generator__" in state:
        _expect(obj, torch.Generator, "a generator")
        obj.set_state(state["__generator__"])
        return obj
    if isinstance(state, dict) and "__attrs__" in state:
        if obj is None:
            raise CheckpointMismatch("an object the checkpoint holds is missing after setup")
        for name, value in state["__attrs__"].items():
            current = getattr(obj, name, None)
            object.__setattr__(obj, name, restore(current, value))
        return obj
    if isinstance(state, torch.Tensor):
        if isinstance(obj, torch.Tensor) and obj.shape == state.shape and not obj.is_inference():
            with torch.no_grad():
                obj.copy_(state)
            return obj
        return state
    if isinstance(state, dict):
        current = obj if isinstance(obj, dict) else {}
        return {k: restore(current.get(k), v) for k, v in state.items()}
    if isinstance(state, list):
        items = list(obj) if isinstance(obj, (list, tuple)) and len(obj) == len(state) else []
        restored = [restore(items[i] if items else None, v) for i, v in enumerate(state)]
        return tuple(restored) if isinstance(obj, tuple) else restored
    return state


class CheckpointMismatch(ValueError):
    """A checkpoint's state does not fit the freshly set-up strategy (state created after
    ``setup``, or a checkpoint of other code): the run starts afresh instead."""


def _expect(obj: Any, kind: type | tuple[type, ...], what: str) -> None:
    if not isinstance(obj, kind):
        raise CheckpointMismatch(f"the checkpoint holds {what} where setup made none")


def _clone(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clone(v) for v in value]
    return value
