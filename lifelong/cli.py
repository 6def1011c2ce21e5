"""The ``lifelong`` command: run, list."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from lifelong.errors import UserError, check_path, closest, one_line_warnings
from lifelong.evaluation.result import ONLINE_METRICS
from lifelong.execution.allocator import pin_for_processes, threshold_for

if TYPE_CHECKING:
    from torch import nn

    from lifelong.contracts.params import ParamSpec
    from lifelong.contracts.stream import Stream
    from lifelong.evaluation.result import RunResult
    from lifelong.execution.runner import RunSpec
    from lifelong.execution.sweep import RunRequest
    from lifelong.trackers import Trackers

__all__ = ["main"]

METRIC_NAMES = ("acc", "bwt", "fwt", "forgetting", "la")
EXIT_UNFINISHED = 3
"""Exit status when some run diverged or failed (0: every run completed; 2: usage error)."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"lifelong: error: {message} (see `{self.prog} --help`)\n")


def entry() -> int:
    """The ``lifelong`` command's process (console script, ``python -m lifelong``):
    :func:`main`, with glibc's malloc tuned for the runs it makes, in this process and
    the ones it starts (:func:`lifelong.execution.allocator.pin_for_processes`). :func:`main`
    alone, called in a caller's process, leaves its allocator as it is."""
    return main(tune_malloc=True)


