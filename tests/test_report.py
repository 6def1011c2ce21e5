"""Reports: every figure and table from one frame, numbers equal to summary.json, edge cases."""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from lifelong import Curve, RunResult, UserError
from lifelong.evaluation import metrics
from lifelong.evaluation.report import make_report, metrics_frame, runs_frame
from lifelong.evaluation.results_dir import SUMMARY, save_runs

COLUMNS = ("acc", "bwt", "fwt", "forgetting", "la")


def synthetic_run(strategy: str, seed: int, n_tasks: int, eval_every: int = 2) -> RunResult:
    """A run with a plausible R and b; ``eval_every`` 0 records no curve points.

    Each task lasts 4 steps, so with ``eval_every`` 2 a curve point falls on every task's
    last step, as the runner does: that step is evaluated twice.
    """
    rng = np.random.default_rng([seed, n_tasks, len(strategy)])
    R = np.triu(rng.uniform(0.0, 0.3, (n_tasks, n_tasks)), 1)
    R += np.tril(rng.uniform(0.3, 1.0, (n_tasks, n_tasks)))
    b = rng.uniform(0.0, 0.2, n_tasks)
    curves = [Curve(0, -1, b.tolist())]
    for i in range(n_tasks):
        for step in range(4 * i + 1, 4 * i + 5):
            if eval_every and step % eval_every == 0:
                noisy = np.clip(R[i] + rng.normal(0, 0.05, n_tasks), 0, 1)
                curves.append(Curve(step, i, noisy.tolist()))
        curves.append(Curve(4 * i + 4, i, R[i].tolist()))
    config = {
        "scenario": {"name": "toy", "n_tasks": n_tasks},
        "strategy": {"name": strategy},
        "protocol": {"eval_every": eval_every},
        "seed": seed,
    }
    return RunResult(
        scenario="toy",
        strategy=strategy,
        seed=seed,
        config=config,
        key=f"{strategy}-{seed}-{n_tasks}-{eval_every}",
        task_names=[f"t{j}" for j in range(n_tasks)],
        matrix=R.tolist(),
        init=b.tolist(),
        metrics=metrics.summarize(R, b),
        curves=curves,
        wall_s=1.5 + seed,
        device="cpu",
    )


def save(path: Path, runs: list[RunResult]) -> Path:
    save_runs(path, runs)
    return path


