"""Workloads, timing and the Markdown report of ``lifelong bench``.

Every workload runs the same work three ways in one process: lifelong's runner, a
hand-written PyTorch loop (:mod:`lifelong.bench.handloop`) and Avalanche's own loop
(:mod:`lifelong.bench.avalanche_side`, when avalanche-lib imports). Same stream tensors,
model, initial weights, batch size, epochs and hyperparameters. The loop time covers
building the model, the init evaluation, training and the evaluation after every task;
the stream is built once beforehand for all three. Repetitions are interleaved after one
warm-up each and the median is reported; end-to-end process times (imports and
data loading included) come
from fresh subprocesses.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from lifelong.composition.registry import parts
from lifelong.contracts.params import param_specs
from lifelong.contracts.stream import Stream

__all__ = [
    "WORKLOADS",
    "Timing",
    "Workload",
    "avalanche_run",
    "end_to_end",
    "hand_run",
    "measure",
    "profile_top",
    "step_bytes",
]


@dataclass(frozen=True)
class Workload:
    """One piece of work, described for all three implementations."""

    name: str
    scenario: str
    strategy: str  # lifelong spec; also the hand loop's and Avalanche's algorithm
    settings: dict[str, Any] = field(default_factory=dict)
    lr: float | None = 0.1  # None: the strategy has no such parameter (la-maml)
    batch_size: int = 32
    measured: tuple[str, ...] = ()  # functions whose own share of a run is reported (GEM's QP)
    images: bool = False  # on CIFAR-shaped random tensors (conv_loops), not the scenario's data

    def lifelong_settings(self) -> dict[str, Any]:
        lr = {} if self.lr is None else {"lr": self.lr}
        return {"eval_every": 0, "batch_size": self.batch_size, **lr, **self.settings}

    def stream(self, spec: Any) -> Stream:
        """The workload's stream: the scenario's, or CIFAR-shaped random tensors."""
        from lifelong.bench.conv_loops import cifar_shaped_stream

        if not self.images:
            return spec.scenario.build(0)
        return cifar_shaped_stream(
            self.settings.get("n_tasks", 5), self.settings.get("samples_per_task", 200)
        )

    @property
    def meta(self) -> bool:
        """An online meta-learner (La-MAML): reported per sample-glance."""
        return self.strategy.startswith("la-maml")


def step_bytes(spec: Any, stream: Stream) -> int:
    """The largest activation of one of ``spec``'s training steps on ``stream`` (bytes; a
    batch and its replay batch), as ``lifelong run`` measures it to set the allocator."""
    from lifelong.models.axis import activation_bytes, build_model

    torch.manual_seed(0)
    model = build_model(spec.protocol, stream)
    return activation_bytes(model, stream) * spec.training_rows()


PERMUTED = {"n_tasks": 10, "samples_per_task": 1000}
LA_MAML = {
    "n_tasks": 5,
    "samples_per_task": 500,
    "glances": 1,  # Avalanche's LaMAML has no glances
    "replay.size": 200,
    "replay.batch": 10,
    "la-maml.look_ahead": "sum",  # the official per-sample inner step, as its peers take
}
ISSUE_LA_MAML = Workload(
    "permuted-mnist 20 x 1,000, 5 glances (the issue's run)",
    "permuted-mnist",
    "la-maml+replay",
    {
        "n_tasks": 20,
        "samples_per_task": 1000,
        "glances": 5,
        "replay.size": 200,
        "replay.batch": 10,
        "la-maml.look_ahead": "sum",
    },
    lr=None,
    batch_size=10,
)
"""La-MAML on the protocol of the official code's measured ~1,050 sample-glances/s: the
official MNIST permutations run (20 tasks x 1,000 digits, batch 10, 5 glances, memory 200)."""
CONV_NF = 8
"""The reduced ResNet-18's base filters in the conv workloads (the paper's 20 is about 6x
the work per image; a 2-core CPU runs nf 8 in seconds)."""
LAMAML_CHANNELS = 32
"""lamaml-conv's filters in the conv workloads (the paper's 160: about 20x the work)."""
CONV = {
    "n_tasks": 5,
    "samples_per_task": 200,
    "augment": False,
    "model": "resnet18-reduced",
    "model.nf": CONV_NF,
}
"""Split-CIFAR-10's shape, a few hundred images per task, no augmentation (the hand loop
and Avalanche feed the same x / 255 floats)."""
WORKLOADS = (
    Workload("split-mnist class-IL, naive", "split-mnist", "naive"),
    Workload(
        "split-mnist class-IL, er (memory 200)",
        "split-mnist",
        "er",
        {"replay.size": 200, "replay.batch": 32},
    ),
    # lam 10: at 100 the per-sample empirical Fisher (lifelong's and the hand loop's, as in
    # Kirkpatrick et al.) holds the net so tightly that no later task is learned and every
    # input lands in one class (ACC 0.100); Avalanche's Fisher of mini-batch gradients is
    # several times smaller, so its lam 100 is a weaker penalty.
    # The penalty enters the loss, as in the hand loop and Avalanche (not sgd's default
    # proximal step, which would be a different update).
    Workload(
        "split-mnist class-IL, ewc", "split-mnist", "ewc", {"ewc.lam": 10.0, "sgd.proximal": False}
    ),
    # The class-incremental canon that Avalanche 0.6 also ships (GEM, ER_ACE, MIR,
    # GSS_greedy), memory 200, each at its paper's replay batch (strategies/), except GSS:
    # Avalanche's GSS_greedy replays a ReplayDataLoader's 32 stored samples with every batch
    # (not settable through it), so all three replay 32 there (10 stored gradients each).
    Workload(
        "split-mnist class-IL, gem (memory 200)",
        "split-mnist",
        "gem",
        {"replay.size": 200},
        measured=("solve_dual", "_gradients"),
    ),
    Workload("split-mnist class-IL, er-ace (memory 200)", "split-mnist", "er-ace", {"size": 200}),
    Workload(
        "split-mnist class-IL, mir (memory 200)",
        "split-mnist",
        "mir",
        {"replay.size": 200},
        measured=("interference",),
    ),
    Workload(
        "split-mnist class-IL, gss (memory 200)",
        "split-mnist",
        "gss",
        {"replay.size": 200, "replay.batch": 32},
        measured=("_gss_slots", "greedy_slots"),
    ),
    # The exemplar methods of the canon that Avalanche 0.6 ships too (ICaRL, BiC, SCR), at
    # their own defaults (strategies/): iCaRL's learning rate is 0.02 on its summed loss.
    Workload(
        "split-mnist class-IL, icarl (memory 200)",
        "split-mnist",
        "icarl",
        {"size": 200},
        lr=0.02,
        measured=("herding",),
    ),
    Workload(
        "split-mnist class-IL, bic (memory 200)",
        "split-mnist",
        "bic",
        {"size": 200},
        measured=("herding", "_fit_correction"),
    ),
    Workload(
        "split-mnist class-IL, scr (memory 200)",
        "split-mnist",
        "scr",
        {"size": 200},
        measured=("supcon_loss",),
    ),
    Workload("permuted-mnist 10 tasks, naive", "permuted-mnist", "naive", PERMUTED),
    Workload(
        "permuted-mnist 5 x 500, la-maml (memory 200)",
        "permuted-mnist",
        "la-maml+replay",
        LA_MAML,
        lr=None,
        batch_size=10,
    ),
    *(
        Workload(
            f"cifar-shaped random 5 x 200, resnet18-reduced nf {CONV_NF}, {name}",
            "split-cifar10",
            strategy,
            {**CONV, **extra},
            images=True,
        )
        for name, strategy, extra in (
            ("naive", "naive", {}),
            ("er (memory 200)", "er", {"replay.size": 200, "replay.batch": 32}),
            ("der++ (memory 200)", "der++", {"replay.size": 200, "replay.batch": 32}),
        )
    ),
    Workload(
        f"cifar-shaped random 5 x 100, lamaml-conv {LAMAML_CHANNELS} channels, "
        "la-maml (memory 200)",
        "split-cifar10",
        "la-maml+replay",
        {
            **LA_MAML,
            "samples_per_task": 100,
            "augment": False,
            "model": "lamaml-conv",
            "model.channels": LAMAML_CHANNELS,
        },
        lr=None,
        batch_size=10,
        images=True,
    ),
)


@dataclass
class Timing:
    """Loop seconds and final ACC of one implementation on one workload."""

    seconds: list[float] = field(default_factory=list)
    acc: list[float] = field(default_factory=list)
    evaluation: list[float] = field(default_factory=list)  # of ``seconds``, when timed

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")

    @property
    def training(self) -> float | None:
        """The median of the loop times less their evaluations (None: not timed)."""
        if len(self.evaluation) != len(self.seconds) or not self.seconds:
            return None
        return statistics.median(s - e for s, e in zip(self.seconds, self.evaluation, strict=True))


def measure(
    workload: Workload,
    repeat: int,
    *,
    avalanche: bool,
    hand: bool = True,
    warm_up: bool = True,
    evaluations: bool = False,
) -> dict[str, Timing]:
    """Time lifelong, the hand loop (``hand``) and Avalanche (``avalanche``) ``repeat`` times
    each, interleaved, after one untimed run of each (``warm_up``). With ``evaluations``,
    lifelong's evaluations are timed too (:attr:`Timing.training` is the rest)."""
    from lifelong.composition.plan import plan_runs
    from lifelong.execution.runner import execute

    (spec,) = plan_runs(workload.scenario, [workload.strategy], [0], workload.lifelong_settings())
    stream = workload.stream(spec)
    runners: dict[str, Callable[[], list[list[float]]]] = {
        "lifelong": lambda: execute(spec, stream, torch.device("cpu")).matrix
    }
    if hand:
        runners["hand loop"] = lambda: hand_run(workload, stream)
    if avalanche:
        runners["avalanche"] = lambda: avalanche_run(workload, stream)
    timings = {name: Timing() for name in runners}
    for run in runners.values() if warm_up else ():
        run()  # warm-up: first-call costs (lazy imports, allocator) are not the loop's
    for _ in range(repeat):
        for name, run in runners.items():
            with _evaluations_timed(evaluations and name == "lifelong") as spent:
                start = time.perf_counter()
                matrix = run()
                timings[name].seconds.append(time.perf_counter() - start)
            timings[name].acc.append(statistics.fmean(matrix[-1]))
            if spent is not None:
                timings[name].evaluation.append(sum(spent))
    return timings


