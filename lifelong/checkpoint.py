"""Snapshots of a strategy's learned state, for checkpoints at task boundaries.

A strategy builds its state in ``setup`` (model, optimisers, memories, penalties). A
snapshot walks that state and keeps what ``torch.load(..., weights_only=True)`` can read
back: tensors, numbers, strings, and the ``state_dict`` of modules and optimisers. Restoring
walks a freshly set-up strategy the same way and loads the values in place, so a resumed
run continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

__all__ = ["capture", "restore"]

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
        return {str(k): capture(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [capture(v) for v in obj]
    if dataclasses.is_dataclass(obj) or hasattr(obj, "__dict__"):
        return {"__attrs__": {k: capture(v) for k, v in vars(obj).items()}}
    raise TypeError(f"cannot checkpoint a {type(obj).__name__}")


def restore(obj: Any, state: Any) -> Any:
    """Load ``state`` (from :func:`capture`) into ``obj`` in place; returns the value to keep.

    Objects with identity (modules, optimisers, generators, parts) are updated in place so
    that references shared between them (an optimiser's parameters) stay valid.
    """
    if isinstance(state, dict) and "__state_dict__" in state:
        obj.load_state_dict(state["__state_dict__"])
        return obj
    if isinstance(state, dict) and "__generator__" in state:
        obj.set_state(state["__generator__"])
        return obj
    if isinstance(state, dict) and "__attrs__" in state:
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


def _clone(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clone(v) for v in value]
    return value
