"""``lifelong bench``: the hand loop is a faithful floor and the report says what it measured."""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from lifelong.bench import run_bench
from lifelong.bench.avalanche_side import avalanche_available
from lifelong.bench.handloop import hand_loop
from lifelong.plan import plan_runs
from lifelong.runner import execute


def test_hand_loop_naive_learns_like_lifelong_naive() -> None:
    accs = {"hand": [], "lifelong": []}
    for seed in (0, 1, 2):
        (spec,) = plan_runs("split-mnist", ["naive"], [seed], {"eval_every": 0, "setting": "task"})
        stream = spec.scenario.build(seed)
        hand = hand_loop(stream, strategy="naive", seed=seed, lr=0.1, batch_size=32)
        ours = execute(spec, stream, torch.device("cpu")).matrix
        accs["hand"].append(statistics.fmean(hand[-1]))
        accs["lifelong"].append(statistics.fmean(ours[-1]))
    assert abs(statistics.fmean(accs["hand"]) - statistics.fmean(accs["lifelong"])) < 0.05


def test_bench_report_has_timings_ratios_and_targets(tmp_path: Path) -> None:
    out = tmp_path / "performance.md"
    run_bench(
        out,
        repeat=1,
        e2e_repeat=1,
        only="split-mnist class-IL, naive",
        with_memory=False,
        command="lifelong bench --test",
        say=lambda text: None,
    )
    text = out.read_text()
    assert text.startswith("# Performance")
    assert "Regenerate with: `lifelong bench --test`" in text
    assert "| split-mnist class-IL, naive | lifelong |" in text
    assert "| split-mnist class-IL, naive | hand loop |" in text
    assert "loop <= 1.2x hand loop" in text
    assert ("| split-mnist class-IL, naive | avalanche |" in text) == avalanche_available()
