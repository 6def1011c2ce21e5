"""Reports: plots, matrices and a Markdown summary of a results directory.

Every figure and table reads one of two tidy frames built here: :func:`runs_frame` (a row per
evaluation, the source of matrices and curves) and :func:`metrics_frame` (a row per run, the
metrics exactly as ``summary.json`` holds them). pandas and matplotlib are imported inside
the functions, so ``import lifelong`` stays light.
"""

from __future__ import annotations

import math
import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lifelong.errors import UserError, closest
from lifelong.evaluation.result import CSV_COLUMNS, ONLINE_METRICS, RunResult
from lifelong.evaluation.results_dir import RESULTS, SUMMARY, check_out_dir, load_runs, write_atomic
from lifelong.evaluation.spread import BANDS, DEFAULT_BAND, describe, format_spread

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FORMATS", "make_report", "metrics_frame", "runs_frame", "setup_labels"]

FORMATS = ("png", "svg", "pdf")
COLUMNS = ("acc", "bwt", "fwt", "forgetting", "la")
HEADINGS = {
    "acc": "ACC",
    "bwt": "BWT",
    "fwt": "FWT",
    "forgetting": "forgetting",
    "la": "LA",
    "a_auc": "A_AUC",
    "a_last": "A_last",
    "lca": "LCA",
    "few_shot_1": "few-shot 1",
    "few_shot_5": "few-shot 5",
    "few_shot_10": "few-shot 10",
}
PACKAGES = ("lifelong", "torch", "numpy", "pandas", "matplotlib")
NOT_LEARNED_MARK = "⚠"


def make_report(
    results_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    fmt: str = "png",
    command: str | None = None,
    band: str = DEFAULT_BAND,
) -> Path:
    """Write plots, matrix CSVs and ``report.md`` for the runs of a results directory.

    Args:
        results_dir: a directory written by ``lifelong run --out`` (holds ``summary.json``).
        out_dir: where the report goes; defaults to ``results_dir/report``.
        fmt: image format, ``"png"``, ``"svg"`` or ``"pdf"``.
        command: the command shown as the one that regenerates the report; defaults to
            ``lifelong report RESULTS_DIR --out OUT_DIR``.
        band: the spread over seeds in tables and figures (:mod:`lifelong.evaluation.spread`):
            ``"ci"`` (95% confidence interval), ``"se"`` (standard error) or ``"range"``.

    Returns:
        The path of ``report.md``.

    Raises:
        UserError: the directory is missing, holds no runs, or ``fmt`` or ``band`` is
            unknown.
    """
    if fmt not in FORMATS:
        raise UserError(
            f"unknown report format '{fmt}'{closest(fmt, FORMATS)}; use png, svg or pdf"
        )
    if band not in BANDS:
        raise UserError(f"unknown band '{band}'{closest(band, BANDS)}; use ci, se or range")
    source = Path(results_dir)
    every = _load(source)
    runs = [r for r in every if r.status == "ok"]  # diverged and failed runs are listed apart
    if not runs:
        raise UserError(
            f"{source / SUMMARY}: every run diverged or failed, so there is nothing to plot; "
            "see the status and error of each run there"
        )
    out = check_out_dir(source / "report" if out_dir is None else out_dir)
    _require_packages()
    from lifelong.evaluation import plots

    frame = runs_frame(runs)
    table = metrics_frame(runs)
    _check_matrices(runs, frame, source)
    out.mkdir(parents=True, exist_ok=True)
    images = plots.write_figures(frame, table, out, fmt, band)
    _write_matrix_csvs(frame, out)
    command = command or _report_command(source, out, fmt, band)
    data = [os.path.relpath(source / name, out) for name in (SUMMARY, RESULTS)]
    text = _markdown(runs, frame, table, images, command, data, band)
    text += _online_section(plots.online_figures(runs, setup_labels(runs), out, fmt))
    text += _left_out([r for r in every if r.status != "ok"])
    write_atomic(out / "report.md", text)
    return out / "report.md"


