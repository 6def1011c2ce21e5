"""The README's own-data, trackers and Python-study examples work as written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from lifelong.cli import main
from lifelong.evaluation.results_dir import load_runs

README = Path(__file__).resolve().parent.parent / "README.md"


def block(first_line: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    (found,) = [b for b in blocks if b.startswith(first_line)]
    return found


def test_the_python_study_script_runs_saves_and_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_strategy.py").write_text(block("# my_strategy.py"))
    scope: dict = {}
    exec(block("# own_study.py"), scope)
    out = tmp_path / "results" / "own-study"
    runs = load_runs(out)
    assert sorted({r.strategy for r in runs}) == ["er", "naive", "smooth"]
    assert len(runs) == 6 and all(len(r.matrix) == 3 for r in runs)
    assert (out / "report" / "report.md").is_file() and (out / "results.csv").is_file()
    assert [r.key for r in runs] == [r.key for r in scope["results"]]


def test_the_my_data_factory_runs_from_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(4), 15)
    images = (rng.random((4, 6, 6))[labels] * 255).astype(np.uint8)
    np.save("images.npy", images)
    np.save("labels.npy", labels)
    (tmp_path / "my_data.py").write_text(block("# my_data.py"))
    argv = ["run", "own-data", "--set", "dataset=my_data.py:make_dataset", "-s", "naive"]
    assert main([*argv, "--set", "class_order=3,1,0,2", "--out", "out", "-q", "--jobs", "1"]) == 0
    (run,) = load_runs(tmp_path / "out")
    assert run.task_names == ["3/1", "0/2"]
