"""The figures of a report, each drawn from the tidy frames of :mod:`lifelong.evaluation.report`.

Every figure is a matplotlib ``Figure`` built without pyplot, so nothing needs a display and a
caller's own backend (a notebook's, say) is left alone. This module imports matplotlib and
scipy; import it lazily, as :func:`lifelong.evaluation.report.make_report` does.

Colours are Okabe & Ito's colour-blind-safe palette (strategies, tasks), ``cividis`` for
accuracy and the diverging ``RdBu`` centred at 0 for forgetting and transfer.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure
from numpy.typing import NDArray

from lifelong.evaluation import metrics
from lifelong.evaluation.spread import BANDS, DEFAULT_BAND, SHORT

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

    from lifelong.evaluation.result import RunResult

__all__ = [
    "METRICS",
    "PALETTE",
    "anytime_figure",
    "average_accuracy_figure",
    "band_table",
    "curve_table",
    "curves_figure",
    "few_shot_figure",
    "lca_figure",
    "matrix_figure",
    "metrics_figure",
    "online_figures",
    "run_matrices",
    "save_figure",
    "transfer_is_minus_b",
    "write_figures",
]

PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
"""Okabe & Ito 2008, "Color Universal Design", most legible on white first."""
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
METRICS = {
    "acc": "ACC\n(higher is better)",
    "bwt": "BWT\n(higher is better)",
    "fwt": "FWT\n(higher is better)",
    "forgetting": "forgetting\n(lower is better)",
}
MATRIX_KINDS = {  # colour map, colour-bar label, title
    "accuracy": ("cividis", "accuracy", "accuracy R[i][j], with the init row b"),
    "forgetting": (
        "RdBu_r",
        "forgetting (accuracy lost)\n(hatched: undefined)",
        "forgetting F[k][j] = max_{j<=l<k} R[l][j] - R[k][j] (Chaudhry 2018)",
    ),
    "transfer": (
        "RdBu",
        "accuracy above random init\n(hatched: undefined)",
        "forward transfer R[i][j] - b[j] on tasks not trained yet (j > i)",
    ),
}
# viridis without its palest yellows, which vanish on white
_TASK_CMAP = mpl.colors.ListedColormap(mpl.colormaps["viridis"](np.linspace(0, 0.85, 256)))
_STYLE: dict[Any, Any] = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.hashsalt": "lifelong",
}


def band_table(
    frame: pd.DataFrame, by: list[str], value: str, band: str = DEFAULT_BAND
) -> pd.DataFrame:
    """Mean and band (:mod:`lifelong.evaluation.spread`) of ``value`` over each ``by`` group.

    Returns:
        ``by`` columns plus ``mean``, ``low`` and ``high`` (the band's edges: mean ± t_{0.975,
        n-1} s / sqrt(n) for ``ci``, mean ± s / sqrt(n) for ``se``, min and max for
        ``range``; NaN for n < 2) and ``n`` (non-NaN values in the group).
    """
    from scipy import stats

    if band not in BANDS:
        raise ValueError(f"unknown band '{band}'; use one of {', '.join(BANDS)}")
    out = frame.groupby(by, sort=True)[value].agg(["mean", "std", "count", "min", "max"])
    out = out.reset_index()
    n = out["count"].to_numpy(dtype=float)
    mean = out["mean"].to_numpy(dtype=float)
    if band == "range":
        low, high = out["min"].to_numpy(dtype=float), out["max"].to_numpy(dtype=float)
    else:
        half = out["std"].to_numpy(dtype=float) / np.sqrt(np.maximum(n, 1))
        if band == "ci":
            half = half * stats.t.ppf(0.975, np.maximum(n - 1, 1))
        low, high = mean - half, mean + half
    out["low"] = np.where(n >= 2, low, np.nan)
    out["high"] = np.where(n >= 2, high, np.nan)
    return out.rename(columns={"count": "n"}).drop(columns=["std", "min", "max"])


def curve_table(frame: pd.DataFrame, band: str = DEFAULT_BAND) -> pd.DataFrame:
    """The points of the forgetting curves: per evaluated task, in training order.

    A task's end can be evaluated twice at one step: by the every-``eval_every``
    schedule before ``after_task`` and after it (the row of R). A strategy that changes the
    model in ``after_task`` (GDumb retrains there) has different accuracies at the two, so
    they are kept apart by ``phase`` (0: during training, 1: after the task's
    ``after_task``) and drawn in that order, a vertical step, never averaged.

    Returns:
        :func:`band_table` over ``eval_task, step, phase``, sorted in that order.
    """
    points = frame[frame["step"].notna()]
    points = points.assign(phase=(points["point"] == "task_end").astype(int))
    return band_table(points, ["eval_task", "step", "phase"], "accuracy", band)


def run_matrices(frame: pd.DataFrame) -> dict[tuple[str, int], tuple[NDArray, NDArray]]:
    """The accuracy matrix R ``[T, T]`` and init row b ``[T]`` of every (label, seed) run."""
    out = {}
    for (label, seed), run in frame.groupby(["label", "seed"], sort=True):
        ends = run[run["point"] == "task_end"]
        R = ends.pivot(index="after_task", columns="eval_task", values="accuracy")
        b = run[run["point"] == "init"].sort_values("eval_task")["accuracy"]
        out[(str(label), int(seed))] = (R.sort_index().to_numpy(float), b.to_numpy(float))
    return out


LABELLED_CELLS = 24
"""Matrices of up to this many tasks get a value in every cell and a tick per task; larger
ones (a 100-task stream) are drawn in a figure of fixed size, unlabelled, every few ticks."""


def matrix_figure(frame: pd.DataFrame, label: str, kind: str) -> Figure:
    """Heatmap of one setup's accuracy, forgetting or forward-transfer matrix, mean over seeds.

    ``kind`` is ``"accuracy"`` (R with the init row b on top), ``"forgetting"``
    (:func:`lifelong.evaluation.metrics.forgetting_matrix`) or ``"transfer"``
    (:func:`lifelong.evaluation.metrics.forward_transfer_matrix`); the per-seed matrices are
    averaged.
    Forgetting and transfer share one colour scale over every setup in ``frame``.
    """
    values, n_seeds = _mean_matrix(frame, label, kind)
    names = _task_names(frame[frame["label"] == label])
    rows = [f"after {n}" for n in names]
    if kind == "accuracy":
        rows = ["init (b)", *rows]
        vmin, vmax = 0.0, 1.0
    else:
        every = [_mean_matrix(frame, other, kind)[0] for other in frame["label"].unique()]
        vmax = max(max(float(np.nanmax(np.abs(m), initial=0.0)) for m in every), 0.1)
        vmin = -vmax
    cmap, bar, what = MATRIX_KINDS[kind]
    seeds = f"mean over {n_seeds} seed{'s' * (n_seeds != 1)}"
    title = f"{label}\n{what}\n{seeds}"
    # wide enough for the cells and for the title (about 0.07 inch per character); past
    # LABELLED_CELLS tasks the cells shrink to keep the figure near 10 inches, unlabelled
    cell = 0.62 if len(names) <= LABELLED_CELLS else 7.4 / len(names)
    width = max(cell * len(names) + 2.6, 0.07 * max(map(len, title.splitlines())) + 0.6)
    height = max(3.2, cell / 0.62 * 0.42 * len(rows) + 1.8)
    with mpl.rc_context(_STYLE):
        fig = Figure(figsize=(width, height), layout="constrained")
        ax = fig.add_subplot()
        image = _heatmap(ax, values, rows, names, cmap=cmap, vmin=vmin, vmax=vmax)
        if kind == "accuracy":
            ax.axhline(0.5, color="white", linewidth=2.5)
        fig.colorbar(image, ax=ax, label=bar)
        ax.set_xlabel("evaluated task j")
        ax.set_ylabel("after training task i" if kind != "forgetting" else "after task k")
        ax.set_title(title)
    return fig


def _mean_matrix(frame: pd.DataFrame, label: str, kind: str) -> tuple[NDArray, int]:
    runs = run_matrices(frame[frame["label"] == label])
    if kind == "accuracy":
        stack = [np.vstack([b, R]) for R, b in runs.values()]
    elif kind == "forgetting":
        stack = [metrics.forgetting_matrix(R) for R, _ in runs.values()]
    else:
        stack = [metrics.forward_transfer_matrix(R, b) for R, b in runs.values()]
    return _nanmean(np.stack(stack)), len(runs)


def curves_figure(frame: pd.DataFrame, band: str = DEFAULT_BAND) -> Figure:
    """Accuracy of every task over training steps, one panel per setup, task ends dashed.

    Several seeds are drawn as their mean with a shaded ``band`` (:mod:`lifelong.evaluation.spread`,
    clipped to [0, 1]); the points are :func:`curve_table`'s.
    """
    labels = list(dict.fromkeys(frame["label"]))
    cols = min(len(labels), 2)
    nrows = -(-len(labels) // cols)
    n_tasks = int(frame["eval_task"].max()) + 1
    with mpl.rc_context(_STYLE):
        fig = Figure(figsize=(6.2 * cols + 1.6, 3.6 * nrows + 0.4), layout="constrained")
        axes = fig.subplots(nrows, cols, squeeze=False, sharey=True).ravel()
        for ax, label in zip(axes, labels, strict=False):
            _curves_panel(ax, frame[frame["label"] == label], label, band)
        for ax in axes[len(labels) :]:
            ax.set_visible(False)
        if n_tasks > len(PALETTE):
            norm = mpl.colors.Normalize(0, n_tasks - 1)
            mappable = mpl.cm.ScalarMappable(norm=norm, cmap=_TASK_CMAP)
            fig.colorbar(mappable, ax=list(axes[: len(labels)]), label="evaluated task (index)")
        else:  # one entry per task over all panels: setups may have different tasks
            entries: dict[tuple[str, Any], Any] = {}
            for ax in axes[: len(labels)]:
                for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
                    entries.setdefault((name, handle.get_color()), handle)
            handles = list(entries.values())
            names = [name for name, _ in entries]
            fig.legend(handles, names, loc="outside right upper", title="evaluated task")
    return fig


def _curves_panel(ax: Axes, sub: pd.DataFrame, label: str, band: str) -> None:
    sub = sub[sub["step"].notna()]
    seeds = sub["seed"].nunique()
    if not (sub["point"] == "task_end").any():
        ax.set_title(f"{label}: no curve data")
        ax.text(
            0.5,
            0.5,
            "saved without curves;\nsee its accuracy matrix",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        ax.set_xticks([])
        return
    curves = curve_table(sub, band)
    names = _task_names(sub)
    for task, line in curves.groupby("eval_task"):
        color = _task_color(int(task), len(names))
        x = line["step"].to_numpy(float)
        ax.plot(x, line["mean"], color=color, linewidth=1.4, label=names[int(task)])
        if seeds > 1:
            lo, hi = line["low"].clip(0, 1), line["high"].clip(0, 1)
            alpha = 0.18 if len(names) <= 5 else 0.1  # many bands: fainter, lines stay legible
            ax.fill_between(x, lo, hi, color=color, alpha=alpha, lw=0)
    ends = sub[sub["point"] == "task_end"].groupby("after_task")["step"].mean().to_numpy(float)
    for end in ends[:-1]:
        ax.axvline(end, color="0.4", linestyle="--", linewidth=0.8)
    if len(ends):
        _name_spans(ax, ends, names[: len(ends)])
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("training step (batches); dashed: end of a task")
    ax.set_ylabel("test accuracy")
    spread = f"mean and {SHORT[band]} over {seeds} seeds" if seeds > 1 else "1 seed"
    ax.set_title(f"{label} ({spread}); top: task being trained")


def _name_spans(ax: Axes, ends: NDArray, names: list[str]) -> None:
    """Name the task trained in each span on a top axis, skipping names that would collide."""
    centers = (np.r_[0.0, ends[:-1]] + ends) / 2
    keep: list[int] = []
    for i, center in enumerate(centers):
        if not keep or center - centers[keep[-1]] >= 0.06 * ends[-1]:
            keep.append(i)
    top = ax.secondary_xaxis("top")
    top.set_xticks(
        centers[keep], [names[i] for i in keep], fontsize=7, rotation=30 if len(keep) > 6 else 0
    )
    top.tick_params(length=0)


def average_accuracy_figure(frame: pd.DataFrame, band: str = DEFAULT_BAND) -> Figure:
    """Average accuracy over the tasks seen so far after each task, setups overlaid, with a
    shaded ``band`` over seeds (:mod:`lifelong.evaluation.spread`)."""
    import pandas as pd

    rows = []
    for (label, seed), (R, _) in run_matrices(frame).items():
        for k, value in enumerate(metrics.average_accuracy_curve(R)):
            rows.append({"label": label, "seed": seed, "tasks": k + 1, "value": value})
    table = band_table(pd.DataFrame(rows), ["label", "tasks"], "value", band)
    labels = list(dict.fromkeys(frame["label"]))
    with mpl.rc_context(_STYLE):
        fig = Figure(figsize=(8.0, 4.0), layout="constrained")
        ax = fig.add_subplot()
        for i, label in enumerate(labels):
            line = table[table["label"] == label]
            color, marker = PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)]
            n = int(line["n"].max())
            ax.plot(
                line["tasks"],
                line["mean"],
                color=color,
                marker=marker,
                label=f"{label} ({n} seed{'s' * (n != 1)})",
            )
            if n > 1:
                lo, hi = line["low"].clip(0, 1), line["high"].clip(0, 1)
                ax.fill_between(line["tasks"], lo, hi, color=color, alpha=0.18, linewidth=0)
                if len(line) == 1:  # a band needs two points: draw the interval as a bar
                    ax.errorbar(
                        line["tasks"], line["mean"], yerr=_whiskers(line), color=color, capsize=4
                    )
        ax.set_xticks(sorted(table["tasks"].unique()))
        ax.set_xlim(0.7, table["tasks"].max() + 0.3)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("tasks learned")
        ax.set_ylabel("mean accuracy over tasks seen so far")
        ax.set_title(f"Average accuracy (mean and {SHORT[band]} over seeds)")
        fig.legend(loc="outside right upper")
    return fig


def metrics_figure(table: pd.DataFrame, band: str = DEFAULT_BAND) -> Figure:
    """ACC, BWT, FWT and forgetting per setup: bars at the mean, ``band`` whiskers, seeds
    as dots.

    Args:
        table: one row per run with ``label``, ``seed`` and the keys of :data:`METRICS`.
        band: the whiskers' spread (:mod:`lifelong.evaluation.spread`).
    """
    labels = list(dict.fromkeys(table["label"]))
    x = np.arange(len(labels))
    colors = [PALETTE[i % len(PALETTE)] for i in range(len(labels))]
    rotate = len(labels) > 3 or max(map(len, labels)) > 12
    with mpl.rc_context(_STYLE):
        rows = 2 if len(labels) > 3 else 1  # many setups: a 2 x 2 grid keeps panels wide
        width = 1.5 + (4 // rows) * (0.9 + 0.45 * len(labels))
        fig = Figure(figsize=(width, 1.5 + 2.9 * rows), layout="constrained")
        axes = fig.subplots(rows, 4 // rows, sharex=True, squeeze=False).ravel()
        for ax, (key, title) in zip(axes, METRICS.items(), strict=True):
            stats = band_table(table, ["label"], key, band).set_index("label").reindex(labels)
            ax.bar(x, stats["mean"].fillna(0), color=colors, alpha=0.8, width=0.6)
            ax.errorbar(
                x,
                stats["mean"],
                yerr=_whiskers(stats),
                fmt="none",
                ecolor="black",
                capsize=4,
                linewidth=1.2,
            )
            for i, label in enumerate(labels):
                seeds = table.loc[table["label"] == label, key].to_numpy(float)
                jitter = np.linspace(-0.15, 0.15, len(seeds)) if len(seeds) > 1 else 0.0
                ax.plot(i + jitter, seeds, "o", color="black", markersize=3)
            if stats["mean"].isna().all():
                ax.text(
                    0.5,
                    0.5,
                    "n/a\n(needs >= 2 tasks)",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                )
                ax.set_yticks([])
            else:
                ax.axhline(0, color="0.3", linewidth=0.8)
            if key == "acc":
                ax.set_ylim(0, 1)
            ax.set_xlim(-0.6, len(labels) - 0.4)
            ax.set_xticks(
                x, labels, rotation=30 if rotate else 0, ha="right" if rotate else "center"
            )
            ax.set_title(title)
        for ax in axes[:: 4 // rows]:
            ax.set_ylabel("value")
        several = bool((table.groupby("label")["seed"].count() > 1).any())
        fig.suptitle(
            f"bar: mean over seeds; whisker: {SHORT[band]}; dot: one seed"
            if several
            else "one seed per strategy: no confidence interval",
            fontsize=9,
        )
    return fig


def _whiskers(stats: pd.DataFrame) -> NDArray:
    """Error-bar lengths below and above the mean, ``[2, n]`` (a range is not symmetric)."""
    mean = stats["mean"].to_numpy(dtype=float)
    return np.vstack([mean - stats["low"].to_numpy(float), stats["high"].to_numpy(float) - mean])


def save_figure(fig: Figure, path: Path, fmt: str) -> None:
    """Write ``fig`` to ``path`` via a temporary sibling and a rename (no timestamp inside)."""
    dated = {"png": {}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # created with the umask's mode
    try:
        with mpl.rc_context(_STYLE):
            fig.savefig(tmp, format=fmt, dpi=110, metadata=dated[fmt])
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_figures(
    frame: pd.DataFrame, table: pd.DataFrame, out: Path, fmt: str, band: str = DEFAULT_BAND
) -> dict[str, Any]:
    """Draw and save every figure of a report into ``out``.

    Returns:
        File names: ``metrics``, ``average_accuracy``, ``curves``, and ``per_label``
        mapping each setup to its ``accuracy`` (and, with >= 2 tasks, ``forgetting`` and
        ``transfer``) heatmap; ``transfer_is_minus_b`` tells when the transfer heatmaps
        were left out because no run has any accuracy on a task before training it, so
        every one would be ``-b`` (:func:`transfer_is_minus_b`).
    """
    names: dict[str, Any] = {"per_label": {}}
    for name, draw in (
        ("metrics", lambda: metrics_figure(table, band)),
        ("average_accuracy", lambda: average_accuracy_figure(frame, band)),
        ("curves", lambda: curves_figure(frame, band)),
    ):
        names[name] = _save(draw(), out, f"{name}.{fmt}", fmt)
    n_tasks = frame.groupby("label")["eval_task"].max() + 1
    names["transfer_is_minus_b"] = transfer_is_minus_b(frame)
    transfer = [] if names["transfer_is_minus_b"] else ["transfer"]
    used: set[str] = set()
    for label in dict.fromkeys(frame["label"]):
        stem = _file_stem(label, used)
        kinds = ["accuracy"] + (["forgetting", *transfer] if n_tasks[label] > 1 else [])
        names["per_label"][label] = {
            kind: _save(matrix_figure(frame, label, kind), out, f"{kind}_{stem}.{fmt}", fmt)
            for kind in kinds
        }
    return names


def transfer_is_minus_b(frame: pd.DataFrame) -> bool:
    """Whether every run scores exactly 0 on every task before training it (``R[i][j] = 0``
    for ``j > i``), so that every forward-transfer matrix ``R - b`` is ``-b``: what a
    class-incremental head does, which never predicts classes it has not been trained on."""
    matrices = run_matrices(frame).values()
    ahead = [R[np.triu_indices_from(R, 1)] for R, _ in matrices if len(R) > 1]
    return bool(ahead) and all(np.all(np.nan_to_num(a) == 0) for a in ahead)


def _save(fig: Figure, out: Path, name: str, fmt: str) -> str:
    save_figure(fig, out / name, fmt)
    return name


def _file_stem(label: str, used: set[str]) -> str:
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in label).strip("_") or "run"
    base, n = stem, 1
    while stem in used:
        n += 1
        stem = f"{base}_{n}"
    used.add(stem)
    return stem


def _heatmap(ax: Axes, values: NDArray, rows: list[str], cols: list[str], **style: Any) -> Any:
    # undefined cells (NaN) are transparent over a hatched background, unlike any value
    cmap = mpl.colormaps[style.pop("cmap")].with_extremes(bad=(0, 0, 0, 0))
    ax.patch.set(facecolor="white", edgecolor="0.8", hatch="///")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, aspect="auto", **style)
    size = 9 if len(cols) <= 8 else 7 if len(cols) <= 14 else 5
    for (i, j), v in np.ndenumerate(values if len(cols) <= LABELLED_CELLS else values[:0]):
        if np.isfinite(v):
            r, g, b, _ = image.cmap(image.norm(v))
            ink = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.45 else "white"
            shown = f"{v:.2f}".replace("-0.00", "0.00")
            text = ax.text(j, i, shown, ha="center", va="center", color=ink, fontsize=size)
            text.set_in_layout(False)  # inside its cell: skipping it keeps the layout fast
    step = -(-len(cols) // LABELLED_CELLS)  # every task's tick, or every step-th of many
    ax.set_xticks(range(0, len(cols), step), cols[::step], rotation=45 if len(cols) > 6 else 0)
    ax.set_yticks(range(0, len(rows), step), rows[::step])
    ax.spines[:].set_visible(False)
    return image


def _nanmean(stack: NDArray) -> NDArray:
    # Cells that are NaN in every seed (undefined entries) stay NaN without a warning.
    count = np.isfinite(stack).sum(axis=0)
    total = np.nansum(stack, axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _task_names(runs: pd.DataFrame) -> list[str]:
    """Task names by index; ``task j`` when they differ across the runs (e.g. random angles)."""
    names = runs.groupby("eval_task", sort=True)["task"].unique()
    if all(len(n) == 1 for n in names):
        return [str(n[0]) for n in names]
    return [f"task {j}" for j in names.index]


def _task_color(task: int, n_tasks: int) -> Any:
    if n_tasks <= len(PALETTE):
        return PALETTE[task]
    return _TASK_CMAP(task / max(n_tasks - 1, 1))


# ---- online metrics (stream options; lifelong.evaluation.anytime) --------------------------------

STREAM_KEYS = ("boundaries", "blurry", "gradual", "incremental", "imbalance")


def online_figures(
    runs: Sequence[RunResult], labels: Sequence[str], out: Path, fmt: str
) -> dict[str, str]:
    """Draw and save the figures of the online metrics the runs recorded: ``anytime``
    (accuracy against samples seen), ``lca`` (accuracy on a new task over its first
    batches) and ``few_shot`` (accuracy after 1, 5, 10 steps, per setup); only those
    measured. Returns the file names by kind."""
    names: dict[str, str] = {}
    for kind, draw in (
        ("anytime", anytime_figure),
        ("lca", lca_figure),
        ("few_shot", few_shot_figure),
    ):
        if any(r.online.get(kind) for r in runs):
            names[kind] = _save(draw(runs, labels), out, f"{kind}.{fmt}", fmt)
    return names


def _by_stream(
    runs: Sequence[RunResult], labels: Sequence[str]
) -> dict[str, dict[str, list[RunResult]]]:
    """Runs grouped by scenario and stream variant (a panel each), then by setup label."""
    panels: dict[str, dict[str, list[RunResult]]] = {}
    for run, label in zip(runs, labels, strict=True):
        stream = run.config.get("stream", {})
        variant = ", ".join(f"{k}={stream[k]}" for k in STREAM_KEYS if k in stream)
        panels.setdefault(f"{run.scenario} {variant}".strip(), {}).setdefault(label, []).append(run)
    return panels


def _panels(count: int, width: float = 5.6) -> tuple[Figure, list[Axes]]:
    cols = min(count, 2)
    rows = -(-count // cols)
    fig = Figure(figsize=(width * cols + 1.8, 3.4 * rows + 0.4), layout="constrained")
    axes = list(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


def anytime_figure(runs: Sequence[RunResult], labels: Sequence[str]) -> Figure:
    """Anytime accuracy (Koh et al. 2022) against samples seen, mean over seeds, one panel
    per stream variant; tasks shaded in turn, blends (``gradual``) hatched around each
    true boundary."""
    panels = _by_stream(runs, labels)
    with mpl.rc_context(_STYLE):
        fig, axes = _panels(len(panels))
        for ax, (title, setups) in zip(axes, panels.items(), strict=True):
            first = next(iter(setups.values()))[0]
            ends = [0, *first.online.get("task_ends", [])]
            width = first.config.get("stream", {}).get("gradual", 0)
            for t, (lo, hi) in enumerate(itertools.pairwise(ends)):
                ax.axvspan(lo, hi, color="0.93" if t % 2 else "white", lw=0)
            for end in ends[1:-1]:
                if width:
                    ax.axvspan(
                        end - width // 2,
                        end + width - width // 2,
                        fill=False,
                        hatch="///",
                        edgecolor="0.75",
                        lw=0,
                    )
                ax.axvline(end, color="0.5", linestyle="--", linewidth=0.7)
            for i, (label, group) in enumerate(setups.items()):
                points = [
                    np.array(r.online["anytime"], dtype=float)
                    for r in group
                    if r.online.get("anytime")
                ]
                if not points:
                    continue
                n = min(len(p) for p in points)
                stack = np.stack([p[:n] for p in points])
                ax.plot(
                    stack[0, :, 0],
                    np.nanmean(stack[:, :, 1], axis=0),
                    color=PALETTE[i % len(PALETTE)],
                    linewidth=1.3,
                    label=label,
                )
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(title)
            ax.set_xlabel("samples seen (shaded: true tasks; dashed: true boundaries)")
            ax.set_ylabel("anytime accuracy, seen classes")
            ax.legend(fontsize=7, loc="lower left")
    return fig


def lca_figure(runs: Sequence[RunResult], labels: Sequence[str]) -> Figure:
    """LCA's curve Z_b (Chaudhry et al. 2019): accuracy on a new task after b of its
    batches, mean over tasks and seeds, one panel per stream variant."""
    panels = _by_stream(runs, labels)
    with mpl.rc_context(_STYLE):
        fig, axes = _panels(len(panels), width=4.6)
        for ax, (title, setups) in zip(axes, panels.items(), strict=True):
            for i, (label, group) in enumerate(setups.items()):
                curves = [
                    np.array(r.online["lca"]).mean(axis=0) for r in group if r.online.get("lca")
                ]
                if curves:
                    z = np.mean(curves, axis=0)
                    ax.plot(
                        np.arange(len(z)),
                        z,
                        marker=MARKERS[i % len(MARKERS)],
                        markersize=3,
                        color=PALETTE[i % len(PALETTE)],
                        label=f"{label} (LCA {z.mean():.3f})",
                    )
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(title)
            ax.set_xlabel("batches of the new task trained (b)")
            ax.set_ylabel("accuracy on the new task, Z_b")
            ax.legend(fontsize=7, loc="upper left")
    return fig


def few_shot_figure(runs: Sequence[RunResult], labels: Sequence[str]) -> Figure:
    """Few-shot adaptation: accuracy on each task after 1, 5 and 10 SGD steps on its first
    samples from the weights reached before it, mean over tasks; bars per setup (init),
    whiskers the range over seeds."""
    from lifelong.evaluation.anytime import FEW_SHOT_STEPS

    setups: dict[str, list[NDArray]] = {}
    for run, label in zip(runs, labels, strict=True):
        if run.online.get("few_shot"):
            setups.setdefault(label, []).append(metrics.few_shot(run.online["few_shot"]))
    with mpl.rc_context(_STYLE):
        fig = Figure(
            figsize=(1.6 + 1.1 * len(setups) * len(FEW_SHOT_STEPS) / 2, 3.6), layout="constrained"
        )
        ax = fig.subplots()
        width = 0.8 / max(len(setups), 1)
        x = np.arange(len(FEW_SHOT_STEPS))
        for i, (label, values) in enumerate(setups.items()):
            stack = np.stack(values)
            mean = stack.mean(axis=0)
            err = np.stack([mean - stack.min(axis=0), stack.max(axis=0) - mean])
            ax.bar(
                x + (i - (len(setups) - 1) / 2) * width,
                mean,
                width,
                yerr=err,
                capsize=2,
                color=PALETTE[i % len(PALETTE)],
                label=f"{label} ({len(values)} seeds)",
            )
        ax.set_xticks(x, [f"{k} step{'s' if k > 1 else ''}" for k in FEW_SHOT_STEPS])
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy on the task after k steps")
        ax.set_title("few-shot adaptation before each task (mean over tasks)")
        ax.legend(fontsize=7, loc="upper left")
    return fig
