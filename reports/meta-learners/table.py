"""Print reports/meta-learners.md: notes.md with the La-MAML MNIST sweeps' tables inserted.

Usage (from the repository root, after the sweeps at the top of the report):
    python reports/meta-learners/table.py > reports/meta-learners.md
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).parent
SWEEPS = {
    "permutations": "Permuted MNIST, 20 tasks",
    "rotations": "Rotated MNIST, 20 tasks",
    "many-permutations": "Permuted MNIST, many permutations: 100 tasks of 200 digits",
}
COMMANDS = [
    *(
        f"lifelong sweep lamaml-mnist-{name} --out reports/meta-learners/{name} --jobs 2"
        for name in SWEEPS
    ),
    *(
        f"lifelong report reports/meta-learners/{name} --out reports/meta-learners/{name}/report"
        for name in SWEEPS
    ),
    "lifelong sweep reports/meta-learners/split-mnist-class.toml "
    "--out reports/meta-learners/split-mnist-class",
    "python reports/meta-learners/table.py > reports/meta-learners.md",
]
CLASS_IL = ("split-mnist-class", "Split-MNIST, class-incremental, every strategy at its defaults")
METRICS = {"acc": "ACC (RA)", "bwt": "BWT", "la": "LA", "forgetting": "F"}


def load(name: str) -> dict[str, list[dict]]:
    """Runs of one sweep grouped by strategy, in the suite's order."""
    runs = json.loads((HERE / name / "summary.json").read_text())["runs"]
    groups: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        groups[run["strategy"]].append(run)
    return groups


def cell(runs: list[dict], metric: str) -> str:
    values = [r[metric] for r in runs if r["status"] == "ok"]
    if not values:
        return "diverged"
    spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
    lost = len(runs) - len(values)
    note = f" ({lost} of {len(runs)} diverged)" if lost else ""
    return f"{statistics.fmean(values):.3f}{spread}{note}"


def table(groups: dict[str, list[dict]]) -> list[str]:
    header = "| strategy | " + " | ".join(METRICS.values()) + " | seeds | wall s (median) |"
    lines = [header, "|---|" + "---:|" * len(METRICS) + "---|---:|"]
    for strategy, runs in groups.items():
        cells = [cell(runs, m) for m in METRICS]
        seeds = ",".join(str(r["seed"]) for r in sorted(runs, key=lambda r: r["seed"]))
        wall = statistics.median(r["wall_s"] for r in runs)
        lines.append(f"| `{strategy}` | " + " | ".join(cells) + f" | {seeds} | {wall:.0f} |")
    return lines


def main() -> None:
    tables = []
    for name, title in SWEEPS.items():
        tables.append(f"### {title} ([report]({name_link(name)}))\n")
        tables.append("\n".join(table(load(name))) + "\n")
    name, title = CLASS_IL
    tables.append(f"### {title}\n")
    tables.append("\n".join(table(load(name))) + "\n")
    notes = (HERE / "notes.md").read_text().strip()
    print("# Online meta-learners on La-MAML's MNIST protocol\n")
    print("Regenerate (CPU; hours on two cores: La-MAML and MER take the longest):\n")
    print("```\n" + "\n".join(COMMANDS) + "\n```\n")
    print(notes.replace("<!-- tables -->", "\n".join(tables).strip()))


def name_link(name: str) -> str:
    return f"meta-learners/{name}/report/report.md"


if __name__ == "__main__":
    main()