@contextmanager
def _evaluations_timed(on: bool) -> Iterator[list[float] | None]:
    """The seconds of every ``runner.evaluate`` call within (on the CPU, where a call's
    time is its work), or None when ``on`` is false."""
    if not on:
        yield None
        return
    from lifelong.execution import runner

    spent: list[float] = []
    evaluate = runner.evaluate

    def timed(*args: Any, **kwargs: Any) -> torch.Tensor:
        start = time.perf_counter()
        try:
            return evaluate(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - start)

    runner.evaluate = timed
    try:
        yield spent
    finally:
        runner.evaluate = evaluate


def hand_run(workload: Workload, stream: Stream) -> list[list[float]]:
    """The hand-written loop of ``workload`` on ``stream``; returns R."""
    from lifelong.bench.canon_loops import CANON, hand_canon
    from lifelong.bench.conv_loops import conv_protocol, hand_conv
    from lifelong.bench.exemplar_loops import EXEMPLAR, hand_exemplar
    from lifelong.bench.handloop import hand_la_maml, hand_loop

    protocol = conv_protocol(workload.settings) if workload.images else None
    if protocol is not None and not workload.meta:
        assert workload.lr is not None
        return hand_conv(
            stream,
            strategy=workload.strategy,
            protocol=protocol,
            seed=0,
            lr=workload.lr,
            batch_size=workload.batch_size,
            memory_size=workload.settings.get("replay.size", 200),
            replay_batch=workload.settings.get("replay.batch", 32),
            der_alpha=workload.settings.get("der.lam", 0.5),
        )
    if workload.strategy in EXEMPLAR:
        assert workload.lr is not None
        return hand_exemplar(
            stream,
            strategy=workload.strategy,
            seed=0,
            lr=workload.lr,
            batch_size=workload.batch_size,
            memory_size=workload.settings.get("size", 200),
        )
    if workload.strategy in CANON:
        assert workload.lr is not None
        return hand_canon(
            stream,
            strategy=workload.strategy,
            seed=0,
            lr=workload.lr,
            batch_size=workload.batch_size,
            replay_batch=workload.settings.get("replay.batch", 10),
        )
    if workload.meta:
        return hand_la_maml(
            stream, seed=0, batch_size=workload.batch_size, protocol=protocol, **_meta(workload)
        )
    assert workload.lr is not None
    return hand_loop(
        stream,
        strategy=workload.strategy,
        seed=0,
        lr=workload.lr,
        batch_size=workload.batch_size,
        ewc_lambda=workload.settings.get("ewc.lam", 100.0),
    )


