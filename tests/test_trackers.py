"""--log tensorboard|wandb|mlflow and lifelong.save(log=...): each tracker's real local
backend, read back with its own reader; no network (W&B runs offline)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_factory

import lifelong
from lifelong.cli import main
from lifelong.evaluation.results_dir import load_runs

SETTINGS = ["--set", "batch_size=4", "--set", "eval_every=2"]


def needs(package: str):
    missing = importlib.util.find_spec(package) is None
    return pytest.mark.skipif(missing, reason=f"{package} is not installed (lifelong[{package}])")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """W&B never reaches for the network here, and keeps its settings in the test folder."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))


@pytest.fixture
def factory(tmp_path: Path) -> str:
    return f"dataset={tiny_factory(tmp_path)}"


def run_cli(factory: str, out: Path, *extra: str, seeds: str = "0,1") -> int:
    argv = ["run", "own-data", "--set", factory, *SETTINGS, "-s", "naive"]
    return main([*argv, "--seeds", seeds, "--out", str(out), "-q", "--jobs", "1", *extra])


@needs("tensorboard")
def test_tensorboard_event_files_hold_every_evaluation_metric_and_figure(
    factory: str, tmp_path: Path
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "sweep"
    assert run_cli(factory, out, "--log", "tensorboard") == 0
    runs = load_runs(out)
    folders = sorted(p.name for p in (out / "tensorboard").iterdir())
    assert folders == sorted(f"{r.strategy}-seed{r.seed}-{r.key[:8]}" for r in runs)
    run = runs[0]
    events = EventAccumulator(
        str(out / "tensorboard" / folders[folders.index(f"naive-seed0-{run.key[:8]}")]),
        size_guidance={"scalars": 0, "images": 0},
    )
    events.Reload()
    tags = events.Tags()
    points = [(e.step, round(e.value, 6)) for e in events.Scalars("accuracy/task_1")]
    assert points == [(c.step, round(c.accuracies[1], 6)) for c in run.curves]
    assert events.Scalars("metrics/acc")[0].value == pytest.approx(run.metrics["acc"])
    assert {"figures/accuracy", "figures/curves"} <= set(tags["images"])
    saved = json.loads((out / "tensorboard" / folders[0] / "summary.json").read_text())
    assert saved["key"] in {r.key for r in runs}


def wandb_records(path: Path):
    """The records of a W&B transaction log (``run-*.wandb``: LevelDB-log blocks)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, payload = 7, b""
    while position + 7 <= len(data):
        left = 32768 - position % 32768
        if left < 7:  # a block's tail too short for a header is padding
            position += left
            continue
        length = int.from_bytes(data[position + 4 : position + 6], "little")
        kind = data[position + 6]
        payload += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            yield record
            payload = b""


@needs("wandb")
def test_wandb_offline_runs_are_grouped_by_sweep_with_history_config_and_artifact(
    factory: str, tmp_path: Path
) -> None:
    out = tmp_path / "my-sweep"
    assert run_cli(factory, out, "--log", "wandb", seeds="0") == 0  # W&B takes ~3 s a run
    runs = {f"{r.strategy}-seed{r.seed}-{r.key[:8]}": r for r in load_runs(out)}
    logs = sorted((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 1
    seen = {}
    for log in logs:
        records = list(wandb_records(log))
        (meta,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        assert meta.run_group == "my-sweep"
        run = runs[meta.display_name]
        history = [r.history for r in records if r.WhichOneof("record_type") == "history"]
        steps = {}
        for row in history:
            items = {i.key or "/".join(i.nested_key): i.value_json for i in row.item}
            if "accuracy/task_0" in items:
                steps[int(items["_step"])] = float(items["accuracy/task_0"])
        assert steps == {c.step: pytest.approx(c.accuracies[0]) for c in run.curves}
        config = {i.key: json.loads(i.value_json) for i in meta.config.update}
        assert config["strategy.name"] == run.strategy and config["seed"] == run.seed
        artifacts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
        assert [a.name for a in artifacts] == [f"summary-{run.key}"]
        seen[meta.display_name] = True
    assert sorted(seen) == sorted(runs)


@needs("mlflow")
def test_mlflow_file_store_holds_params_metric_history_and_artifacts(
    factory: str, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    out = tmp_path / "grid"
    assert run_cli(factory, out, "--log", "mlflow") == 0
    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("grid")
    found = client.search_runs([experiment.experiment_id])
    assert len(found) == 2
    by_key = {r.key: r for r in load_runs(out)}
    for mlrun in found:
        run = by_key[mlrun.data.tags["lifelong.key"]]
        assert mlrun.data.params["strategy.name"] == run.strategy
        assert mlrun.data.params["seed"] == str(run.seed)
        assert mlrun.data.metrics["acc"] == pytest.approx(run.metrics["acc"])
        history = client.get_metric_history(mlrun.info.run_id, "accuracy/task_0")
        assert sorted((m.step, round(m.value, 6)) for m in history) == sorted(
            (c.step, round(c.accuracies[0], 6)) for c in run.curves
        )
        artifacts = {a.path for a in client.list_artifacts(mlrun.info.run_id)}
        assert {"summary.json", "figures"} <= artifacts
        assert mlrun.info.status == "FINISHED"


@needs("tensorboard")
def test_save_logs_api_results_and_merges_with_cli_runs(factory: str, tmp_path: Path) -> None:
    out = tmp_path / "both"
    assert run_cli(factory, out) == 0
    scenario = lifelong.OwnDataScenario(dataset=factory.removeprefix("dataset="))
    settings = {"batch_size": 4, "eval_every": 2}
    again = lifelong.run(scenario, "naive", seed=0, device="cpu", settings=settings)
    extra = lifelong.run(scenario, "naive", seed=5, device="cpu", settings=settings)
    lifelong.save([again, extra], out, log=["tensorboard"])
    runs = load_runs(out)
    assert len(runs) == 3 and again.key in {r.key for r in runs}  # replaced, not doubled
    assert len(list((out / "tensorboard").iterdir())) == 2


def test_an_unknown_tracker_is_one_line_exit_2(factory: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert run_cli(factory, out, "--log", "tensorbord") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'tensorboard'" in err
    assert not out.exists()


def test_log_without_out_is_one_line_exit_2(factory: str, capsys) -> None:
    argv = ["run", "own-data", "--set", factory, "-s", "naive", "--log", "mlflow"]
    assert main(argv) == 2
    assert "--log needs --out DIR" in capsys.readouterr().err


def test_a_tracker_not_installed_is_one_line_exit_2(
    factory: str, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    out = tmp_path / "out"
    assert run_cli(factory, out, "--log", "wandb") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'lifelong[wandb]'" in err
    assert not out.exists()


@needs("tensorboard")
def test_a_tracker_folder_not_writable_is_refused_before_any_run(
    factory: str, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "tensorboard").write_text("a file where the folder goes")
    assert run_cli(factory, out, "--log", "tensorboard") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--log tensorboard: cannot write to" in err
    assert sorted(p.name for p in out.iterdir()) == ["tensorboard"]


@needs("tensorboard")
def test_a_tracker_failing_mid_sweep_is_one_line_and_every_result_is_saved(
    factory: str, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lifelong.trackers import sinks

    real = sinks.TensorBoardSink.log

    def folder_gone(self, record) -> None:  # the folder turns into a file, then the real log
        if not self.root.exists():
            self.root.write_text("not a folder any more")
        real(self, record)

    monkeypatch.setattr(sinks.TensorBoardSink, "log", folder_gone)
    out = tmp_path / "out"
    assert run_cli(factory, out, "--log", "tensorboard") == 3
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "--log tensorboard failed" in line]
    assert len(lines) == 1 and "results in" in lines[0] and "are complete" in lines[0]
    assert len(load_runs(out)) == 2


@needs("tensorboard")
def test_save_with_an_unwritable_tracker_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "tensorboard").write_text("in the way")
    x = np.random.default_rng(0).random((20, 4)).astype(np.float32)
    data = lifelong.from_arrays(x, np.arange(20) % 2)
    result = lifelong.run(lifelong.scenario_from(data), "naive", device="cpu")
    with pytest.raises(lifelong.UserError, match="cannot write to"):
        lifelong.save(result, out, log=["tensorboard"])
    assert not (out / "summary.json").exists()
    shutil.rmtree(out)
