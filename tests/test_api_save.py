"""lifelong.save: the CLI's results directory from Python (lifelong.report runs in the README
study script's test, tests/test_readme_own_data.py)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
from helpers import tiny_factory

import lifelong
from lifelong.cli import main
from lifelong.evaluation.results_dir import load_runs

SETTINGS = {"batch_size": 4, "eval_every": 3}


@pytest.fixture
def dataset(tmp_path: Path) -> str:
    return tiny_factory(tmp_path)


def cli(dataset: str, out: Path, seeds: str, capsys) -> str:
    argv = ["run", "own-data", "--set", f"dataset={dataset}", "-s", "naive", "--seeds", seeds]
    sets = [arg for key, value in SETTINGS.items() for arg in ("--set", f"{key}={value}")]
    assert main([*argv, *sets, "--out", str(out), "--jobs", "1"]) == 0
    return capsys.readouterr().err


def test_save_writes_the_cli_files_with_the_same_run_keys_and_merges(
    dataset: str, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    cli(dataset, out, "0", capsys)
    (from_cli,) = load_runs(out)
    scenario = lifelong.OwnDataScenario(dataset=dataset)
    results = [
        lifelong.run(scenario, "naive", seed=seed, device="cpu", settings=SETTINGS)
        for seed in (0, 1)
    ]
    assert results[0].key == from_cli.key and results[0].matrix == from_cli.matrix
    assert lifelong.save(results, out) == out
    runs = load_runs(out)
    assert [r.key for r in runs] == [from_cli.key, results[1].key]  # replaced, not doubled
    rows = (out / "results.csv").read_text().splitlines()
    assert rows[0] == "strategy,seed,scenario,point,after_task,step,eval_task,accuracy"
    assert len(rows) == 1 + sum(len(r.rows()) for r in runs)
    before = (out / "summary.json").read_text()
    err = cli(dataset, out, "0,1", capsys)  # the CLI finds both runs done
    assert err.count("already in") == 2 and (out / "summary.json").read_text() == before


def test_save_takes_one_result_and_creates_the_directory(tmp_path: Path) -> None:
    x = [[0.0, 1.0], [1.0, 0.0]] * 10
    data = lifelong.from_arrays(x, [0, 1] * 10)
    result = lifelong.run(lifelong.scenario_from(data, increment=1), "naive", device="cpu")
    out = lifelong.save(result, tmp_path / "new" / "dir")
    summary = json.loads((out / "summary.json").read_text())
    assert [run["key"] for run in summary["runs"]] == [result.key]


def test_save_refuses_what_is_not_a_result_and_a_file_as_directory(tmp_path: Path) -> None:
    with pytest.raises(lifelong.UserError, match="not dict"):
        lifelong.save([{"acc": 1.0}], tmp_path / "out")  # type: ignore[list-item]
    assert not (tmp_path / "out").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(lifelong.UserError, match="is a file, not a directory"):
        lifelong.save([], tmp_path / "file")


def test_lifelong_report_stays_the_function_after_importing_the_module() -> None:
    importlib.import_module("lifelong.report")
    assert callable(lifelong.report) and lifelong.report.__module__ == "lifelong.api"