def main(argv: Sequence[str] | None = None, *, tune_malloc: bool = False) -> int:
    """Entry point of the ``lifelong`` command; returns the exit status. With
    ``tune_malloc`` (:func:`entry`), runs and benchmarks pin glibc's malloc thresholds."""
    parser = _build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # name the subcommand whose options they are not
        parser.exit(
            2,
            f"lifelong: error: unrecognized arguments: {' '.join(unknown)} "
            f"(see `lifelong {args.command} --help`)\n",
        )
    args.command_line = shlex.join(["lifelong", *argv])
    args.tune_malloc = tune_malloc
    one_line_warnings()
    signal.signal(signal.SIGTERM, _interrupt)  # a scheduler's stop: as Ctrl-C, runs saved
    try:
        return int(args.handler(args))
    except UserError as error:
        print(f"lifelong: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lifelong: interrupted; completed runs are saved", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `lifelong list | head`: the reader left; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _interrupt(signum: int, frame: object) -> NoReturn:
    """The first SIGTERM stops the work as Ctrl-C does; later ones are ignored, so that
    the cleanup (workers stopped, finished runs saved) ends and the exit status is 130
    (Python's shutdown would otherwise restore the default action: death by SIGTERM)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lifelong", description="A continual-learning simulator.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="train strategies on a scenario (or suite); evaluate")
    run.add_argument("scenario", help="scenario name, suite name or suite.toml (`lifelong list`)")
    run.add_argument(
        "--strategy",
        "-s",
        action="append",
        default=[],
        metavar="NAME",
        help="strategy: short name, path/to/file.py:Class or module:Class (repeatable)",
    )
    run.add_argument("--seeds", help="seeds: 0,1,2 or a range 0-7 (default 0)")
    _add_execution_options(run)
    run.set_defaults(handler=_run)

    sweep = commands.add_parser("sweep", help="run a suite's grid; resumable")
    sweep.add_argument("suite", help="suite name or path/to/suite.toml")
    sweep.add_argument("--seeds", help="override the suite's seeds: 0,1,2 or 0-7")
    _add_execution_options(sweep)
    sweep.set_defaults(handler=_sweep)

    report = commands.add_parser(
        "report", help="plots, matrices and report.md from a results directory"
    )
    report.add_argument(
        "results_dir", metavar="RESULTS_DIR", help="a directory written by `lifelong run --out`"
    )
    report.add_argument(
        "--out", metavar="DIR", help="where to write the report (default: RESULTS_DIR/report)"
    )
    report.add_argument(
        "--format", default="png", choices=("png", "svg", "pdf"), help="image format (default png)"
    )
    _add_band_option(report)
    report.set_defaults(handler=_report)

    bench = commands.add_parser("bench", help="time lifelong against a hand loop and Avalanche")
    bench.add_argument("--out", default="reports/performance.md", help="the Markdown report")
    bench.add_argument("--repeat", type=_positive_int, default=5, help="loop repetitions")
    bench.add_argument(
        "--e2e-repeat", type=_positive_int, default=3, help="fresh-process repetitions"
    )
    bench.add_argument("--only", metavar="TEXT", help="workloads whose name contains TEXT")
    bench.add_argument("--no-avalanche", action="store_true", help="leave Avalanche out")
    bench.add_argument("--threads", type=_positive_int, default=1, help="torch threads")
    bench.add_argument(
        "--no-memory",
        action="store_true",
        help="skip the resident-memory run over a 100-task stream",
    )
    bench.set_defaults(handler=_bench)

    listing = commands.add_parser("list", help="scenarios, suites, strategies and parameters")
    listing.add_argument(
        "what", nargs="?", choices=("scenarios", "strategies", "protocol", "models", "suites")
    )
    listing.add_argument("--strategy", metavar="SPEC", help="show one strategy, e.g. my.py:Mine")
    listing.set_defaults(handler=_list)
    return parser


def _add_execution_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="settings",
        help="override a scenario, protocol or strategy parameter; name.key for one strategy",
    )
    command.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    command.add_argument("--out", metavar="DIR", help="write summary.json and results.csv here")
    command.add_argument(
        "--data-dir",
        metavar="DIR",
        help="directory with MNIST/Fashion-MNIST IDX files, or torchvision's"
        " cifar-10-batches-py/, cifar-100-python/ or tiny-imagenet-200/",
    )
    command.add_argument(
        "--download",
        action="store_true",
        help="fetch full MNIST, Fashion-MNIST or CIFAR into --data-dir with torchvision"
        " (needs a network)",
    )
    command.add_argument(
        "--jobs",
        "-j",
        type=_positive_int,
        metavar="N",
        help="parallel runs on the local pool (default: one per core; 1 runs in-process); "
        "with --vectorize, the number of seed stacks (default: one, in this process)",
    )
    command.add_argument(
        "--executor",
        default="local",
        choices=("local", "ray"),
        help="local process pool (default) or Ray",
    )
    command.add_argument("--address", metavar="ADDR", help="Ray cluster address (--executor ray)")
    command.add_argument(
        "--vectorize",
        action="store_true",
        help="train the seeds of each configuration together as one batched model",
    )
    command.add_argument(
        "--threads",
        type=_positive_int,
        metavar="N",
        help="torch threads per run, or for --vectorize's one process (default 1: fastest "
        "for small models and on a busy machine, identical everywhere)",
    )
    command.add_argument(
        "--report",
        action="store_true",
        help="when the runs end, write plots and report.md into OUT/report",
    )
    _add_band_option(command)
    command.add_argument(
        "--force",
        action="store_true",
        help="run again, from the start, the runs that --out already holds (they are replaced)",
    )
    command.add_argument("--quiet", "-q", action="store_true", help="no progress, no tables")
    command.add_argument(
        "--log",
        action="append",
        default=[],
        metavar="TRACKER",
        help="also log each run to tensorboard, wandb or mlflow, under --out (repeatable)",
    )


def _add_band_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--band",
        default="ci",
        choices=("ci", "se", "range"),
        help="the report's spread over seeds in tables and figures: 95%% CI (default), "
        "standard error, or the seeds' range (with 3 seeds a 95%% CI is wide)",
    )


def _threads(args: argparse.Namespace) -> int:
    """``--threads``, else 1, for a run and for ``--vectorize``'s one process alike: more
    threads than free cores cost far more than idle cores gain (issue 22, measured:
    split-mnist naive, seeds 0-3 vectorized, on a loaded 2-core machine: 42-56 s at one
    thread per core, 16 s at one thread; an idle machine: 0.46 s against 0.60 s)."""
    return int(args.threads) if args.threads is not None else 1


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _run(args: argparse.Namespace) -> int:
    from lifelong.composition.plan import parse_seeds, parse_settings
    from lifelong.composition.registry import scenarios
    from lifelong.execution.suite import find_suite

    if args.scenario not in scenarios() and find_suite(args.scenario) is not None:
        if args.strategy:
            raise UserError(
                f"{args.scenario} is a suite and names its own strategies; drop --strategy"
            )
        args.suite = args.scenario
        return _sweep(args)
    if not args.strategy:
        raise UserError("no strategy given; add --strategy NAME (see `lifelong list`)")
    seeds = parse_seeds("0" if args.seeds is None else args.seeds)
    points = [(args.scenario, dict(parse_settings(args.settings)))]
    return _execute(args, points, args.strategy, seeds, out=args.out)


def _sweep(args: argparse.Namespace) -> int:
    from lifelong.composition.plan import parse_seeds, parse_settings
    from lifelong.execution.suite import find_suite, load_suite, suite_names

    path = find_suite(args.suite)
    if path is None:
        names = suite_names()
        raise UserError(
            f"unknown suite '{args.suite}'{closest(args.suite, names)}; "
            f"built-in: {', '.join(names) or 'none'}, or give path/to/suite.toml"
        )
    suite = load_suite(path)
    seeds = parse_seeds(args.seeds) if args.seeds is not None else list(suite.seeds)
    grid = math.prod(len(values) for values in suite.grid.values())
    _check_size(grid * len(suite.scenarios), list(suite.strategies), seeds)
    extra = parse_settings(args.settings)
    points = [(scenario, {**settings, **extra}) for scenario, settings in suite.points()]
    out = args.out or str(Path("results") / suite.name)
    header = f"suite {suite.name}: {suite.description}"
    return _execute(args, points, list(suite.strategies), seeds, out=out, header=header)


def _execute(
    args: argparse.Namespace,
    points: list[tuple[str, dict[str, Any]]],
    strategies: list[str],
    seeds: list[int],
    out: str | None,
    header: str = "",
) -> int:
    from lifelong.composition.plan import check_memory
    from lifelong.contracts.scenario import ImageScenario
    from lifelong.data.images import IMAGE_DATASETS, load_image_dataset
    from lifelong.data.mnist import DOWNLOADABLE, load_dataset
    from lifelong.evaluation.results_dir import check_out_dir
    from lifelong.execution.runner import resolve_device
    from lifelong.execution.sweep import plan_requests, sweep

    device = resolve_device(args.device)
    if args.vectorize and args.executor != "local":
        raise UserError("--vectorize runs in this process; drop --executor ray")
    if args.address and args.executor != "ray":
        raise UserError("--address is a Ray cluster's; add --executor ray or drop --address")
    if args.out == "":
        raise UserError("--out is empty; give a directory path")
    if args.report and not out:
        raise UserError("--report needs --out DIR (the report goes to DIR/report)")
    if args.jobs and args.executor == "ray":
        _say(args, "note: --jobs has no effect here (Ray schedules runs)")
    target = check_out_dir(out) if out else None  # before any download or run
    trackers = _open_trackers(args, target)
    _check_size(len(points), strategies, seeds)
    requests = []
    step_bytes = 0  # the largest training batch's largest activation, on a CPU
    streams: dict[str, Stream] = {}  # one per scenario configuration, not one per point
    for scenario, settings in _planning(args, points):
        batch = plan_requests(
            scenario,
            strategies,
            seeds,
            settings,
            data_dir=args.data_dir,
            device=args.device,
            threads=_threads(args),
        )
        family = batch[0].spec().scenario
        if args.download and isinstance(family, ImageScenario) and family.dataset in DOWNLOADABLE:
            load_dataset(family.dataset, args.data_dir, download=True)
        elif args.download and (image_data := getattr(family, "dataset", None)) in IMAGE_DATASETS:
            load_image_dataset(image_data, args.data_dir, download=True)
        elif args.download:
            dataset = getattr(family, "dataset", family.name)
            _say(args, f"note: --download: {dataset} needs no download")
        check_memory(batch[0].spec(), args.data_dir, device)
        config = batch[0].spec().config()
        built = json.dumps([config["scenario"], config.get("stream")], sort_keys=True)
        if built not in streams:  # the data exist, the settings and stream options are possible
            streams[built] = batch[0].spec().build_stream(args.data_dir)
        model = _check_model(batch[0].spec(), streams[built])
        if device.type == "cpu":
            step_bytes = max(step_bytes, _step_bytes(batch, streams[built], model))
        _check_inits(batch, streams[built], args.data_dir)
        if args.vectorize:
            _check_vectorizable(batch, streams[built], model)
        requests += batch
    if args.data_dir is not None and not any(_may_read_data_dir(r) for r in requests):
        print(_unread_data_dir(args.data_dir, requests), file=sys.stderr)  # even with --quiet
    if header:
        _say(args, header)
    if args.tune_malloc:  # stacked buffers are S times larger
        stack = -(-len(seeds) // (args.jobs or 1)) if args.vectorize else 1
        pin_for_processes(threshold_for(step_bytes, stack))
    results = sweep(
        requests,
        target,
        executor=args.executor,
        jobs=args.jobs,
        address=args.address,
        report=lambda text: _say(args, text),
        progress=not args.quiet,
        vectorize=args.vectorize,
        on_result=trackers.log if trackers else lambda result: None,
        force=args.force,
    )
    if not args.quiet:
        print(format_results([r for r in results if r.ok]))
    if args.report and target is not None and any(r.ok for r in results):
        from lifelong.evaluation.report import make_report

        report = make_report(target, command=args.command_line, band=args.band)
        _say(args, f"report: {report}")
    elif args.report:
        _say(args, "report: not written, since no run completed")
    _warn_not_learned(results)
    _tell_unfinished(results, target)
    tracker_failed = trackers is not None and bool(trackers.failed)
    return EXIT_UNFINISHED if tracker_failed or any(not r.ok for r in results) else 0


def _warn_not_learned(results: Sequence[RunResult]) -> None:
    """A warning for every completed run that looks like it learned nothing."""
    for r in results:
        why = r.not_learned() if r.ok else ""
        if why:
            print(
                f"lifelong: warning: {r.strategy} seed {r.seed} did not learn: {why}",
                file=sys.stderr,
            )


def _tell_unfinished(results: Sequence[RunResult], target: Path | None) -> None:
    """One line per diverged or failed run; a failed run's line says where its traceback is
    (printed above it when there is no results directory to keep it)."""
    from lifelong.evaluation.results_dir import SUMMARY

    for r in results:
        if r.ok:
            continue
        last = r.error.strip().splitlines()[-1] if r.error else "unknown error"
        where = ""
        if r.status == "failed" and target is not None:
            where = f' (traceback: the "error" of this run in {target / SUMMARY})'
        elif r.status == "failed":
            print(r.error.rstrip(), file=sys.stderr)
            where = " (traceback above; with --out DIR it is kept in DIR/summary.json)"
        print(f"lifelong: {r.strategy} seed {r.seed} {r.status}: {last}{where}", file=sys.stderr)


def _open_trackers(args: argparse.Namespace, target: Path | None) -> Trackers | None:
    """The sinks of ``--log``, checked before any run (installed, writable)."""
    from lifelong.trackers import open_trackers

    if not args.log:
        return None
    if target is None:
        raise UserError("--log needs --out DIR (the trackers write under it)")
    group = target.resolve().name
    return open_trackers(args.log, target, group, say=lambda text: print(text, file=sys.stderr))


MAX_RUNS = 100_000  # each save rewrites summary.json: more runs belong in several --out


def _check_size(n_points: int, strategies: list[str], seeds: list[int]) -> None:
    """Refuse, before planning, more runs than one results directory can hold."""
    runs = n_points * len(strategies) * len(seeds)
    if runs > MAX_RUNS:
        raise UserError(
            f"{n_points:,} points x {len(strategies)} strategies x {len(seeds)} seeds make "
            f"{runs:,} runs; at most {MAX_RUNS:,} go into one sweep: split the grid"
        )


def _planning(args: argparse.Namespace, points: list[Any]) -> Any:
    """``points``, counted on a bar while a large grid is checked (on a terminal)."""
    if args.quiet or len(points) < 20 or not sys.stderr.isatty():
        return points
    from tqdm import tqdm

    return tqdm(points, desc="planning", unit="point", leave=False, file=sys.stderr)


def _step_bytes(batch: list[RunRequest], stream: Stream, model: nn.Module) -> int:
    """The largest activation of one training step of these runs (bytes; a batch and its
    replay batch, :meth:`RunSpec.training_rows`), for the allocator's threshold on a CPU
    (:func:`lifelong.execution.allocator.threshold_for`)."""
    from lifelong.models.axis import activation_bytes

    rows = max(request.spec().training_rows() for request in batch)
    return activation_bytes(model, stream) * rows


def _check_model(spec: RunSpec, stream: Stream) -> nn.Module:
    """The configuration's model, built once before any run starts: a model that cannot be
    built or does not fit the stream is refused here (:func:`lifelong.models.axis.build_model`)."""
    from lifelong.models.axis import build_model

    return build_model(spec.protocol, stream)


def _check_inits(requests: list[RunRequest], stream: Stream, data_dir: str | None) -> None:
    """Each configuration's init and head check its settings against the model and the
    stream (:meth:`lifelong.Init.check`, :meth:`lifelong.Head.check`), before any run starts."""
    from lifelong.composition.compose import Composite
    from lifelong.contracts.strategy import StreamInfo
    from lifelong.models.axis import build_model

    checked = set()
    for request in requests:
        spec = request.spec()
        composite = spec.strategy if isinstance(spec.strategy, Composite) else None
        if composite is None or request.strategy in checked:
            continue
        checked.add(request.strategy)
        model = build_model(spec.protocol, stream)
        info = StreamInfo.of(
            stream, spec.scenario, spec.seed, data_dir, batch_size=spec.protocol.batch_size
        )
        for part in (composite.init, composite.head):
            if part is not None:
                part.check(model, info)


def _may_read_data_dir(request: RunRequest) -> bool:
    """Whether a run may read ``--data-dir``: its scenario reads IDX files, or its strategy
    is a plug-in or has a meta-learned init (either may load data through StreamInfo)."""
    from lifelong.composition.compose import Composite
    from lifelong.composition.registry import strategies
    from lifelong.data.images import IMAGE_DATASETS
    from lifelong.data.mnist import DOWNLOADABLE

    spec = request.spec()
    if getattr(spec.scenario, "dataset", None) in DOWNLOADABLE + IMAGE_DATASETS:
        return True
    if isinstance(spec.strategy, Composite):
        return spec.strategy.init is not None
    return request.strategy not in strategies()


def _unread_data_dir(data_dir: str, requests: list[RunRequest]) -> str:
    datasets = sorted(
        {str(getattr(r.spec().scenario, "dataset", "its own data")) for r in requests}
    )
    return (
        f"lifelong: warning: --data-dir {data_dir} is not read: the runs use {', '.join(datasets)}"
        " (embedded); add --set dataset=mnist or dataset=fashion-mnist to train on IDX files"
        " there, or drop --data-dir"
    )


def _check_vectorizable(requests: list[RunRequest], stream: Stream, model: nn.Module) -> None:
    """Refuse ``--vectorize`` for a strategy, stream or model it cannot batch, before any run."""
    from lifelong.execution.vectorized import augments, vectorizable

    if augments(stream):
        raise UserError(f"--vectorize: {augments(stream)}, or run without --vectorize")
    for request in requests:
        why = vectorizable(request.spec(), model)
        if why:
            raise UserError(
                f"--vectorize cannot batch '{request.strategy}': {why}; "
                "run it without --vectorize (its seeds then run in parallel processes)"
            )


def _report(args: argparse.Namespace) -> int:
    from lifelong.evaluation.report import make_report

    if args.out == "":
        raise UserError("--out is empty; give a directory path")
    check_path(args.results_dir, "RESULTS_DIR")
    if args.out:
        check_path(args.out, "--out")
    print(make_report(args.results_dir, args.out, fmt=args.format, band=args.band))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from lifelong.bench import run_bench

    options = [
        ("--repeat", args.repeat),
        ("--e2e-repeat", args.e2e_repeat),
        *([("--only", args.only)] if args.only else []),
        *([("--no-avalanche", None)] if args.no_avalanche else []),
        *([("--threads", args.threads)] if args.threads != 1 else []),
        *([("--no-memory", None)] if args.no_memory else []),
        ("--out", args.out),
    ]
    command = shlex.join(
        ["lifelong", "bench", *(str(p) for pair in options for p in pair if p is not None)]
    )
    path = run_bench(
        Path(args.out),
        repeat=args.repeat,
        e2e_repeat=args.e2e_repeat,
        only=args.only,
        avalanche=not args.no_avalanche,
        threads=args.threads,
        with_memory=not args.no_memory,
        command=command,
        allocator=_pin_for_step if args.tune_malloc else None,
    )
    print(f"wrote {path}")
    return 0


def _pin_for_step(step_bytes: int) -> None:
    """glibc's malloc as ``lifelong run`` sets it for a training step of ``step_bytes``."""
    pin_for_processes(threshold_for(step_bytes))


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text, file=sys.stderr)


