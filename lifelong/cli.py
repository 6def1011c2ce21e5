"""The ``lifelong`` command: run, list."""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NoReturn

from lifelong.errors import UserError

if TYPE_CHECKING:
    from lifelong.params import ParamSpec
    from lifelong.result import RunResult
    from lifelong.runner import RunSpec

__all__ = ["main"]

METRIC_NAMES = ("acc", "bwt", "fwt", "forgetting", "la")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"lifelong: error: {message} (see `{self.prog} --help`)\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lifelong`` command; returns the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except UserError as error:
        print(f"lifelong: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lifelong: interrupted; completed runs are saved", file=sys.stderr)
        return 130


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lifelong", description="A continual-learning simulator.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="train strategies on a scenario and evaluate them")
    run.add_argument("scenario", help="scenario name (see `lifelong list`)")
    run.add_argument(
        "--strategy",
        "-s",
        action="append",
        default=[],
        metavar="NAME",
        help="strategy: short name, path/to/file.py:Class or module:Class (repeatable)",
    )
    run.add_argument("--seeds", default="0", help="seeds: 0,1,2 or a range 0-7 (default 0)")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="settings",
        help="override a scenario, protocol or strategy parameter; name.key for one strategy",
    )
    run.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    run.add_argument("--out", metavar="DIR", help="write summary.json and results.csv here")
    run.add_argument(
        "--data-dir", metavar="DIR", help="directory with MNIST/Fashion-MNIST IDX files"
    )
    run.add_argument(
        "--download",
        action="store_true",
        help="fetch full MNIST/Fashion-MNIST into --data-dir with torchvision (needs a network)",
    )
    run.add_argument("--quiet", "-q", action="store_true", help="no progress bars, no tables")
    run.set_defaults(handler=_run)

    listing = commands.add_parser("list", help="scenarios, strategies and their parameters")
    listing.add_argument("what", nargs="?", choices=("scenarios", "strategies", "protocol"))
    listing.add_argument("--strategy", metavar="SPEC", help="show one strategy, e.g. my.py:Mine")
    listing.set_defaults(handler=_list)
    return parser


def _run(args: argparse.Namespace) -> int:
    from lifelong.data import load_dataset
    from lifelong.plan import parse_seeds, parse_settings, plan_runs
    from lifelong.results_dir import check_out_dir, load_runs, save_runs
    from lifelong.runner import execute, resolve_device
    from lifelong.scenario import ImageScenario

    seeds = parse_seeds(args.seeds)
    specs = plan_runs(args.scenario, args.strategy, seeds, parse_settings(args.settings))
    device = resolve_device(args.device)
    out = check_out_dir(args.out) if args.out else None
    done = {run.key: run for run in load_runs(out)} if out else {}
    if args.download and isinstance(specs[0].scenario, ImageScenario):
        load_dataset(specs[0].scenario.dataset, args.data_dir, download=True)
    streams = {seed: specs[0].scenario.build(seed, args.data_dir) for seed in seeds}
    results = list(done.values())
    for spec in specs:
        key = spec_key(spec)
        if key in done:
            _say(args, f"{spec.strategy.name} seed {spec.seed}: already in {out}, skipped")
            continue
        result = execute(spec, streams[spec.seed], device, progress=not args.quiet)
        results.append(result)
        if out:
            save_runs(out, results)
        _say(
            args,
            f"{spec.strategy.name} seed {spec.seed}: ACC {result.metrics['acc']:.3f} "
            f"({result.wall_s:.1f} s)",
        )
    wanted = {spec_key(spec) for spec in specs}
    if not args.quiet:
        print(format_results([r for r in results if r.key in wanted]))
    return 0


def spec_key(spec: RunSpec) -> str:
    from lifelong.result import run_key

    return run_key(spec.config())


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
    by_strategy: dict[str, list[dict[str, float]]] = {}
    for r in results:
        by_strategy.setdefault(r.strategy, []).append(r.metrics)
    header = f"{'strategy':<16}{'seeds':>6}" + "".join(f"{m:>18}" for m in METRIC_NAMES)
    lines = [header]
    for name, runs in by_strategy.items():
        cells = []
        for metric in METRIC_NAMES:
            values = [run[metric] for run in runs if not math.isnan(run[metric])]
            if not values:
                cells.append(f"{'n/a (1 task)':>18}")
                continue
            mean = statistics.fmean(values)
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{mean:>11.3f} ±{spread:5.3f}")
        lines.append(f"{name:<16}{len(runs):>6}" + "".join(cells))
    lines.append("(mean ± standard deviation over seeds; BWT and FWT normalised by T-1)")
    return "\n".join(lines)


def _list(args: argparse.Namespace) -> int:
    from lifelong.params import param_specs
    from lifelong.protocol import Protocol
    from lifelong.registry import find_strategy, scenarios, strategies

    if args.strategy:
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
    if args.what in (None, "strategies"):
        sections.append(
            "Strategies:\n"
            + "\n".join(
                _describe(name, cls, param_specs(cls)) for name, cls in sorted(strategies().items())
            )
        )
    print("\n\n".join(sections))
    return 0


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
