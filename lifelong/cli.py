"""The ``lifelong`` command: run, list."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shlex
import signal
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from lifelong.errors import UserError, closest

if TYPE_CHECKING:
    from lifelong.params import ParamSpec
    from lifelong.result import RunResult
    from lifelong.stream import Stream
    from lifelong.sweep import RunRequest

__all__ = ["main"]

METRIC_NAMES = ("acc", "bwt", "fwt", "forgetting", "la")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"lifelong: error: {message} (see `{self.prog} --help`)\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lifelong`` command; returns the exit status."""
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
        "what", nargs="?", choices=("scenarios", "strategies", "protocol", "suites")
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
        "--data-dir", metavar="DIR", help="directory with MNIST/Fashion-MNIST IDX files"
    )
    command.add_argument(
        "--download",
        action="store_true",
        help="fetch full MNIST/Fashion-MNIST into --data-dir with torchvision (needs a network)",
    )
    command.add_argument(
        "--jobs",
        "-j",
        type=_positive_int,
        metavar="N",
        help="parallel runs on the local pool (default: one per core; 1 runs in-process)",
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
        help="torch threads per run (default 1: fastest for small models, identical "
        "everywhere; with --vectorize, one per core)",
    )
    command.add_argument(
        "--report",
        action="store_true",
        help="when the runs end, write plots and report.md into OUT/report",
    )
    command.add_argument("--quiet", "-q", action="store_true", help="no progress, no tables")


def _threads(args: argparse.Namespace) -> int:
    """``--threads``, else 1 per run, or every core for ``--vectorize``'s one process."""
    if args.threads is not None:
        return int(args.threads)
    return (os.cpu_count() or 1) if args.vectorize else 1


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _run(args: argparse.Namespace) -> int:
    from lifelong.plan import parse_seeds, parse_settings
    from lifelong.registry import scenarios
    from lifelong.suite import find_suite

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
    from lifelong.plan import parse_seeds, parse_settings
    from lifelong.suite import find_suite, load_suite, suite_names

    path = find_suite(args.suite)
    if path is None:
        names = suite_names()
        raise UserError(
            f"unknown suite '{args.suite}'{closest(args.suite, names)}; "
            f"built-in: {', '.join(names) or 'none'}, or give path/to/suite.toml"
        )
    suite = load_suite(path)
    extra = parse_settings(args.settings)
    points = [(scenario, {**settings, **extra}) for scenario, settings in suite.points()]
    seeds = parse_seeds(args.seeds) if args.seeds is not None else list(suite.seeds)
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
    from lifelong.data import DOWNLOADABLE, load_dataset
    from lifelong.results_dir import check_out_dir
    from lifelong.runner import resolve_device
    from lifelong.scenario import ImageScenario
    from lifelong.sweep import plan_requests, sweep

    resolve_device(args.device)
    if args.vectorize and args.executor != "local":
        raise UserError("--vectorize runs in this process; drop --executor ray")
    if args.address and args.executor != "ray":
        raise UserError("--address is a Ray cluster's; add --executor ray or drop --address")
    if args.out == "":
        raise UserError("--out is empty; give a directory path")
    if args.report and not out:
        raise UserError("--report needs --out DIR (the report goes to DIR/report)")
    if args.jobs and (args.vectorize or args.executor == "ray"):
        why = "--vectorize trains in this process" if args.vectorize else "Ray schedules runs"
        _say(args, f"note: --jobs has no effect here ({why})")
    target = check_out_dir(out) if out else None  # before any download or run
    requests = []
    for scenario, settings in points:
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
        elif args.download:
            dataset = getattr(family, "dataset", family.name)
            _say(args, f"note: --download: {dataset} needs no download")
        stream = family.build(seeds[0], args.data_dir)  # the data exist, settings possible
        _check_inits(batch, stream, args.data_dir)
        if args.vectorize:
            _check_vectorizable(batch)
        requests += batch
    if header:
        _say(args, header)
    results = sweep(
        requests,
        target,
        executor=args.executor,
        jobs=args.jobs,
        address=args.address,
        report=lambda text: _say(args, text),
        progress=not args.quiet,
        vectorize=args.vectorize,
    )
    if not args.quiet:
        print(format_results([r for r in results if r.ok]))
    if args.report and target is not None and any(r.ok for r in results):
        from lifelong.report import make_report

        _say(args, f"report: {make_report(target, command=args.command_line)}")
    elif args.report:
        _say(args, "report: not written, since no run completed")
    failed = [r for r in results if not r.ok]
    for r in failed:
        last = r.error.strip().splitlines()[-1] if r.error else "unknown error"
        print(f"lifelong: {r.strategy} seed {r.seed} {r.status}: {last}", file=sys.stderr)
    return 1 if any(r.status == "failed" for r in failed) else 0


