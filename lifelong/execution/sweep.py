"""Grids of runs: resumable, written atomically, on a local process pool or on Ray."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from lifelong.errors import UserError, one_line_warnings
from lifelong.evaluation.result import RunResult, run_key, same_setup

try:
    import fcntl  # advisory locks (POSIX)
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["EXECUTORS", "RunRequest", "plan_requests", "run_request", "sweep"]

EXECUTORS = ("local", "ray")
RAY_PROBE_S = 5.0  # how long a Ray address may take to accept a connection
PARENT_POLL_S = 0.5  # how often a pool's worker checks that its parent is alive


@dataclass(frozen=True)
class RunRequest:
    """One run, described by names and values only, so any process or machine can run it."""

    scenario: str
    strategy: str
    seed: int
    settings: tuple[tuple[str, Any], ...] = ()
    data_dir: str | None = None
    device: str = "cpu"
    threads: int = 1

    def spec(self):
        from lifelong.composition.plan import plan_runs

        (spec,) = plan_runs(self.scenario, [self.strategy], [self.seed], dict(self.settings))
        return spec

    @property
    def label(self) -> str:
        return f"{self.strategy} seed {self.seed}"


def plan_requests(
    scenario: str,
    strategies: Sequence[str],
    seeds: Sequence[int],
    settings: dict[str, Any],
    *,
    data_dir: str | None = None,
    device: str = "cpu",
    threads: int = 1,
) -> list[RunRequest]:
    """Requests for every strategy and seed, checked (names, keys, values, data) up front."""
    from lifelong.composition.plan import plan_runs

    specs = plan_runs(scenario, strategies, seeds, settings)  # UserError before any work
    _check_names(strategies, specs[:: len(seeds)])
    requests = []
    for strategy in strategies:
        items = tuple(sorted(_settings_for(scenario, strategy, settings).items()))
        requests += [
            RunRequest(scenario, _portable(strategy), seed, items, data_dir, device, threads)
            for seed in seeds
        ]
    return requests


def _check_names(given: Sequence[str], specs: Sequence[Any]) -> None:
    """Refuse two strategies of one name (two plug-ins with ``name = "mine"``): their runs
    would carry the same label in every table and report."""
    seen: dict[str, str] = {}
    for text, spec in zip(given, specs, strict=True):
        name = spec.strategy.name
        if name in seen and seen[name] != text:
            raise UserError(
                f"{seen[name]} and {text} are both named '{name}'; give one of them "
                "another name (its class attribute `name`)"
            )
        seen[name] = text


def _settings_for(scenario: str, strategy: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that concern one strategy's runs (``ewc.lam`` does not concern naive).

    The settings were checked for all strategies together, so a key that one strategy
    rejects belongs to another.
    """
    from lifelong.composition.plan import plan_runs

    kept = {}
    for key, value in settings.items():
        if key.startswith("model."):  # the model's field: checked with its model, not alone
            kept[key] = value
            continue
        try:
            plan_runs(scenario, [strategy], [0], {key: value})
        except UserError:
            continue
        kept[key] = value
    return kept


def run_request(
    request: RunRequest, checkpoint_dir: str | None = None, progress: bool = False
) -> RunResult:
    """Run one request; a user strategy's exception becomes a ``failed`` result."""
    import torch

    from lifelong.execution.runner import execute, resolve_device

    torch.set_num_threads(request.threads)
    spec = request.spec()
    key = run_key(spec.config())
    checkpoint = Path(checkpoint_dir) / f"{key}.pt" if checkpoint_dir else None
    try:
        stream = spec.build_stream(request.data_dir)
        device = resolve_device(request.device)
        result = execute(
            spec,
            stream,
            device,
            checkpoint=checkpoint,
            progress=progress,
            data_dir=request.data_dir,
        )
    except UserError:
        raise
    except Exception:
        return RunResult.failed(
            spec.scenario.name,
            spec.strategy.name,
            request.seed,
            spec.config(),
            traceback.format_exc(),
        )
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    return result


def sweep(
    requests: Iterable[RunRequest],
    out: Path | None,
    *,
    executor: str = "local",
    jobs: int | None = None,
    address: str | None = None,
    report: Callable[[str], None] = lambda text: None,
    progress: bool = False,
    vectorize: bool = False,
    on_result: Callable[[RunResult], None] = lambda result: None,
    force: bool = False,
) -> list[RunResult]:
    """Run every request not already completed in ``out``; save each result as it lands.

    A re-run of an interrupted sweep skips completed runs (``ok`` or ``diverged``) and
    retries failed ones; each save rewrites ``summary.json`` and ``results.csv``
    atomically, so an interruption leaves only complete results. With ``progress``, a bar
    counts finished runs (and, in-process, the batches of the current run) on a terminal.
    With ``vectorize``, the seeds of each configuration train together as one batched
    model in this process (:mod:`lifelong.execution.vectorized`). With ``force``, completed runs
    are run again from the start and replace the saved ones. A plug-in's run replaces a
    saved run of the same settings made with other code of the plug-in. ``on_result``
    sees each new result after it is saved (the trackers of ``--log``).

    Returns:
        The results of ``requests`` (loaded or new), in request order.

    Raises:
        UserError: another process is saving into ``out`` (each would overwrite the
            other's results).
    """
    with _exclusive(out):
        return _sweep(
            requests, out, executor, jobs, address, report, progress, vectorize, force, on_result
        )