def runs_frame(runs: Sequence[RunResult]) -> pd.DataFrame:
    """The tidy frame of evaluations: one row per (run, evaluation point, evaluated task).

    Columns are those of ``results.csv`` (``point`` is ``init``, ``curve`` or ``task_end``)
    plus ``label`` (the setup's name in plots: the strategy, with the settings that tell
    apart setups sharing a name), ``key`` (the run) and ``task`` (the evaluated task's name).
    A run saved without curves gets its ``init`` and ``task_end`` rows from R and b, with
    ``step`` missing.
    """
    import pandas as pd

    labels = setup_labels(runs)
    parts = []
    for run, label in zip(runs, labels, strict=True):
        part = pd.DataFrame(run.rows() or _matrix_rows(run), columns=list(CSV_COLUMNS))
        # An evaluation every k steps can fall on a task's last step; only the final
        # evaluation of a task (after ``after_task``) is its row of R.
        end = part["point"] == "task_end"
        again = part.duplicated(["after_task", "eval_task", "point"], keep="last")
        part.loc[end & again, "point"] = "curve"
        part.insert(0, "label", label)
        part["key"] = run.key
        part["task"] = [run.task_names[j] for j in part["eval_task"]]
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True)
    frame["step"] = frame["step"].astype("Int64")
    return frame


def metrics_frame(runs: Sequence[RunResult]) -> pd.DataFrame:
    """One row per run: label, strategy, seed, the summary metrics (NaN where undefined),
    wall seconds and device, exactly as ``summary.json`` records them, and ``not_learned``
    (:meth:`RunResult.not_learned`: why the run looks like it learned nothing, or "")."""
    import pandas as pd

    rows = [
        {
            "label": label,
            "strategy": r.strategy,
            "seed": r.seed,
            **r.metrics,
            "wall_s": r.wall_s,
            "device": r.device,
            "key": r.key,
            "not_learned": r.not_learned(),
        }
        for r, label in zip(runs, setup_labels(runs), strict=True)
    ]
    order = {label: i for i, label in enumerate(dict.fromkeys(row["label"] for row in rows))}
    frame = pd.DataFrame(rows)
    frame["order"] = frame["label"].map(order)
    return frame.sort_values(["order", "seed"], ignore_index=True).drop(columns="order")


def _require_packages() -> None:
    try:
        import matplotlib  # noqa: F401
        import pandas  # noqa: F401
        import scipy  # noqa: F401
    except ImportError as error:
        raise UserError(f"reports need {error.name}: pip install 'lifelong[reports]'") from None


def _load(source: Path) -> list[RunResult]:
    if not source.is_dir():
        what = "does not exist" if not source.exists() else "is not a directory"
        raise UserError(f"results directory {source} {what}; give the --out of `lifelong run`")
    if not (source / SUMMARY).is_file():
        raise UserError(
            f"{source} has no {SUMMARY}, so it is not a results directory; "
            "give the --out directory of `lifelong run`"
        )
    runs = load_runs(source)
    if not runs:
        raise UserError(f"{source / SUMMARY} holds no runs; run `lifelong run ... --out {source}`")
    return runs


def _matrix_rows(run: RunResult) -> list[dict[str, Any]]:
    """init and task_end rows from b and R, for a run saved without curves (step unknown)."""
    points: list[tuple[str, int, int | None, list[float]]] = [("init", -1, 0, run.init)]
    points += [("task_end", i, None, row) for i, row in enumerate(run.matrix)]
    head = (run.strategy, run.seed, run.scenario)
    return [
        dict(zip(CSV_COLUMNS, (*head, point, task, step, j, a), strict=True))
        for point, task, step, values in points
        for j, a in enumerate(values)
    ]