def avalanche_run(workload: Workload, stream: Stream) -> list[list[float]]:
    """Avalanche's own strategy and loop for ``workload`` on ``stream``; returns R."""
    from lifelong.bench.avalanche_side import avalanche_loop
    from lifelong.bench.conv_loops import conv_protocol

    extra: dict[str, Any] = _meta(workload) if workload.meta else {}
    if workload.images:
        extra["protocol"] = conv_protocol(workload.settings)
    if workload.strategy == "der++":
        extra["replay_batch"] = workload.settings.get("replay.batch", 32)
    extra.pop("glances", None)  # none in Avalanche: one pass, as the workload asks
    if "ewc.lam" in workload.settings:
        extra["ewc_lambda"] = workload.settings["ewc.lam"]
    return avalanche_loop(
        stream,
        strategy=workload.strategy,
        seed=0,
        lr=workload.lr,
        batch_size=workload.batch_size,
        **extra,
    )


def _meta(workload: Workload) -> dict[str, Any]:
    """La-MAML's settings for the hand loop and Avalanche: memory, glances, the learner's."""
    settings = workload.settings
    # The registered learner's declared defaults (the engine knows no built-in by class).
    defaults = {n: spec.default for n, spec in param_specs(parts()["la-maml"]).items()}
    return {
        "memory_size": settings["replay.size"],
        "replay_batch": settings["replay.batch"],
        "glances": settings.get("glances", 1),
        "alpha_init": defaults["alpha_init"],
        "opt_lr": defaults["opt_lr"],
        "clip": defaults["clip"],
    }