@contextlib.contextmanager
def _exclusive(out: Path | None) -> Iterator[None]:
    """Hold ``out`` for this process (an advisory lock on the directory, where the system
    has them); a directory it had to create and left empty is removed again."""
    if out is None:
        yield
        return
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    handle = os.open(out, os.O_RDONLY)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(
                    f"another lifelong process is saving into {out}; wait for it to finish "
                    "or choose another --out"
                ) from None
        yield
    finally:
        os.close(handle)
        if created:
            with contextlib.suppress(OSError):  # only when nothing was saved
                out.rmdir()


def _sweep(
    requests: Iterable[RunRequest],
    out: Path | None,
    executor: str,
    jobs: int | None,
    address: str | None,
    report: Callable[[str], None],
    progress: bool,
    vectorize: bool,
    force: bool,
    on_result: Callable[[RunResult], None],
) -> list[RunResult]:
    from lifelong.evaluation.results_dir import load_runs, remove_stale_temps

    if out is not None:
        remove_stale_temps(out)
    requests = _unique(requests)
    configs = {r: r.spec().config() for r in requests}
    keys = {r: run_key(config) for r, config in configs.items()}
    saved = {run.key: run for run in load_runs(out)} if out else {}
    done = {k: v for k, v in saved.items() if v.status in ("ok", "diverged") and not force}
    todo = [r for r in requests if keys[r] not in done]
    for r in requests:
        if keys[r] in done:
            report(f"{r.label}: already in {out}, skipped (--force runs it again)")
        elif "code" in configs[r] and any(same_setup(s.config, configs[r]) for s in saved.values()):
            report(f"{r.label}: its plug-in's code changed since the run in {out}; running it")
    checkpoints = str(out / "checkpoints") if out else None
    if force and checkpoints:  # start afresh, not from an earlier run's last task
        for r in todo:
            with contextlib.suppress(OSError):
                (Path(checkpoints) / f"{keys[r]}.pt").unlink(missing_ok=True)

    bar = _runs_bar(len(todo), enabled=progress)

    order = {key: i for i, key in enumerate(keys.values())}

    rescued: list[Path] = []  # where runs go once ``out`` has refused one

    def land(*results: RunResult) -> None:
        if bar is not None:
            bar.update(len(results))
        for result in results:  # a plug-in's run of older code gives way to the new one
            if "code" in result.config:
                for key in [k for k, s in saved.items() if same_setup(s.config, result.config)]:
                    del saved[key]
            saved[result.key] = result
        if out is not None:  # in request order, so files do not depend on finishing order
            runs = sorted(saved.values(), key=lambda r: order.get(r.key, -1))
            _save_or_rescue(out, runs, rescued)
        for result in results:
            note = f"ACC {result.metrics['acc']:.3f}" if result.ok else result.status
            report(f"{result.strategy} seed {result.seed}: {note} ({result.wall_s:.1f} s)")
            on_result(result)

    if executor not in EXECUTORS:
        raise UserError(f"unknown executor '{executor}'; use local or ray")
    try:
        if vectorize:
            workers = jobs or 1  # one stack: fastest on the loaded 2-core machine measured
            stacks = _vectorized_stacks(todo, workers)
            if workers <= 1 or len(stacks) == 1:
                for stack in stacks:
                    land(*_run_vectorized(stack, checkpoints, progress=progress))
            else:
                _run_stacks_on_pool(stacks, checkpoints, workers, land)
        elif executor == "ray":
            _run_on_ray(todo, checkpoints, address, land)
        elif (jobs or _default_jobs(len(todo))) <= 1:
            for request in todo:
                land(run_request(request, checkpoints, progress=progress))
        else:
            _run_on_pool(todo, checkpoints, jobs or _default_jobs(len(todo)), land)
    finally:
        if bar is not None:
            bar.close()
        if checkpoints is not None and Path(checkpoints).is_dir():
            with contextlib.suppress(OSError):  # only when no interrupted run left one
                Path(checkpoints).rmdir()
    return [saved[keys[r]] for r in requests if keys[r] in saved]


