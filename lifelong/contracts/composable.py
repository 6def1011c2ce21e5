"""What every part of a composition (init, learner, memory, regularizer, head) declares
about itself, as class attributes that :mod:`lifelong.composition.compose` reads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = ["Composable"]


class Composable:
    """The declarations shared by the five axes' contracts."""

    name: ClassVar[str]
    """The part's name in a composition (``er``, ``ewc``, ``oml``)."""
    partner_defaults: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    """Defaults this part sets on the parts it is composed with, by their name and key
    (``{"replay": {"batch": 10}}``); ``compose`` applies them and a ``--set`` still wins."""
    shortcuts: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    """Named classics this part owns, and the parts each stands for (``{"agem": ("agem",
    "replay")}``); ``compose("agem")`` builds them
    (:func:`lifelong.composition.compose.shortcuts`)."""
    shortcut_settings: ClassVar[Mapping[str, Mapping[str, Mapping[str, Any]]]] = {}
    """Settings a shortcut of this part gives its members, by shortcut and part name
    (``{"mir": {"replay": {"retrieve": "mir"}}}``); a ``--set`` still wins."""
    memory_settings: ClassVar[frozenset[str]] = frozenset()
    """Its settings that act only on a memory's samples (``ncm``'s ``from_memory``): set
    true on a composition without a memory, ``--set`` refuses them in one line."""
    needs_boundaries: ClassVar[bool] = False
    """Whether it needs its hooks at task boundaries to work (EWC's consolidation); with
    hidden boundaries such a part is refused, or detected boundaries are used."""