def format_results(results: Sequence[RunResult]) -> str:
    """The accuracy matrices and a metrics table, as printed by ``lifelong run``."""
    lines = []
    for r in results:
        title = f"{r.strategy}, seed {r.seed}: accuracy after each task (rows) on each task"
        lines.append(f"\n{title} (columns)")
        names = r.task_names
        width = max(7, *(len(n) + 1 for n in names))
        lines.append(" " * 12 + "".join(f"{n:>{width}}" for n in names))
        lines.append(f"{'init (b)':<12}" + "".join(f"{v:>{width}.3f}" for v in r.init))
        for i, row in enumerate(r.matrix):
            lines.append(f"{'after ' + names[i]:<12}" + "".join(f"{v:>{width}.3f}" for v in row))
    lines.append("\n" + _metrics_table(results))
    return "\n".join(lines)


def _metrics_table(results: Sequence[RunResult]) -> str:
    """Means over seeds per setup: a strategy, with the settings that tell its setups apart
    (as the report labels them), so a suite's class- and task-IL runs are not averaged."""
    from lifelong.evaluation.report import setup_labels
    from lifelong.evaluation.spread import band, describe, format_spread

    by_setup: dict[str, list[dict[str, float]]] = {}
    for r, label in zip(results, setup_labels(results), strict=True):
        by_setup.setdefault(label, []).append(r.metrics)
    width = max([16, *(len(label) + 2 for label in by_setup)])
    online = [m for m in ONLINE_METRICS if any(m in r.metrics for r in results)]
    names = (*METRIC_NAMES, *online)  # the stream options' metrics, where measured
    header = f"{'strategy':<{width}}{'seeds':>6}" + "".join(f"{m:>18}" for m in names)
    lines = [header]
    for name, runs in by_setup.items():
        cells = []
        for metric in names:
            values = [run.get(metric, math.nan) for run in runs]
            if all(math.isnan(v) for v in values):
                cells.append(f"{'n/a (1 task)' if metric in METRIC_NAMES else 'n/a':>18}")
                continue
            cells.append(f"{format_spread(*band(values)):>18}")
        lines.append(f"{name:<{width}}{len(runs):>6}" + "".join(cells))
    lines.append(f"{describe()}; BWT and FWT normalised by T-1")
    return "\n".join(lines)