def referenced_files(report: Path) -> list[str]:
    return re.findall(r"\]\(([^)]+)\)", report.read_text())


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report of several strategies, three seeds (one strategy with one), three tasks."""
    runs = [synthetic_run(s, seed, 3) for s in ("naive", "er") for seed in range(3)]
    runs.append(synthetic_run("single", 0, 3))
    return make_report(save(tmp_path_factory.mktemp("many"), runs))


def check_files(report: Path, n_images: int) -> None:
    files = referenced_files(report)
    assert len([f for f in files if f.endswith(".png")]) == n_images
    for name in files:
        target = (report.parent / name).resolve()
        assert target.is_file() and target.stat().st_size > 0, name
    assert not list(report.parent.glob(".*tmp")), "a temporary file was left behind"


def test_report_of_many_strategies_seeds_and_tasks(many: Path) -> None:
    assert many.name == "report.md" and many.parent.name == "report"
    check_files(many, 3 + 3 * 3)  # 3 shared figures, 3 heatmaps per strategy
    assert [row[0] for row in parse_table(many.read_text(), "Metrics")] == ["naive", "er", "single"]


@pytest.mark.parametrize(("n_tasks", "seeds"), [(1, 1), (1, 3), (9, 1)])
def test_report_of_one_task_one_seed_many_tasks(tmp_path: Path, n_tasks: int, seeds: int) -> None:
    report = make_report(save(tmp_path, [synthetic_run("naive", s, n_tasks) for s in range(seeds)]))
    check_files(report, 3 + (3 if n_tasks > 1 else 1))
    text = report.read_text()
    (row,) = parse_table(text, "Metrics")
    assert row[2].endswith("± n/a") == (seeds == 1)
    if n_tasks == 1:  # BWT, FWT and forgetting are undefined
        assert row[3:6] == ["n/a", "n/a", "n/a"]
        assert "n/a (needs >= 2 tasks)" in text


def parse_table(text: str, heading: str) -> list[list[str]]:
    block = text.split(f"## {heading}\n\n", 1)[1].split("\n\n", 1)[0]
    return [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()[2:]]


def test_numbers_in_report_equal_summary_json(many: Path) -> None:
    text = many.read_text()
    summary = json.loads((many.parent.parent / SUMMARY).read_text())["runs"]
    for row in parse_table(text, "Runs"):
        (entry,) = [e for e in summary if e["strategy"] == row[0] and e["seed"] == int(row[1])]
        for cell, name in zip(row[2:8], [*COLUMNS, "bti"], strict=True):
            assert float(cell) == pytest.approx(entry[name], abs=5e-5)
        assert float(row[8]) == pytest.approx(entry["wall_s"], abs=5e-3)
    for row in parse_table(text, "Metrics"):
        entries = [e for e in summary if e["strategy"] == row[0]]
        assert int(row[1]) == len(entries)
        for cell, name in zip(row[2:7], COLUMNS, strict=True):
            values = [e[name] for e in entries]
            mean, _, half = cell.partition(" ± ")
            assert float(mean) == pytest.approx(statistics.fmean(values), abs=5e-4)
            if len(values) == 1:
                assert half == "n/a"
            else:
                t = stats.t.ppf(0.975, len(values) - 1)
                expected = t * statistics.stdev(values) / math.sqrt(len(values))
                assert float(half) == pytest.approx(expected, abs=5e-4)


def test_matrix_csvs_equal_the_metrics_functions(many: Path) -> None:
    runs = [synthetic_run(s, seed, 3) for s in ("naive", "er") for seed in range(3)]
    for name, kind in (("forgetting", "forgetting"), ("forward_transfer", "transfer")):
        table = pd.read_csv(many.parent / f"{name}_matrix.csv")
        for run in runs:
            R = np.array(run.matrix)
            if kind == "forgetting":
                expected = metrics.forgetting_matrix(R)
            else:
                expected = metrics.forward_transfer_matrix(R, run.init)
            got = np.full_like(expected, np.nan)
            mine = table[(table["strategy"] == run.strategy) & (table["seed"] == run.seed)]
            got[mine["after_task"], mine["eval_task"]] = mine[name]
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_runs_without_curve_points(tmp_path: Path) -> None:
    runs = [synthetic_run("naive", seed, 2, eval_every=0) for seed in range(2)]
    bare = synthetic_run("joint", 0, 2)
    bare.curves = []  # results saved without any curves: R and b only
    report = make_report(save(tmp_path, [*runs, bare]))
    frame = runs_frame([*runs, bare])
    assert set(frame["point"]) == {"init", "task_end"}
    assert frame.loc[frame["strategy"] == "joint", "step"].isna().sum() == 4  # R: 2 x 2
    assert all((report.parent / f).is_file() for f in referenced_files(report))


def test_diverged_and_failed_runs_are_listed_apart(tmp_path: Path) -> None:
    fine = [synthetic_run("naive", seed, 3) for seed in range(2)]
    diverged = synthetic_run("ewc", 0, 3)
    diverged.status, diverged.error = "diverged", "loss became NaN or infinite at task 1, step 7"
    diverged.matrix, diverged.curves = diverged.matrix[:2], diverged.curves[:5]  # stopped early
    failed = synthetic_run("mine", 0, 3)
    failed.status, failed.error = "failed", "Traceback ...\nValueError: bad shape"
    report = make_report(save(tmp_path, [*fine, diverged, failed])).read_text()
    left = parse_table(report, "Runs left out")
    assert [row[:3] for row in left] == [["ewc", "0", "diverged"], ["mine", "0", "failed"]]
    assert left[0][3].endswith("task 1, step 7") and left[1][3] == "ValueError: bad shape"
    assert [row[0] for row in parse_table(report, "Metrics")] == ["naive"]


def test_a_report_with_only_diverged_runs_says_so(tmp_path: Path) -> None:
    run = synthetic_run("ewc", 0, 2)
    run.status, run.error = "diverged", "loss became NaN or infinite at task 1, step 3"
    with pytest.raises(UserError, match="every run diverged or failed"):
        make_report(save(tmp_path, [run]))


def test_frame_is_one_row_per_evaluation_and_rebuilds_r_and_b() -> None:
    from lifelong.evaluation.plots import run_matrices

    runs = [synthetic_run("naive", seed, 4) for seed in range(2)]
    frame = runs_frame(runs)
    assert len(frame) == sum(len(run.rows()) for run in runs)
    assert {"label", "key", "task", "step", "accuracy"} <= set(frame.columns)
    # the evaluation that shares a task's last step is a curve point, not a second row of R
    ends = frame[frame["point"] == "task_end"]
    assert not ends.duplicated(["key", "after_task", "eval_task"]).any()
    for run in runs:
        R, b = run_matrices(frame)[("naive", run.seed)]
        assert R.tolist() == run.matrix and b.tolist() == run.init
    table = metrics_frame(runs)
    assert table["acc"].tolist() == [run.metrics["acc"] for run in runs]


def test_setups_sharing_a_strategy_name_are_told_apart() -> None:
    first, second = synthetic_run("naive", 0, 2), synthetic_run("naive", 0, 3)
    labels = set(runs_frame([first, second])["label"])
    assert labels == {"naive (n_tasks=2)", "naive (n_tasks=3)"}


@pytest.mark.parametrize("fmt", ["svg", "pdf"])
def test_other_image_formats(tmp_path: Path, fmt: str) -> None:
    runs = [synthetic_run("naive", 0, 1)]
    report = make_report(save(tmp_path / "res", runs), tmp_path / "out", fmt=fmt)
    images = [f for f in referenced_files(report) if not f.endswith((".csv", ".json"))]
    assert images and all(name.endswith(f".{fmt}") for name in images)
    head = (report.parent / images[0]).read_bytes()[:200]
    assert head.startswith(b"%PDF") if fmt == "pdf" else b"<svg" in head
    assert f"--format {fmt}" in report.read_text()


def test_regenerating_changes_nothing(tmp_path: Path) -> None:
    out = make_report(save(tmp_path, [synthetic_run("naive", s, 1) for s in range(2)])).parent
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    make_report(tmp_path)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_bad_inputs_fail_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    save_runs(tmp_path / "none", [])
    for path, words in (
        (tmp_path / "missing", "does not exist"),
        (tmp_path / "file", "not a directory"),
        (tmp_path / "empty", "not a results directory"),
        (tmp_path / "none", "holds no runs"),
    ):
        with pytest.raises(UserError, match=words) as error:
            make_report(path)
        assert "\n" not in str(error.value)
    res = save(tmp_path / "res", [synthetic_run("naive", 0, 2)])
    with pytest.raises(UserError, match="did you mean 'png'"):
        make_report(res, fmt="pgn")
    assert not (res / "report").exists()


def test_report_of_a_real_run(tmp_path: Path, make_stream) -> None:
    from lifelong.composition.plan import plan_runs
    from lifelong.execution.runner import execute

    (spec,) = plan_runs("split-mnist", ["naive"], [0], {"eval_every": 2, "batch_size": 8})
    runs = [execute(spec, make_stream("class"), torch.device("cpu"))]
    report = make_report(save(tmp_path, runs), command="lifelong run split-mnist --report")
    text = report.read_text()
    assert "Regenerate this report: `lifelong run split-mnist --report`" in text
    assert [row[0] for row in parse_table(text, "Runs")] == ["naive"]
    assert all((report.parent / f).is_file() for f in referenced_files(report))


def test_task_names_that_differ_between_seeds_are_numbered() -> None:
    from lifelong.evaluation.plots import matrix_figure

    runs = [synthetic_run("naive", seed, 2) for seed in range(2)]
    runs[1].task_names = ["rot 17", "rot 44"]  # e.g. angles drawn per seed
    ax = matrix_figure(runs_frame(runs), "naive", "accuracy").axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["task 0", "task 1"]


def test_a_many_task_matrix_keeps_a_bounded_figure_without_cell_labels() -> None:
    """A 100-task stream's heatmap stays near 10 inches, with no value per cell and a tick
    for every few tasks; a short stream keeps a label in every cell."""
    from lifelong.evaluation.plots import LABELLED_CELLS, matrix_figure

    many = matrix_figure(runs_frame([synthetic_run("naive", 0, 100)]), "naive", "accuracy")
    width, height = many.get_size_inches()
    ax = many.axes[0]
    assert width < 12 and height < 12
    assert not ax.texts and len(ax.get_xticklabels()) <= LABELLED_CELLS
    few = matrix_figure(runs_frame([synthetic_run("naive", 0, 3)]), "naive", "accuracy").axes[0]
    assert len(few.texts) == 4 * 3 and len(few.get_xticklabels()) == 3


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda run: run.update(acc="x"), "'acc' is 'x', not a number"),
        (lambda run: run["matrix"][1].__setitem__(0, None), "row 1 has no accuracy"),
        (lambda run: run["init"].pop(), "'init' is not a list of 3 accuracies"),
        (lambda run: run["task_names"].pop(), "'matrix' is missing or has not one row per task"),
        (lambda run: run.update(seed="0"), "'seed' is missing or not an integer"),
        (lambda run: run.update(config=[]), "'config' is missing or not a dict"),
    ],
)
def test_a_damaged_summary_is_one_line_exit_2(tmp_path: Path, capsys, damage, fragment) -> None:
    import json

    from lifelong.cli import main

    out = save(tmp_path, [synthetic_run("naive", 0, 3), synthetic_run("naive", 1, 3)])
    summary = json.loads((out / "summary.json").read_text())
    damage(summary["runs"][1])
    (out / "summary.json").write_text(json.dumps(summary))
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run 1 is damaged" in err[0] and fragment in err[0], err


def test_a_duplicated_run_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    import json

    from lifelong.cli import main

    out = save(tmp_path, [synthetic_run("naive", 0, 3)])
    summary = json.loads((out / "summary.json").read_text())
    summary["runs"].append(summary["runs"][0])
    (out / "summary.json").write_text(json.dumps(summary))
    assert main(["report", str(out)]) == 2
    assert "appears twice" in capsys.readouterr().err


def test_a_run_that_learned_nothing_is_marked_in_the_report(tmp_path: Path) -> None:
    """La-MAML's class-IL collapse (issue 16): R = [0.995, 0, ...] on every row."""
    fine = [synthetic_run("er", seed, 5) for seed in range(2)]
    collapsed = synthetic_run("la-maml", 0, 5)
    collapsed.matrix = [[0.995, 0.0, 0.0, 0.0, 0.0] for _ in range(5)]
    collapsed.metrics = metrics.summarize(collapsed.matrix, collapsed.init)
    collapsed.curves = []  # the report takes R and b
    for run in [*fine, collapsed]:
        run.chance = 0.1
    reason = "4 of 5 tasks near chance right after training (t1, t2, t3, t4)"  # LA 0.199: not
    assert collapsed.not_learned() == f"{reason}; chance is 0.100"
    assert RunResult.from_summary(collapsed.summary()).not_learned() == collapsed.not_learned()
    text = make_report(save(tmp_path, [*fine, collapsed])).read_text()
    assert [row[0] for row in parse_table(text, "Metrics")] == ["er", "la-maml ⚠"]
    assert [row[0] for row in parse_table(text, "Runs")] == ["er", "er", "la-maml ⚠"]
    assert f"- la-maml seed 0: {reason}" in text