def setup_labels(runs: Sequence[RunResult]) -> list[str]:
    """The strategy name per run, plus the settings that differ where names collide."""
    setups = [_flat({k: v for k, v in r.config.items() if k != "seed"}) for r in runs]
    groups: dict[str, list[dict[str, Any]]] = {}
    for run, setup in zip(runs, setups, strict=True):
        groups.setdefault(run.strategy, []).append(setup)
    varying = {}
    for name, group in groups.items():
        every = dict.fromkeys(k for setup in group for k in setup)
        varying[name] = sorted(k for k in every if len({_value(s.get(k)) for s in group}) > 1)
    labels = []
    for run, setup in zip(runs, setups, strict=True):
        keys = varying[run.strategy]
        short = [k.removesuffix(".name").rsplit(".", 1)[-1] for k in keys]
        if len(set(short)) < len(short):  # the same key in two sections: keep the section
            short = [k.removesuffix(".name") for k in keys]
        extra = ", ".join(f"{s}={_value(setup.get(k))}" for s, k in zip(short, keys, strict=True))
        labels.append(f"{run.strategy} ({extra})" if extra else run.strategy)
    return labels


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _value(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, bool):
        return str(value).lower()
    return "none" if value is None else str(value)


def _check_matrices(runs: Sequence[RunResult], frame: pd.DataFrame, source: Path) -> None:
    """The frame's R and b must be the summary's, so that figures and tables agree."""
    import numpy as np

    from lifelong.evaluation.plots import run_matrices

    labels = frame.drop_duplicates("key").set_index("key")["label"]
    matrices = run_matrices(frame)
    for run in runs:
        R, b = matrices[(labels[run.key], run.seed)]
        if R.shape != np.shape(run.matrix) or not (
            np.allclose(R, run.matrix, equal_nan=True) and np.allclose(b, run.init)
        ):
            raise UserError(
                f"{source / SUMMARY}: {run.strategy} seed {run.seed}: its curves disagree "
                "with its matrix; the file was edited or damaged, re-run that run"
            )


def _write_matrix_csvs(frame: pd.DataFrame, out: Path) -> None:
    """Every run's forgetting and forward-transfer matrix, long format, defined cells only."""
    import numpy as np
    import pandas as pd

    from lifelong.evaluation import metrics
    from lifelong.evaluation.plots import run_matrices

    tables: dict[str, list[dict[str, Any]]] = {"forgetting": [], "forward_transfer": []}
    for (label, seed), (R, b) in run_matrices(frame).items():
        run = frame[(frame["label"] == label) & (frame["seed"] == seed)]
        names = run.groupby("eval_task")["task"].first()
        matrices = {
            "forgetting": metrics.forgetting_matrix(R),
            "forward_transfer": metrics.forward_transfer_matrix(R, b),
        }
        for kind, values in matrices.items():
            tables[kind] += [
                {
                    "label": label,
                    "strategy": run["strategy"].iloc[0],
                    "seed": seed,
                    "after_task": i,
                    "eval_task": j,
                    "task": names[j],
                    kind: values[i, j],
                }
                for i, j in zip(*np.nonzero(np.isfinite(values)), strict=True)
            ]
    for kind, rows in tables.items():
        columns = ["label", "strategy", "seed", "after_task", "eval_task", "task", kind]
        text = pd.DataFrame(rows, columns=columns).to_csv(index=False, lineterminator="\n")
        write_atomic(out / f"{kind}_matrix.csv", text)


def _markdown(
    runs: Sequence[RunResult],
    frame: pd.DataFrame,
    table: pd.DataFrame,
    images: dict[str, Any],
    command: str,
    data: list[str],
    band: str,
) -> str:
    matrices = []
    for label, kinds in images["per_label"].items():
        matrices += [f"### {label}", ""]
        matrices += [f"![{kind} matrix of {label}]({name})" for kind, name in kinds.items()]
        if "forgetting" not in kinds:
            matrices.append("Forgetting and forward transfer: n/a (needs >= 2 tasks).")
        matrices.append("")
    return _TEMPLATE.format(
        title="Report: " + ", ".join(dict.fromkeys(r.scenario for r in runs)),
        labels=", ".join(dict.fromkeys(table["label"])),
        command=command,
        metrics_table="\n".join(_metrics_table(table, band)),
        spread=describe(band)[0].upper() + describe(band)[1:],
        transfer_note=TRANSFER_NOTE if images["transfer_is_minus_b"] else "",
        **{name: images[name] for name in ("metrics", "average_accuracy", "curves")},
        matrices="\n".join(matrices),
        names_note=_names_note(frame),
        config="\n".join(_config_table(runs, table)),
        runs="\n".join(_runs_table(table)),
        environment="\n".join(_environment(table)),
        summary=data[0],
        results=data[1],
        n_rows=len(frame),
        n_runs=len(runs),
    )


