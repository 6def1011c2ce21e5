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
from lifelong.composition.plan import plan_runs
from lifelong.evaluation.results_dir import load_runs
from lifelong.execution.runner import OneSeed, _Run, execute
from lifelong.execution.sweep import plan_requests, sweep

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
    run = _Run([spec], [stream], OneSeed(spec, stream, CPU, None))
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
    (line,) = [x for x in done.stderr.splitlines() if "checkpoints" in x]  # one line for it
    assert line.startswith("lifelong: warning: ") and "set aside" in line
    assert "weights_only" not in done.stderr and "Traceback" not in done.stderr


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

    import lifelong.evaluation.results_dir as results_dir

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
    (by_module,) = plan_runs("split-mnist", ["lifelong.strategies.naive:Naive"], [0])
    assert "code" not in spec.config() and by_module.config() == spec.config()


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
    summary["runs"][0]["wall_s"] = 12345.0  # a mark the rerun replaces (wall_s is rounded)
    (out / "summary.json").write_text(json.dumps(summary))
    assert main([*B, "--out", str(out), "--force"]) == 0
    (again,) = load_runs(out)
    assert again.key == first.key and again.wall_s != 12345.0  # a new run, one entry
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


def test_a_suite_imports_nothing_for_a_name_that_is_not_a_plugin(tmp_path) -> None:
    entries = ["this:Zen", "antigravity:Fly", "os.path:join", "a b:C", "x:1"]
    for i, entry in enumerate(entries):
        (tmp_path / f"bad{i}.toml").write_text(
            f'[suite]\nscenarios = ["permuted-mnist"]\nstrategies = ["{entry}"]\n'
        )
    code = (  # one process for all: each refusal must leave `this` and `antigravity` unimported
        "import sys; from lifelong.cli import main\n"
        f"for i in range({len(entries)}):\n"
        f"    rc = main(['sweep', {str(tmp_path)!r} + f'/bad{{i}}.toml', '-q'])\n"
        "    print(rc, 'this' in sys.modules, 'antigravity' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.splitlines()[-len(entries) :] == ["2 False False"] * len(entries)
    assert len(done.stderr.strip().splitlines()) == len(entries), done.stderr


# 4. No data, no run.


def test_a_dataset_without_images_is_refused(tmp_path, capsys) -> None:
    from lifelong.data.mnist import write_idx

    for split in ("train", "t10k"):
        write_idx(
            tmp_path / f"{split}-images-idx3-ubyte", torch.zeros(0, 28, 28, dtype=torch.uint8)
        )
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte", torch.zeros(0, dtype=torch.uint8))
    args = ["run", "split-mnist", "-s", "naive", "--set", "dataset=mnist", "-q"]
    assert main([*args, "--data-dir", str(tmp_path)]) == 2
    assert "hold no images" in one_line(capsys)


@pytest.mark.parametrize("empty", ["train", "test"])
def test_a_task_without_training_or_test_samples_is_refused(empty) -> None:
    from lifelong import Task

    x, y = torch.zeros(4, 784, dtype=torch.uint8), torch.zeros(4, dtype=torch.long)
    none_x, none_y = x[:0], y[:0]
    train = (none_x, none_y) if empty == "train" else (x, y)
    test = (none_x, none_y) if empty == "test" else (x, y)
    with pytest.raises(UserError, match=f"task 0 .* has no {empty}"):
        Task(0, "t", *train, *test, (0,), (0,))


# 5 and 14. Huge numbers, empty lists and full-width digits are one-line errors.


@pytest.mark.parametrize(
    "extra",
    [
        ["--seeds", "0-100000000000000000000"],
        ["--seeds", "18446744073709551616"],
        ["--seeds", "20000000000000"],
        ["--seeds", "１"],
        ["--set", "epochs=１"],
        ["--set", "lr=０.1"],
        ["--set", "hidden="],
        ["--set", "batch_size=99999999999999999999999"],
    ],
)
def test_numbers_no_run_can_use_are_refused_in_one_line(capsys, extra) -> None:
    assert main([*B, *extra]) == 2
    one_line(capsys)


def test_a_huge_class_seed_is_refused_on_the_command_line_and_in_a_suite(tmp_path, capsys) -> None:
    huge = "18446744073709551616"
    assert main(["run", "split-mnist", "-s", "naive", "--set", f"class_seed={huge}", "-q"]) == 2
    assert "class_seed" in one_line(capsys)
    for table in (f"seeds = [{huge}]\n", f"[settings]\nclass_seed = {huge}\n"):
        suite = tmp_path / "huge.toml"
        head = '[suite]\nscenarios = ["split-mnist"]\nstrategies = ["naive"]\n'
        suite.write_text(head + table)
        assert main(["sweep", str(suite), "-q"]) == 2
        one_line(capsys)


def test_an_idx_header_whose_size_overflows_is_refused(tmp_path) -> None:
    import struct

    from lifelong.data.mnist import read_idx

    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 4]) + struct.pack(">4I", 65536, 65536, 65536, 65536))
    with pytest.raises(UserError, match="header says 18446744073709551616 bytes"):
        read_idx(path)


