"""Where lifelong keeps what it can recompute: ``$LIFELONG_CACHE``, else ``~/.cache/lifelong``."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_home"]


def cache_home() -> Path:
    """The cache's root folder (not created here): meta-trained inits, parsed datasets."""
    root = os.environ.get("LIFELONG_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "lifelong"
