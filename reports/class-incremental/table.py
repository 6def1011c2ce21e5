"""Compact tables from the class-incremental results directories (see reports/class-incremental.md).

python reports/class-incremental/table.py DIR [DIR ...]   # prints markdown; writes DIR/runs.csv
"""

import csv
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

METRICS = ("acc", "bwt", "forgetting", "la", "wall_s")


def memory_size(strategy: dict) -> object:
    if "memory" in strategy and isinstance(strategy["memory"], dict):
        return strategy["memory"].get("size", "-")
    return strategy.get("size", "-")


def cell(values: list[float], scale: float = 100.0) -> str:
    if not values:
        return "-"
    mean = statistics.mean(values) * scale
    if len(values) == 1:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {statistics.stdev(values) * scale:.1f}"


def table(results: Path) -> None:
    runs = json.loads((results / "summary.json").read_text())["runs"]
    groups: dict[tuple[str, object], list[dict]] = defaultdict(list)
    order: list[str] = []
    with open(results / "runs.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["strategy", "memory", "seed", "status", *METRICS])
        for r in runs:
            size = memory_size(r["config"]["strategy"])
            values = (round(r.get(k) or 0.0, 4) for k in METRICS)
            out.writerow([r["strategy"], size, r["seed"], r["status"], *values])
            groups[(r["strategy"], size)].append(r)
            if r["strategy"] not in order:
                order.append(r["strategy"])
    print(f"\n{results}\n")
    print(
        "| strategy | memory | seeds | ACC % | BWT % | forgetting % | LA % "
        "| wall s / run | status |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    ranked = sorted(groups.items(), key=lambda kv: (order.index(kv[0][0]), str(kv[0][1])))
    for (name, size), rs in ranked:
        ok = [r for r in rs if r["status"] == "ok"]
        status = ", ".join(sorted({r["status"] for r in rs}))
        print(
            f"| {name} | {size} | {len(ok)} | {cell([r['acc'] for r in ok])} "
            f"| {cell([r['bwt'] for r in ok])} "
            f"| {cell([r['forgetting'] for r in ok])} | {cell([r['la'] for r in ok])} "
            f"| {statistics.mean(r['wall_s'] for r in rs):.1f} | {status} |"
        )


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        table(Path(arg))