def end_to_end(
    workload: Workload, repeat: int, *, avalanche: bool, threads: int = 1
) -> dict[str, float]:
    """Median seconds of a whole fresh process per implementation (imports included),
    each on ``threads`` torch threads."""
    commands = {
        "lifelong": [
            sys.executable,
            "-m",
            "lifelong",
            "run",
            workload.scenario,
            "-s",
            workload.strategy,
            "-q",
            "--jobs",
            "1",
            "--device",
            "cpu",
            "--threads",
            str(threads),
            *(
                arg
                for k, v in workload.lifelong_settings().items()
                for arg in ("--set", f"{k}={v}")
            ),
        ],
        "hand loop": [
            sys.executable,
            "-m",
            "lifelong.bench.standalone",
            "hand",
            workload.name,
            str(threads),
        ],
    }
    if avalanche:
        commands["avalanche"] = [
            sys.executable,
            "-m",
            "lifelong.bench.standalone",
            "avalanche",
            workload.name,
            str(threads),
        ]
    out = {}
    for name, command in commands.items():
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            times.append(time.perf_counter() - start)
        out[name] = statistics.median(times)
    return out


def part_seconds(workload: Workload) -> dict[str, tuple[float, int, float]]:
    """``{function: (cumulative seconds, calls, run seconds)}`` of ``workload.measured``
    in one lifelong run under cProfile (so the times include its overhead)."""
    from lifelong.composition.plan import plan_runs
    from lifelong.execution.runner import execute

    (spec,) = plan_runs(workload.scenario, [workload.strategy], [0], workload.lifelong_settings())
    stream = workload.stream(spec)
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    execute(spec, stream, torch.device("cpu"))
    profiler.disable()
    total = time.perf_counter() - start
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    found: dict[str, tuple[float, int, float]] = {}
    for (_, _, name), (_, calls, _, cumulative, _) in stats.items():
        if name in workload.measured:
            seconds, n, _ = found.get(name, (0.0, 0, total))
            found[name] = (seconds + cumulative, n + calls, total)
    return found


def profile_top(workload: Workload, n: int = 8) -> str:
    """The ``n`` functions with the most own time in one lifelong run (cProfile)."""
    from lifelong.composition.plan import plan_runs
    from lifelong.execution.runner import execute

    (spec,) = plan_runs(workload.scenario, [workload.strategy], [0], workload.lifelong_settings())
    stream = workload.stream(spec)
    profiler = cProfile.Profile()
    profiler.enable()
    execute(spec, stream, torch.device("cpu"))
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(n)
    lines = [ln for ln in text.getvalue().splitlines() if ln.strip()]
    start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls"))
    return "\n".join(lines[start : start + n + 1])