def gdumb_like(seed: int) -> RunResult:
    """A run whose model changes in after_task: the every-2-steps evaluation at a task's
    last step (before after_task) scores 0 on that task, the row of R after it 0.787."""
    run = synthetic_run("gdumb", seed, 3)
    for i, row in enumerate(run.matrix):
        before, after = [c for c in run.curves if c.task == i and c.step == 4 * i + 4]
        before.accuracies[i] = 0.0
        row[i] = after.accuracies[i] = 0.787
    run.metrics = metrics.summarize(run.matrix, run.init)
    return run


def test_curves_keep_both_evaluations_of_a_task_end_and_never_average_them() -> None:
    from lifelong.evaluation.plots import curve_table, curves_figure

    runs = [gdumb_like(seed) for seed in range(2)]
    frame = runs_frame(runs)
    points = curve_table(frame)
    at_end = points[(points["eval_task"] == 2) & (points["step"] == 12)]
    assert at_end["mean"].tolist() == pytest.approx([0.0, 0.787])  # before, then after
    figure = curves_figure(frame)
    (line,) = [ln for ln in figure.axes[0].get_lines() if ln.get_label() == "t2"]
    x, y = line.get_xdata(), line.get_ydata()
    assert list(y[x == 12]) == pytest.approx([0.0, 0.787])  # a vertical step, not 0.39