def _save_or_rescue(out: Path, runs: list[RunResult], rescued: list[Path]) -> None:
    """Save ``runs`` into ``out``; when that fails, keep them in a rescue folder and stop
    the sweep with one line saying where they are (later results join them there)."""
    from lifelong.evaluation.results_dir import rescue_runs, save_runs

    if rescued:
        save_runs(rescued[0], runs)
        return
    try:
        save_runs(out, runs)
    except OSError as error:
        rescued.append(rescue_runs(out, runs))
        why = f"{error.strerror or error}: {error.filename}" if error.filename else str(error)
        raise UserError(
            f"cannot save into {out} ({why}); the finished runs are kept in {rescued[0]}: "
            f"fix {out} and copy them there (or rerun)"
        ) from None


def _run_on_pool(
    todo: list[RunRequest], checkpoints: str | None, jobs: int, land: Callable[[RunResult], None]
) -> None:
    """Run ``todo`` on a pool of ``jobs`` processes, landing each result as it comes.

    A worker that dies (killed, out of memory) breaks the pool and every run in it; those
    runs go again, each in a process of its own, so that only the one that kills its
    process is recorded ``failed``. On an interruption the workers are stopped at once (a
    run keeps its last task-boundary checkpoint) and the runs that had finished land."""
    broken = _pool_pass(todo, checkpoints, jobs, land)
    for request in broken:
        if _pool_pass([request], checkpoints, 1, land):
            spec = request.spec()
            land(
                RunResult.failed(
                    spec.scenario.name,
                    spec.strategy.name,
                    request.seed,
                    spec.config(),
                    "its worker process died (killed, or out of memory?)",
                )
            )


def _pool_pass(
    todo: list[RunRequest], checkpoints: str | None, jobs: int, land: Callable[[RunResult], None]
) -> list[RunRequest]:
    """One pool over ``todo``; the requests whose process died before they finished."""
    pool = ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=get_context("spawn"),
        initializer=_start_worker,
        initargs=(os.getpid(),),
    )
    pending = {pool.submit(run_request, r, checkpoints): r for r in todo}
    broken: list[RunRequest] = []
    try:
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                request = pending.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool:
                    broken.append(request)
                    continue
                land(result)
    except BaseException:
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()  # stop at once: checkpoints keep their progress
        pool.shutdown(wait=True, cancel_futures=True)
        for future in pending:  # finished before the interruption, not landed yet
            if future.done() and not future.cancelled() and future.exception() is None:
                land(future.result())
        raise
    pool.shutdown(wait=True)
    return broken


def _start_worker(parent: int) -> None:
    """Set up a pool's worker: it exits when ``parent`` (the process that made the pool)
    is gone, so a ``kill -9`` of that process leaves no worker running on; warnings are
    printed on one line."""
    one_line_warnings()
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(1)  # the results of this worker's run can no longer be received


def _run_on_ray(
    todo: list[RunRequest],
    checkpoints: str | None,
    address: str | None,
    land: Callable[[RunResult], None],
) -> None:
    _probe_ray(address)
    try:
        import ray
    except ImportError:
        raise UserError(
            "--executor ray needs the optional extra: pip install 'lifelong[ray]'"
        ) from None
    if not ray.is_initialized():
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        try:
            ray.init(
                address=address,
                ignore_reinit_error=True,
                log_to_driver=False,
                logging_level=logging.ERROR,
            )
        except (ValueError, ConnectionError, RuntimeError) as error:
            why = next((line for line in str(error).splitlines() if line.strip()), "")
            raise UserError(
                f"--executor ray: cannot start or reach {where} ({why.strip()}); "
                "check --address (HOST:6379 or auto)"
            ) from None
    gpus = _check_ray_resources(ray, todo)

    def wants_gpu(r: RunRequest) -> bool:  # auto takes CUDA where the cluster has it
        return r.device.startswith("cuda") or (r.device == "auto" and gpus > 0)

    remote: Any = ray.remote(run_request)
    pending: list[Any] = [
        remote.options(num_cpus=r.threads, num_gpus=1 if wants_gpu(r) else 0).remote(r, checkpoints)
        for r in todo
    ]
    try:
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            for ref in finished:
                land(ray.get(ref))
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise


def _probe_ray(address: str | None) -> None:
    """Refuse at once a ``HOST:PORT`` that nothing listens on (Ray itself retries for
    minutes); other forms (``auto``, none, nonsense) are left to Ray's own checks."""
    host, sep, port = (address or "").removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=RAY_PROBE_S):
            pass
    except (OSError, OverflowError) as error:
        why = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise UserError(
            f"--executor ray: cannot reach the Ray cluster at {address} ({why}); check "
            "--address (HOST:6379 of a running `ray start --head`, or auto)"
        ) from None


