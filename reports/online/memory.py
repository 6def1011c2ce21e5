"""Resident memory over a 100-task boundary-free Permuted-MNIST stream (issue 20, speed).

    python reports/online/memory.py            # prints the table reports/online.md quotes

One run of ``er`` on 100 permutations x 200 embedded training digits, boundaries hidden,
gradual switches over 100 samples, anytime accuracy every 1,000 samples on 500 test digits,
batch 10, one pass. A thread samples the process's resident set size (VmRSS) every 0.5 s;
the table gives it at each tenth of the run's wall time.
"""

from __future__ import annotations

import threading
import time

import lifelong


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            samples.append((time.perf_counter(), rss_mib()))
            time.sleep(0.5)

    settings = {
        "n_tasks": 100,
        "samples_per_task": 200,
        "boundaries": "hidden",
        "gradual": 100,
        "anytime_every": 1000,
        "anytime_size": 500,
        "batch_size": 10,
        "eval_every": 0,
    }
    before = rss_mib()
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    start = time.perf_counter()
    result = lifelong.run("permuted-mnist", "er", device="cpu", settings=settings)
    done.set()
    thread.join()
    wall = time.perf_counter() - start
    print(
        f"RSS before the run {before:.0f} MiB; run {wall:.0f} s; ACC {result.metrics['acc']:.3f}, "
        f"A_AUC {result.metrics['a_auc']:.3f}, {len(result.online['anytime'])} anytime evaluations"
    )
    print("| share of the run | RSS (MiB) |\n|---:|---:|")
    for tenth in range(1, 11):
        t = start + wall * tenth / 10
        rss = min(samples, key=lambda s: abs(s[0] - t))[1]
        print(f"| {tenth / 10:.0%} | {rss:.0f} |")
    late = [r for s, r in samples if s > start + wall * 0.2]
    print(f"after the first fifth: min {min(late):.0f} MiB, max {max(late):.0f} MiB")


if __name__ == "__main__":
    main()
