"""Compact tables from the class-incremental results directories (see reports/class-incremental.md).

python reports/class-incremental/table.py DIR [DIR ...]
    prints markdown; from DIR/summary.json when there is one (and writes DIR/runs.csv from
    it), else from the committed DIR/runs.csv
python reports/class-incremental/table.py --merge NEW DIR
    replaces DIR/runs.csv's rows of the runs in NEW (a results directory with summary.json),
    matched by strategy, memory and seed; every other row stays as it is, in its place;
    runs DIR did not have are appended
python reports/class-incremental/table.py --brief DIR
    prints only ACC and wall seconds per strategy and memory (the checks' tables)
"""

import csv
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

METRICS = ("acc", "bwt", "forgetting", "la", "wall_s")
HEADER = ["strategy", "memory", "seed", "status", *METRICS]


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


def summary_rows(results: Path) -> list[list[str]]:
    """One runs.csv row per run of results/summary.json."""
    runs = json.loads((results / "summary.json").read_text())["runs"]
    rows = []
    for r in runs:
        size = memory_size(r["config"]["strategy"])
        values = (round(r.get(k) or 0.0, 4) for k in METRICS)
        rows.append([str(v) for v in (r["strategy"], size, r["seed"], r["status"], *values)])
    return rows


def write_rows(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(HEADER)
        out.writerows(rows)


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if rows[0] != HEADER:
        sys.exit(f"{path}: expected the header {','.join(HEADER)}")
    return rows[1:]


def merge(new: Path, into: Path) -> None:
    fresh = {tuple(r[:3]): r for r in summary_rows(new)}
    rows = [fresh.pop(tuple(r[:3]), r) for r in read_rows(into / "runs.csv")]
    write_rows(into / "runs.csv", rows + list(fresh.values()))


def table(results: Path, brief: bool = False) -> None:
    if (results / "summary.json").exists():
        write_rows(results / "runs.csv", summary_rows(results))
    runs = [dict(zip(HEADER, r, strict=True)) for r in read_rows(results / "runs.csv")]
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    order: list[str] = []
    for r in runs:
        groups[(r["strategy"], r["memory"])].append(r)
        if r["strategy"] not in order:
            order.append(r["strategy"])
    print(f"\n{results}\n")
    if brief:
        print("| strategy | memory | seeds | ACC % | wall s / run | status |")
        print("|---|---|---|---|---|---|")
    else:
        print(
            "| strategy | memory | seeds | ACC % | BWT % | forgetting % | LA % "
            "| wall s / run | status |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
    ranked = sorted(groups.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1]))
    for (name, size), rs in ranked:
        ok = [r for r in rs if r["status"] == "ok"]
        status = ", ".join(sorted({r["status"] for r in rs}))

        def col(key: str, ok: list[dict] = ok) -> str:
            return cell([float(r[key]) for r in ok])

        wall = statistics.mean(float(r["wall_s"]) for r in rs)
        if brief:
            print(f"| {name} | {size} | {len(ok)} | {col('acc')} | {wall:.1f} | {status} |")
            continue
        print(
            f"| {name} | {size} | {len(ok)} | {col('acc')} | {col('bwt')} "
            f"| {col('forgetting')} | {col('la')} | {wall:.1f} | {status} |"
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--merge"]:
        merge(Path(sys.argv[2]), Path(sys.argv[3]))
    elif sys.argv[1:2] == ["--brief"]:
        for arg in sys.argv[2:]:
            table(Path(arg), brief=True)
    else:
        for arg in sys.argv[1:]:
            table(Path(arg))