@pytest.mark.parametrize("band", ["se", "range"])
def test_the_band_is_an_option_and_the_report_says_which(tmp_path: Path, band: str) -> None:
    from lifelong.evaluation.plots import curves_figure

    runs = [synthetic_run("naive", seed, 3) for seed in range(3)]
    report = make_report(save(tmp_path, runs), band=band)
    text = report.read_text()
    (row,) = parse_table(text, "Metrics")
    values = [r.metrics["acc"] for r in runs]
    mean = statistics.fmean(values)
    if band == "se":
        assert row[2] == f"{mean:.3f} ± {statistics.stdev(values) / math.sqrt(3):.3f}"
        assert "Mean ± standard error over seeds" in text
    else:
        assert row[2] == f"{mean:.3f} ({min(values):.3f} to {max(values):.3f})"
        assert "Mean and range of the seeds (lowest to highest)" in text
    assert f"--band {band}" in text  # the regenerating command keeps it
    title = curves_figure(runs_frame(runs), band).axes[0].get_title()
    assert ("standard error" if band == "se" else "range of the seeds") in title


def test_identical_forward_transfer_panels_become_a_note(tmp_path: Path) -> None:
    """Class-IL: no accuracy on a task before training it, so every transfer matrix is -b."""
    runs = [synthetic_run(s, 0, 3) for s in ("naive", "er")]
    for run in runs:
        run.matrix, run.curves = np.tril(run.matrix).tolist(), []  # the report takes R, b
        run.metrics = metrics.summarize(run.matrix, run.init)
    text = make_report(save(tmp_path / "class", runs)).read_text()
    assert "Forward-transfer heatmaps are left out" in text
    assert not list((tmp_path / "class" / "report").glob("transfer_*"))
    mixed = make_report(save(tmp_path / "task", [synthetic_run("naive", 0, 3)])).read_text()
    assert "left out" not in mixed and "transfer_naive.png" in mixed


def test_committed_reports_name_only_files_in_the_repository() -> None:
    """Every relative link and every NAME.md a committed report mentions exists (a
    notes.md is a template printed into the report one folder up, and checked there)."""
    root = Path(__file__).resolve().parent.parent
    for report in (root / "reports").rglob("*.md"):
        if report.name == "notes.md":
            continue
        text = report.read_text()
        for target in re.findall(r"\]\(([^)#\s]+)", text):
            if "://" not in target:
                assert (report.parent / target).exists(), f"{report}: link to {target}"
        for name in re.findall(r"(?<![\w/.-])([A-Z][A-Z_]+\.md)\b", text):
            assert (root / name).exists(), f"{report}: names {name}, not in the repository"
