"""Reliability at the edges (issue 22): nothing lost when the results directory, a checkpoint,
a plug-in or a worker misbehaves; every refusal is one line with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lifelong import UserError
from lifelong.cli import main
from lifelong.plan import plan_runs
from lifelong.results_dir import load_runs
from lifelong.runner import _Run, execute
from lifelong.sweep import plan_requests, sweep

CPU = torch.device("cpu")
SMALL = {"samples_per_task": 96, "eval_every": 0}
B = ["run", "permuted-mnist", "-s", "naive", "--set", "n_tasks=3", "--set", "samples_per_task=64"]
B += ["-q", "--jobs", "1"]

PLUGIN = '''
from dataclasses import dataclass, field
from typing import ClassVar
import torch
import torch.nn.functional as F
from lifelong import Strategy, param


@dataclass
class Mine(Strategy):
    """SGD."""
    name: ClassVar[str] = "NAME"
    lr: float = param(LR, "learning rate", gt=0)
    model: torch.nn.Module = field(init=False)

    def setup(self, model, info, generator):
        self.model = model
        self.optimizer = torch.optim.SGD(model.parameters(), lr=self.lr)

    def train_step(self, batch):
        self.optimizer.zero_grad()
        loss = F.cross_entropy(self.model(batch.x, batch.task_ids), batch.y)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def predict(self, x, task_ids):
        return self.model(x, task_ids)
'''


def plugin(path: Path, name: str = "mine", lr: str = "0.1", extra: str = "") -> str:
    path.write_text(PLUGIN.replace("NAME", name).replace("LR", lr) + extra)
    return f"{path}:Mine"


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# 1. A NaN in summary.json is refused when read, before any run, not when saving after it.


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_a_summary_holding_nan_is_refused_before_the_next_run(tmp_path, capsys, bad) -> None:
    out = tmp_path / "R"
    assert main([*B, "--out", str(out)]) == 0
    summary = out / "summary.json"
    text = summary.read_text()
    cell = json.dumps(json.loads(text)["runs"][0]["matrix"][0][0])
    damaged = text.replace(cell, bad, 1)
    assert damaged != text
    summary.write_text(damaged)
    capsys.readouterr()
    assert main([*B, "--seeds", "0,1", "--out", str(out)]) == 2
    assert "summary.json" in one_line(capsys)
    assert summary.read_text() == damaged  # nothing ran, nothing was overwritten


# 7. Broken checkpoints are set aside and the run starts afresh (one-line warning).


def _checkpoint_after_task_0(tmp_path: Path):
    (spec,) = plan_runs("permuted-mnist", ["naive"], [0], {**SMALL, "n_tasks": 3})
    stream = spec.scenario.build(0)
    run = _Run(spec, stream, CPU, None)
    run.train_task(0, None)
    path = tmp_path / "run.pt"
    run.save(path)
    return spec, stream, path


@pytest.mark.parametrize(
    "damage",
    [
        {"next_task": 7},  # beyond the stream
        {"next_task": -1},
        {"next_task": 2},  # one row of R for two tasks trained
        {"rows": []},
        "directory",
        "pickled code",
    ],
)
def test_a_broken_checkpoint_is_set_aside_and_the_run_completes(tmp_path, damage) -> None:
    spec, stream, path = _checkpoint_after_task_0(tmp_path)
    whole = execute(spec, stream, CPU)
    if damage == "directory":
        path.unlink()
        path.mkdir()
    elif damage == "pickled code":
        torch.save({"key": torch.nn.Linear(1, 1)}, path)  # not loadable with weights_only
    else:
        state = torch.load(path, weights_only=True)
        torch.save({**state, **damage}, path)
    with pytest.warns(RuntimeWarning) as caught:
        resumed = execute(spec, stream, CPU, checkpoint=path)
    assert resumed.status == "ok" and resumed.matrix == whole.matrix
    (message,) = [str(w.message) for w in caught]
    assert "cannot be resumed" in message and "set aside as run.pt.set-aside" in message
    assert "\n" not in message and "weights_only" not in message
    assert (tmp_path / "run.pt.set-aside").exists()


def test_the_damaged_checkpoint_warning_is_one_line_on_the_command_line(tmp_path, capsys) -> None:
    out = tmp_path / "R"
    requests = plan_requests("permuted-mnist", ["naive"], [0], {"n_tasks": 3, **SMALL})
    key = sweep(requests, None)[0].key
    (out / "checkpoints").mkdir(parents=True)
    torch.save({"key": torch.nn.Linear(1, 1)}, out / "checkpoints" / f"{key}.pt")
    args = ["run", "permuted-mnist", "-s", "naive", "--set", "n_tasks=3", "--jobs", "1"]
    args += ["--set", "samples_per_task=96", "--set", "eval_every=0", "-q", "--out", str(out)]
    done = subprocess.run([sys.executable, "-m", "lifelong", *args], capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("lifelong: warning: ")
    assert "set aside" in done.stderr and "weights_only" not in done.stderr


def test_a_checkpoints_path_that_is_a_file_is_set_aside(tmp_path) -> None:
    out = tmp_path / "R"
    out.mkdir()
    (out / "checkpoints").write_text("not a directory")
    requests = plan_requests("permuted-mnist", ["naive"], [0], {"n_tasks": 3, **SMALL})
    with pytest.warns(RuntimeWarning, match="is not a directory; set aside"):
        assert [r.status for r in sweep(requests, out, jobs=1)] == ["ok"]
    assert (out / "checkpoints.set-aside").read_text() == "not a directory"


# 8. A finished run that cannot be saved is kept where it can be found.


def test_a_results_file_that_is_a_directory_is_refused_before_any_run(tmp_path, capsys) -> None:
    out = tmp_path / "R"
    (out / "results.csv").mkdir(parents=True)
    assert main([*B, "--out", str(out)]) == 2
    assert "results.csv is not a file" in one_line(capsys)


def test_a_finished_run_that_cannot_be_saved_is_kept_elsewhere(tmp_path, monkeypatch) -> None:
    import errno

    import lifelong.results_dir as results_dir

    monkeypatch.setenv("LIFELONG_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "R"
    real = results_dir.write_atomic

    def refuse_out(path: Path, text: str) -> None:
        if path.parent == out:  # write permission lost mid-sweep
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        real(path, text)

    monkeypatch.setattr(results_dir, "write_atomic", refuse_out)
    requests = plan_requests("permuted-mnist", ["naive"], [0, 1], {"n_tasks": 2, **SMALL})
    with pytest.raises(UserError) as caught:
        sweep(requests, out, jobs=1)
    message = str(caught.value)
    assert "\n" not in message and "Permission denied" in message
    rescued = tmp_path / "cache" / "unsaved"
    (folder,) = rescued.iterdir()
    assert str(folder) in message
    assert [r.seed for r in load_runs(folder)] == [0]  # the finished run, readable
    assert not (out / "summary.json").exists()


# 11. Temporary files of killed processes are removed on the next run.


def test_stale_temporary_files_of_dead_processes_are_removed(tmp_path) -> None:
    import os

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    out = tmp_path / "R"
    (out / "checkpoints").mkdir(parents=True)
    stale = out / "checkpoints" / f".0123456789abcdef.pt.{int(dead.stdout)}.tmp"
    live = out / "checkpoints" / f".fedcba9876543210.pt.{os.getpid()}.tmp"
    half = out / ".summary.json.x1y2z3.tmp"
    for path in (stale, live, half):
        path.write_bytes(b"\0" * 1024)
    requests = plan_requests("permuted-mnist", ["naive"], [0], {"n_tasks": 2, **SMALL})
    sweep(requests, out, jobs=1)
    assert not stale.exists() and not half.exists()
    assert live.exists()  # its writer still runs


# 3 and issue 16.7: run keys know a plug-in's code; --force; the lifelong version.


def test_editing_a_plugin_runs_it_again_and_replaces_the_old_run(tmp_path, capsys) -> None:
    out = tmp_path / "R"
    spec = plugin(tmp_path / "mine.py", lr="0.1")
    args = ["run", "permuted-mnist", "-s", spec, "--set", "n_tasks=2", "--jobs", "1"]
    args += ["--set", "samples_per_task=64", "--out", str(out)]
    assert main(args) == 0
    (first,) = load_runs(out)
    assert main(args) == 0
    assert "already in" in capsys.readouterr().err
    plugin(tmp_path / "mine.py", lr="0.1", extra="\n# an edit\n")
    assert main(args) == 0
    assert "code changed" in capsys.readouterr().err
    (second,) = load_runs(out)
    assert second.key != first.key and second.config["code"] != first.config["code"]


def test_two_plugin_files_with_one_name_are_different_runs(tmp_path, capsys) -> None:
    a = plugin(tmp_path / "a.py", lr="0.1")
    b = plugin(tmp_path / "b.py", lr="0.05")
    (spec_a,) = plan_runs("permuted-mnist", [a], [0])
    (spec_b,) = plan_runs("permuted-mnist", [b], [0])
    assert spec_a.config()["code"] != spec_b.config()["code"]
    assert main([*B[:3], a, "-s", b, "--out", str(tmp_path / "R")]) == 2
    assert "are both named 'mine'" in one_line(capsys)


def test_a_builtin_strategy_has_no_code_hash_and_keeps_its_key() -> None:
    (spec,) = plan_runs("split-mnist", ["naive"], [0])
    assert "code" not in spec.config()


@pytest.mark.parametrize("name", ["naive", "er", "ewc", "sgd"])
def test_a_plugin_named_like_a_builtin_is_refused(tmp_path, capsys, name) -> None:
    spec = plugin(tmp_path / "mine.py", name=name)
    assert main(["run", "permuted-mnist", "-s", spec, "-s", "naive", "-q"]) == 2
    assert f"is named '{name}', as a built-in is" in one_line(capsys)


def test_force_runs_again_what_out_holds_and_the_version_is_recorded(tmp_path, capsys) -> None:
    import lifelong

    out = tmp_path / "R"
    assert main([*B, "--out", str(out)]) == 0
    (first,) = load_runs(out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"][0]["lifelong"] == lifelong.__version__
    assert main([*B, "--out", str(out), "--force"]) == 0
    (again,) = load_runs(out)
    assert again.key == first.key and again.wall_s != first.wall_s  # a new run, one entry
    assert again.matrix == first.matrix


# 13 and issue 16.10: what a suite may import; relative plug-in paths.


def test_a_suite_resolves_a_plugin_path_from_its_own_folder(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    plugin(folder / "mine.py")
    suite = folder / "mine.toml"
    suite.write_text(
        '[suite]\nscenarios = ["permuted-mnist"]\nstrategies = ["mine.py:Mine"]\n'
        "[settings]\nn_tasks = 2\nsamples_per_task = 64\n"
    )
    monkeypatch.chdir(tmp_path)  # not the suite's folder
    out = tmp_path / "R"
    assert main(["sweep", str(suite), "--out", str(out), "-q", "--jobs", "1"]) == 0
    assert [r.strategy for r in load_runs(out)] == ["mine"]


@pytest.mark.parametrize("entry", ["this:Zen", "antigravity:Fly", "os.path:join", "a b:C", "x:1"])
def test_a_suite_imports_nothing_for_a_name_that_is_not_a_plugin(tmp_path, capsys, entry) -> None:
    suite = tmp_path / "bad.toml"
    suite.write_text(f'[suite]\nscenarios = ["permuted-mnist"]\nstrategies = ["{entry}"]\n')
    code = (
        "import sys; from lifelong.cli import main; "
        f"rc = main(['sweep', {str(suite)!r}, '-q']); "
        "print(rc, 'this' in sys.modules, 'antigravity' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.splitlines()[-1] == "2 False False"
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