_TEMPLATE = """\
# {title}

Regenerate this report: `{command}`

Compared: {labels}; {n_runs} runs in all.

## Metrics

{metrics_table}

{spread}; the same in every figure below (`lifelong report --band ci|se|range` chooses).
ACC, BWT, FWT: Lopez-Paz & Ranzato 2017, BWT and FWT normalised by T - 1; forgetting:
Chaudhry et al. 2018 (max-based); LA: Riemer et al. 2019. `n/a`: undefined for a one-task
stream.

![ACC, BWT, FWT and forgetting per strategy]({metrics})

## Average accuracy over the tasks seen so far

![Average accuracy against tasks learned]({average_accuracy})

## Catastrophic forgetting: accuracy of every task during training

![Accuracy of each task over training steps]({curves})

## Matrices

Accuracy R (with the init row b), forgetting and forward transfer, mean over seeds; the
forgetting and the transfer heatmaps each use one colour scale for every strategy. Every
run's forgetting and forward-transfer matrices are in
[forgetting_matrix.csv](forgetting_matrix.csv) and
[forward_transfer_matrix.csv](forward_transfer_matrix.csv).{names_note}{transfer_note}

{matrices}
## Configuration

{config}

## Runs

{runs}

## Environment

{environment}

Data: [summary.json]({summary}), [results.csv]({results}) ({n_rows} evaluations).
"""


TRANSFER_NOTE = """

Forward-transfer heatmaps are left out: no run has any accuracy on a task before training
it (R[i][j] = 0 for j > i, as a class-incremental head that never predicts classes it has
not been trained on does), so every strategy's transfer matrix R - b would be the same -b,
the init row of its accuracy heatmap negated. FWT in the metrics table is -mean(b) for the
same reason."""


ONLINE_CAPTIONS = {
    "anytime": "Anytime accuracy (Koh et al. 2022): accuracy on a fixed-size sample of the test "
    "data of the classes seen so far, every `anytime_every` samples; A_AUC is its area over "
    "samples seen, normalised (the mean when evenly spaced).",
    "lca": "Learning curves of new tasks (Chaudhry et al. 2019): accuracy on a task after b of "
    "its batches (b = 0 before its first), mean over tasks; LCA is its mean over b.",
    "few_shot": "Few-shot adaptation: accuracy on each task after k SGD steps on its first "
    "samples, on a copy of the weights the stream reached just before it.",
}


def _online_section(images: dict[str, str]) -> str:
    """The report's section on the online metrics ("" when none was measured)."""
    if not images:
        return ""
    lines = ["", "## Online metrics", ""]
    for kind, name in images.items():
        lines += [ONLINE_CAPTIONS[kind], "", f"![{kind}]({name})", ""]
    return "\n".join(lines)


