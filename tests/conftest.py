"""Shared fixtures: tiny synthetic streams that need no dataset."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from lifelong import Stream, make_task


def synthetic_stream(setting: str = "class", n_tasks: int = 3, per_class: int = 12) -> Stream:
    """A small separable stream: 2 classes per task, 784-dim uint8 inputs."""
    generator = torch.Generator().manual_seed(123)
    tasks = []
    for t in range(n_tasks):
        classes = (2 * t, 2 * t + 1)
        images, labels = [], []
        for split in (per_class, per_class // 2):
            y = torch.tensor(classes).repeat_interleave(split)
            x = torch.randint(0, 60, (len(y), 784), generator=generator, dtype=torch.uint8)
            for c in classes:  # each class lights up its own block of pixels
                x[y == c, 40 * c : 40 * (c + 1)] += 150
            images.append(x)
            labels.append(y)
        tasks.append(
            make_task(
                t,
                f"{classes[0]}/{classes[1]}",
                (images[0], images[1]),
                (labels[0], labels[1]),
                classes,
                2 * t,
                setting,
            )  # type: ignore[arg-type]
        )
    n_outputs = 2 * n_tasks if setting == "class" else 2
    n_heads = n_tasks if setting == "task" else 1
    return Stream("synthetic", setting, tuple(tasks), n_outputs, n_heads, 784)  # type: ignore[arg-type]


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
