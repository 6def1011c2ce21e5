"""Print reports/classic-strategies.md: notes.md with the three sweeps' tables inserted.

Usage (from the repository root, after the sweeps at the top of the report):
    python reports/classic-strategies/table.py > reports/classic-strategies.md
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).parent
COMMANDS = [
    "lifelong sweep reports/classic-strategies/split-mnist.toml "
    "--out reports/classic-strategies/split-mnist",
    "lifelong sweep reports/classic-strategies/split-mnist-longer.toml "
    "--out reports/classic-strategies/split-mnist-longer",
    "lifelong sweep reports/classic-strategies/permuted-mnist.toml "
    "--out reports/classic-strategies/permuted-mnist",
    "lifelong report reports/classic-strategies/permuted-mnist "
    "--out reports/classic-strategies/permuted-mnist/report",
    "python reports/classic-strategies/table.py > reports/classic-strategies.md",
]
METRICS = ("acc", "bwt", "forgetting")


def load(name: str) -> dict[tuple[str, str], list[dict]]:
    """Runs of one sweep grouped by (setting, strategy), in the suite's strategy order."""
    runs = json.loads((HERE / name / "summary.json").read_text())["runs"]
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for run in runs:
        groups[(run["config"]["scenario"]["setting"], run["strategy"])].append(run)
    return groups


def cell(runs: list[dict], metric: str) -> str:
    values = [r[metric] for r in runs if r["status"] == "ok"]
    if len(values) < len(runs):
        return f"diverged ({len(runs) - len(values)}/{len(runs)})"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {spread:.3f}"


def table(groups: dict[tuple[str, str], list[dict]], settings: list[str]) -> list[str]:
    strategies = list(dict.fromkeys(s for _, s in groups))
    names = {"acc": "ACC", "bwt": "BWT", "forgetting": "F"}
    header = "| strategy | " + " | ".join(
        names[m] + (f" {s}" if len(settings) > 1 else "") for s in settings for m in METRICS
    )
    lines = [header + " |", "|---|" + "---:|" * (len(settings) * len(METRICS))]
    for strategy in strategies:
        cells = [cell(groups[(s, strategy)], m) for s in settings for m in METRICS]
        lines.append(f"| `{strategy}` | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    split, longer = load("split-mnist"), load("split-mnist-longer")
    permuted = load("permuted-mnist")
    tables = []
    for setting in ("class", "domain", "task"):
        tables.append(f"### Split-MNIST, {setting}-incremental (5 tasks of 2 digits)\n")
        tables.append("\n".join(table(split, [setting])) + "\n")
    tables.append("### Split-MNIST with ten epochs per task, regularizers at their defaults\n")
    tables.append("\n".join(table(longer, ["task", "domain"])) + "\n")
    tables.append("### Permuted-MNIST (10 tasks of 4,000 digits, domain-incremental)\n")
    tables.append("\n".join(table(permuted, ["domain"])) + "\n")
    notes = (HERE / "notes.md").read_text().strip()
    print("# Classic continual-learning strategies on mnist5k\n")
    print("Regenerate (CPU; about 30 minutes on two cores):\n")
    print("```\n" + "\n".join(COMMANDS) + "\n```\n")
    print(notes.replace("<!-- tables -->", "\n".join(tables).strip()))


if __name__ == "__main__":
    main()