def _left_out(runs: Sequence[RunResult]) -> str:
    """A section naming the runs that diverged or failed (they are in no figure or table)."""
    if not runs:
        return ""
    lines = ["", "## Runs left out", ""]
    lines += ["| strategy | seed | status | reason |", "|---|---:|---|---|"]
    for run in runs:
        reason = (run.error or "").strip().splitlines()
        shown = reason[-1] if reason else ""
        lines.append(f"| {run.strategy} | {run.seed} | {run.status} | {shown.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def _names_note(frame: pd.DataFrame) -> str:
    varying = frame.groupby(["label", "eval_task"])["task"].nunique().gt(1).any()
    if not varying:
        return ""
    return (
        " Task names differ between seeds here (random rotation angles, say), so the figures "
        "number the tasks; each run's own names are in the CSV files."
    )


def _metrics_table(table: pd.DataFrame, band: str) -> list[str]:
    from lifelong.evaluation.plots import band_table

    columns = [*COLUMNS, *(c for c in ONLINE_METRICS if c in table)]  # online: where measured
    head = "| strategy | seeds | " + " | ".join(HEADINGS[c] for c in columns) + " | wall s / run |"
    lines = [head, "|---|---:|" + "---:|" * (len(columns) + 1)]
    stats = {c: band_table(table, ["label"], c, band).set_index("label") for c in columns}
    for label, runs in table.groupby("label", sort=False):
        marked = f"{label} {NOT_LEARNED_MARK}" if runs["not_learned"].astype(bool).any() else label
        cells = []
        for c in columns:
            row = stats[c].loc[label]
            cells.append(format_spread(row["mean"], row["low"], row["high"], band))
        wall = runs["wall_s"].mean()
        lines.append(f"| {marked} | {len(runs)} | " + " | ".join(cells) + f" | {wall:.1f} |")
    if table["not_learned"].astype(bool).any():
        lines += ["", f"{NOT_LEARNED_MARK}: a seed of this setup did not learn (see Runs)."]
    return lines


def _not_learned_note(table: pd.DataFrame) -> list[str]:
    """Below a table: which runs are marked and why (nothing when none is)."""
    flagged = table[table["not_learned"].astype(bool)]
    if flagged.empty:
        return []
    lines = ["", f"{NOT_LEARNED_MARK} did not learn (accuracy near chance, within a tenth of the"]
    lines[-1] += " way from chance to 1):"
    lines.append("")
    lines += [f"- {r.label} seed {r.seed}: {r.not_learned}" for r in flagged.itertuples()]
    return lines


def _runs_table(table: pd.DataFrame) -> list[str]:
    names = [*COLUMNS, "bti"]
    lines = [
        "| strategy | seed | "
        + " | ".join(HEADINGS.get(c, c.upper()) for c in names)
        + " | wall s | device |",
        "|---|---:|" + "---:|" * (len(names) + 1) + "---|",
    ]
    for row in table.itertuples(index=False):
        values = ["n/a" if math.isnan(v) else f"{v:.4f}" for v in (getattr(row, c) for c in names)]
        label = f"{row.label} {NOT_LEARNED_MARK}" if row.not_learned else row.label
        lines.append(
            f"| {label} | {row.seed} | "
            + " | ".join(values)
            + f" | {row.wall_s:.2f} | {row.device} |"
        )
    return lines + _not_learned_note(table)


def _config_table(runs: Sequence[RunResult], table: pd.DataFrame) -> list[str]:
    """The settings every setup shares, then those that differ, one column per setup."""
    setups: dict[str, dict[str, str]] = {}
    labels = table.set_index("key")["label"]
    for run in runs:
        config = _flat({k: v for k, v in run.config.items() if k != "seed"})
        setups.setdefault(labels[run.key], {k: f"`{_value(v)}`" for k, v in config.items()})
    for label, seeds in table.groupby("label", sort=False)["seed"]:
        setups[label]["seeds"] = ",".join(map(str, seeds))
    keys = list(dict.fromkeys(k for setup in setups.values() for k in setup))
    first = next(iter(setups.values()))
    same = [k for k in keys if all(s.get(k) == first.get(k) for s in setups.values())]
    lines = ["| setting | value |", "|---|---|", *(f"| {k} | {first[k]} |" for k in same)]
    differ = [k for k in keys if k not in same]
    if differ:
        lines += ["", "| setting | " + " | ".join(setups) + " |", "|---|" + "---|" * len(setups)]
        for key in differ:
            lines.append(f"| {key} | " + " | ".join(s.get(key, "") for s in setups.values()) + " |")
    return lines


def _environment(table: pd.DataFrame) -> list[str]:
    from importlib import metadata

    versions = []
    for package in PACKAGES:
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} (not installed)")
    devices = ", ".join(sorted(set(table["device"])))
    total = table["wall_s"].sum()
    return [
        f"Device: {devices}. Wall time: {total:.1f} s over all runs (each run's is listed "
        "under Runs).",
        "",
        f"Packages when this report was made: {', '.join(versions)}.",
    ]


def _report_command(source: Path, out: Path, fmt: str, band: str) -> str:
    parts = ["lifelong", "report", str(source), "--out", str(out)]
    parts += ["--format", fmt] if fmt != "png" else []
    return shlex.join(parts + (["--band", band] if band != DEFAULT_BAND else []))