def _list(args: argparse.Namespace) -> int:
    from lifelong.composition.registry import find_strategy, scenarios, strategies
    from lifelong.contracts.params import param_specs
    from lifelong.data.stream_options import StreamOptions
    from lifelong.execution.protocol import Protocol

    if args.strategy:
        from lifelong.composition.compose import compose, is_composite

        if is_composite(args.strategy):
            members = compose(args.strategy).parts()
            joined = "+".join(p.name for p in members)
            print(f"{args.strategy} = {joined} (set a value with --set PART.KEY=VALUE)")
            for p in members:
                print(_describe(p.name, type(p), _composed_specs(p, members)))
            return 0
        cls = find_strategy(args.strategy)
        print(_describe(cls.name, cls, param_specs(cls)))
        return 0
    sections = []
    if args.what in (None, "scenarios"):
        sections.append(
            "Scenarios:\n"
            + "\n".join(
                _describe(name, cls, param_specs(cls)) for name, cls in sorted(scenarios().items())
            )
        )
    if args.what in (None, "protocol"):
        sections.append(
            "Protocol (any scenario):\n" + _describe("protocol", Protocol, param_specs(Protocol))
        )
        sections.append(
            "Stream options (any scenario):\n"
            + _describe("stream", StreamOptions, param_specs(StreamOptions))
        )
    if args.what in (None, "models"):
        sections.append(_models_section())
    if args.what in (None, "suites"):
        from lifelong.execution.suite import load_suite, suite_dir, suite_names

        entries = []
        for name in suite_names():
            suite = load_suite(suite_dir() / f"{name}.toml")
            entries.append(f"  {name}: {suite.description}\n      run: {suite.command}")
        sections.append("Suites (scenarios/suites/*.toml):\n" + "\n".join(entries))
    if args.what in (None, "strategies"):
        from lifelong.composition.compose import parts_by_axis, shortcuts
        from lifelong.interop import avalanche_strategies

        whole = sorted(strategies().items())
        sections.append(
            "Strategies:\n" + "\n".join(_describe(n, c, param_specs(c)) for n, c in whole)
        )
        for axis, found in parts_by_axis().items():
            described = (_describe(n, c, param_specs(c)) for n, c in found.items())
            sections.append(
                f"Parts, {axis} (combine with '+', e.g. er+ewc):\n" + "\n".join(described)
            )
        named = (f"  {name} = {'+'.join(parts)}" for name, parts in shortcuts().items())
        sections.append("Shortcuts (the learner defaults to sgd):\n" + "\n".join(named))
        baselines = ", ".join(sorted(avalanche_strategies()))
        sections.append(f"Avalanche baselines (needs lifelong[avalanche]):\n  {baselines}")
    print("\n\n".join(sections))
    return 0


