"""One workload in a fresh process, for end-to-end timings: ``python -m lifelong.bench.standalone``.

``hand NAME`` runs the hand-written loop, ``avalanche NAME`` Avalanche's loop; both build the
stream with lifelong's scenario code (a light import) so the data are identical.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    kind, name = argv
    import torch

    from lifelong.bench.harness import WORKLOADS
    from lifelong.plan import plan_runs

    torch.set_num_threads(1)
    (workload,) = [w for w in WORKLOADS if w.name == name]
    (spec,) = plan_runs(workload.scenario, [workload.strategy], [0], workload.lifelong_settings())
    stream = spec.scenario.build(0)
    kwargs = {
        "strategy": workload.strategy,
        "seed": 0,
        "lr": workload.lr,
        "batch_size": workload.batch_size,
    }
    if kind == "hand":
        from lifelong.bench.handloop import hand_loop

        hand_loop(stream, **kwargs)  # type: ignore[arg-type]
    else:
        from lifelong.bench.avalanche_side import avalanche_loop

        avalanche_loop(stream, **kwargs)  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
