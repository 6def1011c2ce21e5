"""Print reports/vectorize.md: seeds trained one by one against --vectorize, in one process.

Usage (from the repository root):
    python reports/vectorize.py > reports/vectorize.md
"""

from __future__ import annotations

import platform
import statistics
import time

import torch

from lifelong.plan import plan_runs
from lifelong.runner import execute
from lifelong.vectorized import run_vectorized, vectorizable

SEEDS = list(range(8))
STRATEGIES = ["naive", "er", "ewc", "la-maml"]
SETTINGS = {"eval_every": 0}
REPEAT = 3


def timed(work) -> tuple[float, object]:
    start = time.perf_counter()
    out = work()
    return time.perf_counter() - start, out


def measure(name: str) -> str:
    """One table row: a seed alone, eight one by one, eight vectorized (medians)."""
    cpu = torch.device("cpu")
    specs = plan_runs("split-mnist", [name], SEEDS, SETTINGS)
    streams = [s.scenario.build(s.seed) for s in specs]
    why = vectorizable(specs[0])
    one, eight, together, equal = [], [], [], True
    for _ in range(REPEAT):
        one.append(timed(lambda: execute(specs[0], streams[0], cpu))[0])
        if why:
            continue
        t8, seq = timed(lambda: [execute(s, t, cpu) for s, t in zip(specs, streams, strict=True)])
        tv, vec = timed(lambda: run_vectorized(specs, streams, cpu))
        eight.append(t8)
        together.append(tv)
        gaps = [
            abs(a - b)
            for s, v in zip(seq, vec, strict=True)
            for ra, rb in zip(s.matrix, v.matrix, strict=True)
            for a, b in zip(ra, rb, strict=True)
        ]
        equal &= max(gaps) < 1e-6
    base = statistics.median(one)
    if why:
        return f"| `{name}` | {base:.2f} | - | - | - | - | not vectorizable: {why} |"
    seq_s, vec_s = statistics.median(eight), statistics.median(together)
    return (
        f"| `{name}` | {base:.2f} | {seq_s:.2f} | {vec_s:.2f} | {vec_s / base:.2f}x | "
        f"{seq_s / vec_s:.2f}x | {'equal within 1e-6' if equal else '**differ**'} |"
    )


def main() -> None:
    torch.set_num_threads(1)
    rows = [measure(name) for name in STRATEGIES]
    print("# Seeds in parallel: `--vectorize`\n")
    print("Regenerate with: `python reports/vectorize.py > reports/vectorize.md`\n")
    print(
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch thread, torch "
        f"{torch.__version__}, CPU. Split-MNIST class-incremental on the embedded data, the "
        f"default protocol, no curves; seeds 0-7; medians of {REPEAT} repetitions in one "
        "process (training and evaluation; stream building excluded). Target (issue 6): 8 "
        "seeds vectorized in at most 2x the wall time of one seed.\n"
    )
    print(
        "| strategy | 1 seed s | 8 seeds one by one s | 8 seeds vectorized s | "
        "vectorized / 1 seed | speed-up over one by one | matrices |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    print("\n".join(rows))
    print(
        "\nThe target is missed on this CPU by the factor in the fifth column. The vectorized "
        "model does the eight seeds' arithmetic as one batched matmul per layer; on two "
        "cores these matmuls are compute-bound, so eight seeds cost about eight times one "
        "seed's arithmetic, and the speed-up over running the seeds one by one stays near "
        "1x (the sixth column): what batching saves in per-step Python and dispatch, the "
        "batched kernels lose against the single-seed ones, which fit the cache. The 2x "
        "target needs idle parallel capacity (a GPU; none was available to this project). "
        "What `--vectorize` guarantees here is equality: every seed's matrix equals its "
        "sequential run's. La-MAML's learner is sequential per sample and is not vectorized "
        "(`--vectorize` supports the `sgd` learner and refuses others in one line)."
    )


if __name__ == "__main__":
    main()
