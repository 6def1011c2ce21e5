"""``lifelong bench``: the same work through lifelong, a hand-written loop and Avalanche."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["run_bench"]


def run_bench(
    out: Path,
    *,
    repeat: int = 5,
    e2e_repeat: int = 3,
    only: str | None = None,
    avalanche: bool = True,
    threads: int = 1,
    with_memory: bool = True,
    command: str = "lifelong bench",
    say: Callable[[str], None] = lambda text: print(text, file=sys.stderr),
    allocator: Callable[[int], object] | None = None,
) -> Path:
    """Measure every workload (or those whose name contains ``only``); write the report.

    ``allocator``, given by the ``lifelong`` command, is called with each workload's
    training-step buffer size (bytes) before it is measured, to set glibc's malloc as
    ``lifelong run`` sets it for that workload
    (:func:`lifelong.execution.allocator.threshold_for`); the library leaves it alone."""
    import torch

    from lifelong.bench.avalanche_side import avalanche_available
    from lifelong.bench.harness import (
        ISSUE_LA_MAML,
        WORKLOADS,
        end_to_end,
        measure,
        part_seconds,
        profile_top,
        step_bytes,
    )
    from lifelong.bench.report import BenchRow, check_writable, render, write
    from lifelong.composition.plan import plan_runs
    from lifelong.errors import UserError

    check_writable(out)
    torch.set_num_threads(threads)
    workloads = [w for w in WORKLOADS if only is None or only in w.name]
    if not workloads:
        names = "; ".join(w.name for w in WORKLOADS)
        raise UserError(f"--only {only!r} matches no workload; workloads: {names}")
    if avalanche and not avalanche_available():
        say(
            "avalanche-lib is not importable here: its columns are left out "
            "(pip install -e '.[avalanche]' with torch 2.14.1 + torchvision 0.29.1)"
        )
        avalanche = False
    rows = []
    for workload in workloads:
        say(f"bench: {workload.name}")
        (spec,) = plan_runs(
            workload.scenario, [workload.strategy], [0], workload.lifelong_settings()
        )
        stream = workload.stream(spec)
        if allocator is not None:
            allocator(step_bytes(spec, stream))
        samples = sum(len(t.y_train) for t in stream.tasks) * spec.protocol.epochs
        loop = measure(workload, repeat, avalanche=avalanche)
        e2e = (
            {}
            if workload.images  # its data exist only in this process
            else end_to_end(workload, e2e_repeat, avalanche=avalanche, threads=threads)
        )
        rows.append(BenchRow(workload, samples, loop, e2e, spec.protocol.glances))
    issue_run = None
    if any(w.meta for w in workloads):
        say(f"bench: lifelong's La-MAML on {ISSUE_LA_MAML.name} ({repeat} x half a minute)")
        timing = measure(
            ISSUE_LA_MAML, repeat, avalanche=False, hand=False, warm_up=False, evaluations=True
        )["lifelong"]
        settings = ISSUE_LA_MAML.settings
        samples = settings["n_tasks"] * settings["samples_per_task"]
        issue_run = BenchRow(ISSUE_LA_MAML, samples, {"lifelong": timing}, {}, settings["glances"])
    from lifelong.bench.memory import rss_per_task

    task_memory = {w.name: rss_per_task(w) for w in workloads if w.images}
    classic = [w for w in workloads if not w.meta]
    conv = [w for w in workloads if w.images and w.strategy == "der++"]
    profiled = [*classic[min(1, len(classic) - 1) :][:1], *conv, *(w for w in workloads if w.meta)]
    profile = [(f": {w.name}", profile_top(w)) for w in profiled]
    parts = {w.name: part_seconds(w) for w in workloads if w.measured}
    memory = None
    if with_memory:
        from lifelong.bench.memory import memory_profile

        say("bench: resident memory over a 100-task permuted stream (er, memory 500)")
        memory = memory_profile("er")
    text = render(
        rows,
        command=command,
        repeat=repeat,
        profile=profile,
        threads=threads,
        memory=memory,
        issue_run=issue_run,
        parts=parts,
        task_memory=task_memory,
    )
    write(out, text)
    return out