def _check_inits(requests: list[RunRequest], stream: Stream, data_dir: str | None) -> None:
    """Each configuration's init checks its settings against the model and the stream
    (:meth:`lifelong.Init.check`), before any run starts."""
    from lifelong.compose import Composite
    from lifelong.model import MLP
    from lifelong.strategy import StreamInfo

    checked = set()
    for request in requests:
        spec = request.spec()
        init = spec.strategy.init if isinstance(spec.strategy, Composite) else None
        if init is None or request.strategy in checked:
            continue
        checked.add(request.strategy)
        hidden = spec.protocol.hidden
        model = MLP(stream.input_dim, hidden, stream.n_outputs, stream.n_heads)
        init.check(model, StreamInfo.of(stream, spec.scenario, spec.seed, data_dir))


def _check_vectorizable(requests: list[RunRequest]) -> None:
    """Refuse ``--vectorize`` for a strategy it cannot batch, before any run starts."""
    from lifelong.vectorized import vectorizable

    for request in requests:
        why = vectorizable(request.spec())
        if why:
            raise UserError(
                f"--vectorize cannot batch '{request.strategy}': {why}; "
                "run it without --vectorize (its seeds then run in parallel processes)"
            )


def _report(args: argparse.Namespace) -> int:
    from lifelong.report import make_report

    if args.out == "":
        raise UserError("--out is empty; give a directory path")

    print(make_report(args.results_dir, args.out, fmt=args.format))
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
    )
    print(f"wrote {path}")
    return 0


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
    from lifelong.report import setup_labels

    by_setup: dict[str, list[dict[str, float]]] = {}
    for r, label in zip(results, setup_labels(results), strict=True):
        by_setup.setdefault(label, []).append(r.metrics)
    width = max([16, *(len(label) + 2 for label in by_setup)])
    header = f"{'strategy':<{width}}{'seeds':>6}" + "".join(f"{m:>18}" for m in METRIC_NAMES)
    lines = [header]
    for name, runs in by_setup.items():
        cells = []
        for metric in METRIC_NAMES:
            values = [run[metric] for run in runs if not math.isnan(run[metric])]
            if not values:
                cells.append(f"{'n/a (1 task)':>18}")
                continue
            mean = statistics.fmean(values)
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{mean:>11.3f} ±{spread:5.3f}")
        lines.append(f"{name:<{width}}{len(runs):>6}" + "".join(cells))
    lines.append("(mean ± standard deviation over seeds; BWT and FWT normalised by T-1)")
    return "\n".join(lines)


def _list(args: argparse.Namespace) -> int:
    from lifelong.params import param_specs
    from lifelong.protocol import Protocol
    from lifelong.registry import find_strategy, scenarios, strategies

    if args.strategy:
        from lifelong.compose import compose, is_composite

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
    if args.what in (None, "suites"):
        from lifelong.suite import load_suite, suite_dir, suite_names

        entries = []
        for name in suite_names():
            suite = load_suite(suite_dir() / f"{name}.toml")
            entries.append(f"  {name}: {suite.description}\n      run: {suite.command}")
        sections.append("Suites (scenarios/suites/*.toml):\n" + "\n".join(entries))
    if args.what in (None, "strategies"):
        from lifelong.compose import SHORTCUTS, parts_by_axis
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
        shortcuts = (f"  {name} = {'+'.join(parts)}" for name, parts in SHORTCUTS.items())
        sections.append("Shortcuts (the learner defaults to sgd):\n" + "\n".join(shortcuts))
        baselines = ", ".join(sorted(avalanche_strategies()))
        sections.append(f"Avalanche baselines (needs lifelong[avalanche]):\n  {baselines}")
    print("\n\n".join(sections))
    return 0


def _composed_specs(part: Any, members: list[Any]) -> dict[str, ParamSpec]:
    """``part``'s parameters with the defaults its partners declared for it (and who did)."""
    from lifelong.params import param_specs

    specs = dict(param_specs(type(part)))
    for other in members:
        for key, value in type(other).partner_defaults.get(part.name, {}).items():
            spec = specs[key]
            doc = f"{spec.doc} ({other.name}'s; {part.name} alone: {spec.default})"
            specs[key] = dataclasses.replace(spec, default=value, doc=doc)
    return specs


def _describe(name: str, cls: type, specs: Mapping[str, ParamSpec]) -> str:
    summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
    lines = [f"  {name}: {summary}"]
    for spec in specs.values():
        default = spec.default
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        kind = spec.type_name
        lines.append(f"      {spec.name:<18} {kind:<28} default {shown!s:<10} {spec.doc}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
