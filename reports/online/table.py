"""The tables of reports/online.md from the suites' results directories.

    python reports/online/table.py results/online/split results/online/split-mer ...

One table per directory: a row per strategy, a column per stream variant (boundaries,
blurry, gradual), each cell ``ACC / A_AUC / LCA_10`` as the mean over seeds (and the seed
count when not 3).
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


if __name__ == "__main__":
    for directory in sys.argv[1:]:
        print(f"{directory}:\n\n{table(directory)}\n")
