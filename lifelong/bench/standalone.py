"""One workload in a fresh process, for end-to-end timings: ``python -m lifelong.bench.standalone``.

``hand NAME THREADS`` runs the hand-written loop, ``avalanche NAME THREADS`` Avalanche's loop,
on THREADS torch threads; both build the stream with lifelong's scenario code (a light
import) so the data are identical.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    kind, name, threads = argv
    import torch

    from lifelong.bench.harness import WORKLOADS, avalanche_run, hand_run
    from lifelong.composition.plan import plan_runs

    torch.set_num_threads(int(threads))
    (workload,) = [w for w in WORKLOADS if w.name == name]
    (spec,) = plan_runs(workload.scenario, [workload.strategy], [0], workload.lifelong_settings())
    stream = spec.scenario.build(0)
    if kind == "hand":
        hand_run(workload, stream)
    else:
        avalanche_run(workload, stream)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
