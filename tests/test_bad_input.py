"""Fuzz-style bad input for suites and the command line: one line, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifelong.cli import main

GOOD_HEAD = "[suite]\nscenarios = ['split-mnist']\nstrategies = ['naive']\nseeds = [0]\n"

BAD_SUITES = {
    "toml syntax": ("[suite\nscenarios = ['split-mnist']", "TOML syntax error"),
    "unclosed string": ("[suite]\nscenarios = ['split-mnist]\n", "TOML syntax error"),
    "unknown table": (GOOD_HEAD + "[grids]\nlr = [0.1]\n", "unknown key 'grids'"),
    "unknown suite key": ("[suite]\nscenario = ['split-mnist']\n", "did you mean 'scenarios'"),
    "scenarios not list": (
        "[suite]\nscenarios = 'split-mnist'\nstrategies = ['naive']\n",
        "must be a non-empty list",
    ),
    "missing strategies": ("[suite]\nscenarios = ['split-mnist']\n", "strategies is missing"),
    "empty strategies": (
        "[suite]\nscenarios = ['split-mnist']\nstrategies = []\n",
        "non-empty list",
    ),
    "seed as text": (GOOD_HEAD.replace("[0]", "['zero']"), "only int values"),
    "negative seed": (GOOD_HEAD.replace("[0]", "[-1]"), "non-negative"),
    "duplicate seed": (GOOD_HEAD.replace("[0]", "[0, 0]"), "twice"),
    "duplicate strategy": (GOOD_HEAD.replace("['naive']", "['naive', 'naive']"), "twice"),
    "empty grid": (GOOD_HEAD + "[grid]\nlr = []\n", "non-empty list"),
    "grid not list": (GOOD_HEAD + "[grid]\nlr = 0.1\n", "non-empty list"),
    "duplicate grid value": (GOOD_HEAD + "[grid]\nlr = [0.1, 0.1]\n", "twice"),
    "settings and grid": (
        GOOD_HEAD + "[settings]\nlr = 0.1\n[grid]\nlr = [0.2]\n",
        "both in [settings] and in [grid]",
    ),
    "unknown setting": (GOOD_HEAD + "[settings]\nlrr = 0.1\n", "did you mean 'lr'"),
    "wrong type": (GOOD_HEAD + "[settings]\nepochs = 'many'\n", "not a valid int"),
    "negative size": (GOOD_HEAD + "[settings]\nsamples_per_task = -5\n", "at least 1"),
    "negative lr in grid": (GOOD_HEAD + "[grid]\nlr = [0.1, -0.1]\n", "greater than 0"),
    "bool for int": (GOOD_HEAD + "[settings]\nepochs = true\n", "not a valid int"),
    "unknown scenario": (
        GOOD_HEAD.replace("split-mnist", "split-mnsit"),
        "did you mean 'split-mnist'",
    ),
    "unknown strategy": (GOOD_HEAD.replace("naive", "naïve"), "unknown strategy"),
    "too many tasks": (GOOD_HEAD + "[settings]\nn_tasks = 50\n", "more than the 10 classes"),
    "table for suite": ("suite = 3\n", "[suite] must be a table"),
}


@pytest.mark.parametrize("case", sorted(BAD_SUITES))
def test_malformed_suites(case: str, tmp_path: Path, capsys) -> None:
    text, fragment = BAD_SUITES[case]
    suite = tmp_path / "bad.toml"
    suite.write_text(text)
    out = tmp_path / "out"
    assert main(["sweep", str(suite), "--out", str(out), "-j", "1"]) == 2
    err = capsys.readouterr().err
    assert fragment in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not out.exists()


BAD_COMMANDS = [
    (["sweep", "no-such-suite"], "unknown suite"),
    (["sweep", "missing.toml"], "does not exist"),
    (["sweep", "split-mnist", "--jobs", "0"], "must be at least 1"),
    (["sweep", "split-mnist", "--jobs", "two"], "not a whole number"),
    (["sweep", "split-mnist", "--executor", "slurm"], "invalid choice"),
    (["sweep", "split-mnist", "--threads", "-1"], "must be at least 1"),
    (["sweep", "split-mnist", "--seeds", ""], "--seeds"),
    (["sweep", "split-mnist", "--seeds", "-3"], "--seeds"),
    (["sweep", "split-mnist", "--set", "n_tasks=0"], "at least 1"),
    (["run", "split-mnist", "-s", "naive", "--seeds", "1-x"], "--seeds"),
    (["run", "split-mnist", "-s", "naive", "--set", "=3"], "not key=value"),
    (["run", "split-mnist", "-s", "naive", "--set", "hidden=100,abc"], "not a valid"),
    (["run", "split-mnist", "-s", "naive", "--set", "setting=tasks"], "did you mean 'task'"),
    (["run", "split-mnist", "-s", "naive", "--set", "naive.lrr=1"], "naive.lr"),
    (["run", "split-mnist", "-s", "naive", "--unknown-flag"], "unrecognized arguments"),
    (["run", "split-mnist", "-s", "a.py:B:C"], "is neither a short name"),
    (["run", "split-mnist", "-s", "os:path"], "part of Python's standard library"),
    (["run", "split-mnist", "-s", "lifelong.errors:UserError"], "not a subclass of lifelong."),
    (["run", "split-mnist", "-s", "no_such_module_xyz:Thing"], "no module named"),
    (["run", "split-mnist", "-s", "naive", "--out", "/proc/forbidden/x"], "--out"),
    (["list", "--strategy", "nothing"], "unknown strategy"),
    (["run"], "the following arguments are required"),
]


@pytest.mark.parametrize(("args", "fragment"), BAD_COMMANDS)
def test_malformed_command_lines(
    args: list[str], fragment: str, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    try:
        code = main(args)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    err = capsys.readouterr().err
    assert code == 2, err
    assert fragment in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not Path("results").exists()
