"""The tables of reports/online.md from the suites' results directories.

    python reports/online/table.py results/online/split results/online/split-mer ...
    python reports/online/table.py --l2l results/online/l2l results/online/l2l-inits ...

One table per directory: a row per strategy, a column per stream variant (boundaries,
blurry, gradual), each cell ``ACC / A_AUC / LCA_10`` as the mean over seeds (and the seed
count when not 3). With ``--l2l``, one learning-to-learn table over all the directories: a
row per strategy, few-shot accuracy on task 0 and over all tasks after 1 / 5 / 10 steps
(means over seeds), LCA_10, A_AUC and ACC (mean +- 95% CI over seeds, t distribution).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

import numpy as np

KEYS = ("boundaries", "blurry", "gradual")


def variant(config: dict) -> str:
    stream = config.get("stream", {})
    parts = [f"{k}={stream[k]}" for k in KEYS if k in stream and k != "boundaries"]
    return ", ".join(parts) or "clean switch"


def table(path: str) -> str:
    with open(f"{path}/summary.json") as file:
        runs = json.load(file)["runs"]
    cells: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for run in runs:
        if run["status"] == "ok":
            cells[(run["strategy"], variant(run["config"]))].append(run)
    variants = list(dict.fromkeys(v for _, v in cells))
    strategies = list(dict.fromkeys(s for s, _ in cells))
    lines = [
        "| strategy | " + " | ".join(variants) + " |",
        "|---|" + "---|" * len(variants),
    ]
    for strategy in strategies:
        row = []
        for v in variants:
            group = cells.get((strategy, v), [])
            if not group:
                row.append("")
                continue
            means = [np.mean([r[m] for r in group]) for m in ("acc", "a_auc", "lca")]
            seeds = "" if len(group) == 3 else f" ({len(group)} seed{'s' * (len(group) > 1)})"
            row.append(" / ".join(f"{m:.3f}" for m in means) + seeds)
        lines.append(f"| {strategy} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def ci(values: list[float]) -> str:
    """``mean ± half-width`` of the 95% CI over seeds (t distribution)."""
    from scipy import stats

    mean = float(np.mean(values))
    if len(values) < 2:
        return f"{mean:.3f}"
    half = stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / len(values) ** 0.5
    return f"{mean:.3f} ± {half:.3f}"


def l2l_table(paths: list[str]) -> str:
    runs: dict[str, list[dict]] = defaultdict(list)
    for path in paths:
        with open(f"{path}/summary.json") as file:
            for run in json.load(file)["runs"]:
                if run["status"] == "ok":
                    runs[run["strategy"]].append(run)
    lines = [
        "| init | few-shot on task 0: 1 / 5 / 10 steps | few-shot, mean over tasks: 1 / 5 / 10"
        " steps | LCA_10 | A_AUC | ACC |",
        "|---|---|---|---:|---:|---:|",
    ]
    for strategy, group in runs.items():
        first = np.mean([r["online"]["few_shot"][0] for r in group], axis=0)
        every = [np.mean([r[f"few_shot_{k}"] for r in group]) for k in (1, 5, 10)]
        cells = [
            " / ".join(f"{v:.3f}" for v in first),
            " / ".join(f"{v:.3f}" for v in every),
            *(ci([r[m] for r in group]) for m in ("lca", "a_auc", "acc")),
        ]
        seeds = "" if len(group) == 3 else f" ({len(group)} seeds)"
        lines.append(f"| {strategy}{seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1] == "--l2l":
        print(l2l_table(sys.argv[2:]))
    else:
        for directory in sys.argv[1:]:
            print(f"{directory}:\n\n{table(directory)}\n")