def _check_ray_resources(ray: Any, todo: list[RunRequest]) -> float:
    """Refuse runs that no node of the cluster can hold (Ray would wait for ever); the
    most GPUs a node has."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    cpus = max((node.get("CPU", 0) for node in nodes), default=0)
    gpus = max((node.get("GPU", 0) for node in nodes), default=0)
    threads = max((r.threads for r in todo), default=1)
    if threads > cpus:
        raise UserError(
            f"--threads {threads}: no node of the Ray cluster has more than {cpus:g} CPUs; "
            f"give --threads {max(int(cpus), 1)} or fewer"
        )
    if gpus < 1 and any(r.device.startswith("cuda") for r in todo):
        raise UserError("--device cuda: the Ray cluster has no GPU; use --device cpu")
    return gpus


def _seed_groups(requests: list[RunRequest]) -> list[list[RunRequest]]:
    """Requests that differ only in their seed, grouped (order kept)."""
    groups: dict[tuple[Any, ...], list[RunRequest]] = {}
    for r in requests:
        groups.setdefault((r.scenario, r.strategy, r.settings, r.data_dir, r.device), []).append(r)
    return list(groups.values())


def _vectorized_stacks(todo: list[RunRequest], jobs: int) -> list[list[RunRequest]]:
    """Each configuration's seeds split into ``jobs`` stacks of near-equal size, one per
    process (``--vectorize --jobs N``): on an idle machine a curve protocol's evaluation is
    matmul-bound, so one process cannot beat ``N`` processes of single runs there."""
    stacks = []
    for group in _seed_groups(todo):
        size = -(-len(group) // max(1, min(jobs, len(group))))
        stacks += [group[i : i + size] for i in range(0, len(group), size)]
    return stacks


def _run_stacks_on_pool(
    stacks: list[list[RunRequest]],
    checkpoints: str | None,
    jobs: int,
    land: Callable[..., None],
) -> None:
    """Run the vectorized ``stacks`` on a pool of ``jobs`` processes, landing each stack's
    results as they come; a stack whose process dies is recorded ``failed``."""
    pool = ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=get_context("spawn"),
        initializer=_start_worker,
        initargs=(os.getpid(),),
    )
    pending = {pool.submit(_run_vectorized, s, checkpoints, progress=False): s for s in stacks}
    try:
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                stack = pending.pop(future)
                try:
                    land(*future.result())
                except BrokenProcessPool:
                    why = "its worker process died (killed, or out of memory?)"
                    land(*(_failed(r, why) for r in stack))
    except BaseException:
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()  # stop at once: checkpoints keep their progress
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _failed(request: RunRequest, why: str) -> RunResult:
    spec = request.spec()
    return RunResult.failed(
        spec.scenario.name, spec.strategy.name, request.seed, spec.config(), why
    )


def _run_vectorized(
    group: list[RunRequest], checkpoints: str | None, *, progress: bool
) -> list[RunResult]:
    """Run a group of seeds as one batched model; an exception inside a strategy's part
    becomes a ``failed`` result for every seed of the group (they train together). The
    group's checkpoint is named after its first seed's run (``--force`` removes it)."""
    import torch

    from lifelong.execution.runner import resolve_device
    from lifelong.execution.vectorized import run_vectorized

    torch.set_num_threads(group[0].threads)
    specs = [r.spec() for r in group]
    checkpoint = None
    try:
        streams = [spec.build_stream(r.data_dir) for spec, r in zip(specs, group, strict=True)]
        device = resolve_device(group[0].device)
        if checkpoints is not None and specs[0].strategy.resumable:
            checkpoint = Path(checkpoints) / f"{run_key(specs[0].config())}.pt"
        results = run_vectorized(
            specs, streams, device, group[0].data_dir, progress=progress, checkpoint=checkpoint
        )
    except UserError:
        raise
    except Exception:
        error = traceback.format_exc()
        return [
            RunResult.failed(spec.scenario.name, spec.strategy.name, r.seed, spec.config(), error)
            for spec, r in zip(specs, group, strict=True)
        ]
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    return results


def _runs_bar(total: int, *, enabled: bool) -> Any:
    if not enabled or total < 2 or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="runs", unit="run", file=sys.stderr, position=1)


def _unique(requests: Iterable[RunRequest]) -> list[RunRequest]:
    """Drop requests whose configuration equals an earlier one's (same run key)."""
    seen: set[str] = set()
    unique = []
    for request in requests:
        key = run_key(request.spec().config())
        if key not in seen:
            seen.add(key)
            unique.append(request)
    return unique


def _portable(strategy: str) -> str:
    """Make a plug-in file path absolute, so workers elsewhere can import it."""
    where, sep, name = strategy.rpartition(":")
    if sep and where.endswith(".py"):
        return f"{Path(where).resolve()}:{name}"
    return strategy


def _default_jobs(n_runs: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, n_runs))
