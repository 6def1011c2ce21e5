"""Shared fixtures: tiny synthetic streams that need no dataset."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers import painted_stream

from lifelong import Stream
from lifelong.data.images import _CACHE as _IMAGE_CACHE


def synthetic_stream(setting: str = "class", n_tasks: int = 3, per_class: int = 12) -> Stream:
    """A small separable stream: 2 classes per task, 784-dim uint8 inputs, each class
    lighting up its own block of 40 pixels."""
    return painted_stream(
        "synthetic",
        (784,),
        lambda c: (slice(40 * c, 40 * (c + 1)),),
        setting,
        n_tasks,
        per_class,
        seed=123,
    )


@pytest.fixture(params=["class", "domain", "task"])
def any_setting(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_stream():
    """The :func:`synthetic_stream` factory, for tests that build tiny streams."""
    return synthetic_stream


@pytest.fixture(autouse=True, scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh LIFELONG_CACHE for the whole session, inherited by the processes tests start.

    A test run never writes into the user's cache: not ~/.cache/lifelong, nor a folder they
    named in LIFELONG_CACHE. The only prebuilt content there is mnist5k's parsed copy, which
    the session's first load writes again (about half a second).
    """
    root = tmp_path_factory.mktemp("lifelong-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LIFELONG_CACHE", str(root))
        yield root


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Small models run fastest, and identically, on one thread (as `lifelong run` does);
    every test starts so, whatever an earlier one left."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def fresh_image_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A private cache for one test, and no image dataset kept in the process after it
    (the loaders keep one parsed copy per folder: tests write new folders of the same name)."""
    monkeypatch.setenv("LIFELONG_CACHE", str(tmp_path / "cache"))
    yield
    _IMAGE_CACHE.clear()
