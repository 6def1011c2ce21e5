"""The Split Fashion-MNIST conv report's table (reports/fashion-cnn.md).

python reports/fashion-cnn/table.py DIR
    prints markdown, one table per setting; from DIR/summary.json when there is one (a
    results directory of `lifelong sweep fashion-cnn`; it writes reports/fashion-cnn/runs.csv
    from it), else from the committed reports/fashion-cnn/runs.csv
"""

import csv
import importlib.util
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

METRICS = ("acc", "bwt", "forgetting", "la", "wall_s")
HEADER = ["strategy", "setting", "seed", "status", *METRICS]
RUNS = Path(__file__).with_name("runs.csv")
_spec = importlib.util.spec_from_file_location(
    "class_incremental_table", Path(__file__).parents[1] / "class-incremental" / "table.py"
)
assert _spec is not None and _spec.loader is not None
_shared = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_shared)
cell = _shared.cell  # mean ± standard deviation in %, as the class-incremental tables


def rows_from_summary(summary: Path) -> list[dict[str, str]]:
    rows = []
    for run in json.loads(summary.read_text())["runs"]:
        values = {m: "" if run.get(m) is None else f"{run[m]:.4f}" for m in METRICS}
        setting = run["config"]["scenario"]["setting"]
        rows.append(
            {
                "strategy": run["strategy"],
                "setting": setting,
                "seed": str(run["seed"]),
                "status": run["status"],
                **values,
            }
        )
    return sorted(rows, key=lambda r: (r["setting"], r["strategy"], int(r["seed"])))


def table(rows: list[dict[str, str]]) -> str:
    groups: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        groups[row["setting"], row["strategy"]].append(row)
    out = []
    for setting in sorted({s for s, _ in groups}):
        out += [
            f"\n**{setting}-incremental** (mean ± SD over seeds, %; wall s: mean)\n",
            "| strategy | seeds | ACC | BWT | forgetting | LA | wall s / run | status |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for (s, strategy), runs in sorted(groups.items()):
            if s != setting:
                continue
            done = [r for r in runs if r["status"] == "ok"]
            values = {m: [float(r[m]) for r in done if r[m]] for m in METRICS}
            status = "ok" if len(done) == len(runs) else f"{len(runs) - len(done)} not ok"
            out.append(
                f"| {strategy.split(' (')[0]} | {len(runs)} | {cell(values['acc'])} | "
                f"{cell(values['bwt'])} | {cell(values['forgetting'])} | {cell(values['la'])} | "
                f"{statistics.mean(values['wall_s']) if values['wall_s'] else 0:.0f} | {status} |"
            )
    return "\n".join(out)


def main() -> None:
    source = Path(sys.argv[1]) / "summary.json" if len(sys.argv) > 1 else None
    if source is not None and source.exists():
        rows = rows_from_summary(source)
        with RUNS.open("w", newline="") as f:
            writer = csv.DictWriter(f, HEADER)
            writer.writeheader()
            writer.writerows(rows)
    else:
        rows = list(csv.DictReader(RUNS.open()))
    print(table(rows))


if __name__ == "__main__":
    main()