# 6. Names longer than a file system allows.


@pytest.mark.parametrize(
    "where", ["--out", "report", "report --out", "--data-dir", "suite", "plugin"]
)
def test_a_path_with_a_name_over_255_bytes_is_one_line(tmp_path, capsys, where) -> None:
    long = str(tmp_path / ("x" * 300))
    args = {
        "--out": [*B, "--out", long],
        "report": ["report", long],
        "report --out": ["report", str(tmp_path), "--out", long],
        "--data-dir": [*B, "--set", "dataset=mnist", "--data-dir", long],
        "suite": ["sweep", f"{long}.toml"],
        "plugin": ["run", "permuted-mnist", "-s", f"{long}.py:Mine"],
    }[where]
    assert main(args) == 2
    assert "more than the 255 a file system allows" in one_line(capsys)


# 9. A plug-in that breaks at import or when created is named in one line.


@pytest.mark.parametrize(
    ("code", "said"),
    [
        ("import sys\nsys.exit(3)\n", "SystemExit: 3"),
        ("raise KeyboardInterrupt\n", "KeyboardInterrupt"),
        ("\n    def __post_init__(self):\n        raise ValueError('lr too odd')\n", "lr too odd"),
    ],
)
def test_a_plugin_that_breaks_at_import_or_creation_is_one_line(tmp_path, capsys, code, said):
    path = tmp_path / "broken.py"
    if "__post_init__" in code:
        plugin(path, extra=code)
    else:
        path.write_text(code + PLUGIN.replace("NAME", "mine").replace("LR", "0.1"))
    assert main(["run", "permuted-mnist", "-s", f"{path}:Mine", "-q"]) == 2
    line = one_line(capsys)
    assert str(path) in line and said in line


# 10. An unreachable Ray address fails at once.


