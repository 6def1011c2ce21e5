"""The test run keeps to itself: its cache is a fresh folder under pytest's temp dir, in this
process and in the processes tests start, never the user's ~/.cache/lifelong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lifelong.cache_dir import cache_home


def test_the_session_caches_under_its_temp_dir(
    session_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert session_cache.is_relative_to(tmp_path_factory.getbasetemp())
    assert cache_home() == session_cache
    assert not cache_home().is_relative_to(Path.home() / ".cache")


def test_a_process_a_test_starts_writes_its_data_cache_there(session_cache: Path) -> None:
    script = (
        "from lifelong.cache_dir import cache_home\n"
        "from lifelong.data.mnist import load_dataset\n"
        "load_dataset('mnist5k')\n"
        "print(cache_home())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert Path(proc.stdout.strip()) == session_cache
    assert list((session_cache / "data").glob("mnist_5k.csv.gz-*.npy"))