def _models_section() -> str:
    """The built-in models with their fields (``--set model=NAME``, ``model.KEY=V``)."""
    from lifelong.models.axis import models

    entries = []
    for name, entry in models().items():
        lines = [f"  {name}: {entry.summary}"]
        lines += [f"      {key:<18} protocol setting `{key}`" for key in entry.from_protocol]
        lines += [_spec_line(spec) for spec in entry.fields.values()]
        entries.append("\n".join(lines))
    return (
        "Models (--set model=NAME, its fields model.KEY=V; or path/to/file.py:factory; "
        "default: resnet18-reduced for colour images, else mlp):\n" + "\n".join(entries)
    )


def _composed_specs(part: Any, members: list[Any]) -> dict[str, ParamSpec]:
    """``part``'s parameters with the defaults its partners declared for it (and who did)."""
    from lifelong.contracts.params import param_specs

    own = dict(param_specs(type(part)))
    declared: dict[str, tuple[Any, list[str]]] = {}  # key -> (value, the parts declaring it)
    for other in members:
        for key, value in type(other).partner_defaults.get(part.name, {}).items():
            declared.setdefault(key, (value, []))[1].append(other.name)
    specs = dict(own)
    for key, (value, by) in declared.items():
        spec = own[key]
        whose = " and ".join(f"{name}'s" for name in by)
        doc = f"{spec.doc} ({whose}; {part.name} alone: {spec.default})"
        specs[key] = dataclasses.replace(spec, default=value, doc=doc)
    return specs


def _describe(name: str, cls: type, specs: Mapping[str, ParamSpec]) -> str:
    summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
    lines = [f"  {name}: {summary}"]
    lines += [_spec_line(spec) for spec in specs.values()]
    return "\n".join(lines)


def _spec_line(spec: ParamSpec) -> str:
    default = spec.default
    shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
    kind = spec.type_name
    if spec.choices:  # the values a string option takes are part of its type
        kind = f"{kind}: {'|'.join('none' if c is None else str(c) for c in spec.choices)}"
    return f"      {spec.name:<18} {kind:<28} default {shown!s:<10} {spec.doc}"


if __name__ == "__main__":
    sys.exit(main())