def test_an_unreachable_ray_address_fails_at_once_in_one_line(tmp_path) -> None:
    args = [*B, "--executor", "ray", "--address", "127.0.0.1:1", "--out", str(tmp_path / "R")]
    done = subprocess.run(
        [sys.executable, "-m", "lifelong", *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert (
        done.stderr.count("\n") == 1
        and "cannot reach the Ray cluster at 127.0.0.1:1" in done.stderr
    )
    assert not (tmp_path / "R").exists()


# 12. Huge work: refused before planning or allocating; planning builds a scenario once.


def test_a_grid_of_a_million_points_is_refused_before_planning(tmp_path, capsys) -> None:
    suite = tmp_path / "huge.toml"
    values = ", ".join(str(0.001 * (i + 1)) for i in range(1000))
    suite.write_text(
        '[suite]\nscenarios = ["permuted-mnist"]\nstrategies = ["naive"]\n'
        f"[grid]\nlr = [{values}]\nmomentum = [{values.replace('0.', '0.0')}]\n"
    )
    assert main(["sweep", str(suite), "-q"]) == 2
    assert "1,000,000 points x 1 strategies x 1 seeds make 1,000,000 runs" in one_line(capsys)


@pytest.mark.parametrize("setting", ["n_tasks=2000000", "hidden=10000000000"])
def test_a_run_larger_than_memory_is_refused_before_allocating(capsys, setting) -> None:
    assert main(["run", "permuted-mnist", "-s", "naive", "--set", setting, "-q"]) == 2
    assert "GiB of memory here" in one_line(capsys)


def test_planning_a_grid_builds_each_scenario_once_and_counts_points(tmp_path, capsys, monkeypatch):
    import lifelong.execution.sweep
    from lifelong.composition.registry import find_scenario

    family = find_scenario("permuted-mnist")
    builds = []
    real = family.build
    monkeypatch.setattr(family, "build", lambda self, *a: builds.append(1) or real(self, *a))
    monkeypatch.setattr(lifelong.execution.sweep, "sweep", lambda requests, *a, **k: [])
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    suite = tmp_path / "grid.toml"
    lrs = ", ".join(str(0.01 * (i + 1)) for i in range(25))
    suite.write_text(
        '[suite]\nscenarios = ["permuted-mnist"]\nstrategies = ["naive"]\n'
        f"[settings]\nn_tasks = 2\n[grid]\nlr = [{lrs}]\n"
    )
    assert main(["sweep", str(suite)]) == 0
    assert len(builds) == 1
    assert "planning" in capsys.readouterr().err


# 14. A second SIGTERM while stopping changes nothing: exit status 130, one line.


def test_a_second_sigterm_while_stopping_still_exits_130(tmp_path) -> None:
    code = f"""
import os, signal, sys
import lifelong.execution.sweep
from lifelong.cli import main

def stopped(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)  # a scheduler's stop
    signal.raise_signal(signal.SIGTERM)  # sent again while the cleanup runs

lifelong.execution.sweep.sweep = stopped
status = main({[*B, "--out", str(tmp_path / "R")]!r})
os.kill(os.getpid(), signal.SIGTERM)  # and again while Python shuts down
sys.exit(status)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 130
    assert done.stderr == "lifelong: interrupted; completed runs are saved\n"


# 22.2: a kill -9 of the main process leaves no worker behind (slow: processes and time).


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_a_killed_sweep_leaves_no_worker_running(tmp_path) -> None:
    import os
    import signal
    import time

    args = ["run", "permuted-mnist", "-s", "naive", "--seeds", "0-5", "--set", "n_tasks=10"]
    args += ["--jobs", "2", "-q", "--out", str(tmp_path / "R")]
    main_process = subprocess.Popen([sys.executable, "-m", "lifelong", *args])
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 3 and time.monotonic() < deadline:  # 2 workers, 1 resource tracker
            time.sleep(0.5)
            workers = _children(main_process.pid)
        assert len(workers) >= 3, "the pool did not start"
        time.sleep(3)  # the workers are training
        os.kill(main_process.pid, signal.SIGKILL)
        main_process.wait()
        deadline = time.monotonic() + 10
        while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in workers if _running(pid)], "workers outlived their parent"
    finally:
        main_process.kill()
        for pid in workers:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


def test_two_plugin_files_of_the_same_name_are_two_modules(tmp_path) -> None:
    """Issue 17: plug-ins were registered as ``lifelong_plugin_<stem>``, so two files named
    mine.py in two folders shared one ``sys.modules`` entry."""
    from lifelong.composition.registry import find_strategy

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = plugin(tmp_path / "a" / "mine.py", name="first")
    second = plugin(tmp_path / "b" / "mine.py", name="second")
    one, two = find_strategy(first), find_strategy(second)
    assert one.__module__ != two.__module__
    assert sys.modules[one.__module__] is not sys.modules[two.__module__]
    assert (one.name, two.name) == ("first", "second")
