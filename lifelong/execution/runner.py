"""The loop over tasks, epochs and batches, with the evaluation schedule and seeding."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import pickle
import sys
import time
import typing
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lifelong.contracts.params import as_config
from lifelong.contracts.parts import eval_mode
from lifelong.contracts.scenario import ScenarioFamily
from lifelong.contracts.strategy import Batch, Strategy, StreamInfo
from lifelong.contracts.stream import Stream, Task, TrainingData, training_data
from lifelong.data.inputs import to_floats
from lifelong.data.stream_options import StreamOptions, apply_options
from lifelong.errors import ContractError, UserError
from lifelong.evaluation import metrics
from lifelong.evaluation.anytime import OnlineRecorder
from lifelong.evaluation.result import Curve, RunResult, code_hash, run_key
from lifelong.evaluation.results_dir import set_aside
from lifelong.execution.allocator import large_step
from lifelong.execution.boundaries import PlateauDetector, RecentSamples
from lifelong.execution.checkpoint import CheckpointMismatch, capture, restore
from lifelong.execution.protocol import Protocol
from lifelong.models.axis import activation_bytes, build_model, model_code

__all__ = [
    "OneSeed",
    "RunSpec",
    "Trainer",
    "autocast",
    "evaluate",
    "execute",
    "generator",
    "resolve_device",
    "train",
]


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one run's numbers."""

    scenario: ScenarioFamily
    strategy: Strategy
    protocol: Protocol
    seed: int
    options: StreamOptions = dataclasses.field(default_factory=StreamOptions)

    def training_rows(self) -> int:
        """An estimate of the most samples a training step passes through the model at
        once: a batch and the replay batch its composite's memory draws
        (:meth:`lifelong.Memory.replay_rows`; a whole strategy's own memory, or a pass
        over MIR's candidates, is not counted). What the command sizes the allocator by
        (:func:`lifelong.execution.allocator.threshold_for`)."""
        composite = self.strategy.as_composite()
        memory = composite.memory if composite is not None else None
        batch = self.protocol.batch_size
        return batch + (memory.replay_rows(batch) if memory is not None else 0)

    def build_stream(self, data_dir: str | None = None) -> Stream:
        """The scenario's stream for this seed, with the stream options applied (CPU)."""
        return apply_options(self.scenario.build(self.seed, data_dir), self.options, self.seed)

    def config(self) -> dict[str, object]:
        """The full configuration, as saved in ``summary.json`` and hashed for the run key.

        A plug-in strategy (a class from outside lifelong) or model factory adds ``code``, a
        hash of its file's source and its name, so that editing the file makes new runs.
        """
        protocol = as_config(self.protocol)
        if self.protocol.model_fields:
            protocol["model_fields"] = {
                k: list(v) if isinstance(v, tuple) else v for k, v in self.protocol.model_fields
            }
        config: dict[str, object] = {
            "scenario": {"name": self.scenario.name, **as_config(self.scenario)},
            "strategy": {"name": self.strategy.name, **as_config(self.strategy)},
            "protocol": protocol,
            "seed": self.seed,
        }
        if self.options.changed():  # absent when default, so older runs keep their keys
            config["stream"] = self.options.changed()
        codes = [c for c in (code_hash(type(self.strategy)), model_code(self.protocol)) if c]
        if codes:
            config["code"] = "+".join(codes)
        return config


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; asking for CUDA without one is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here; use --device cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}'; use auto, cpu or cuda") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name}: lifelong runs on cpu or cuda; use auto, cpu or cuda")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(
            f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s); "
            "use cuda or cuda:0"
        )
    return device


def execute(
    spec: RunSpec,
    stream: Stream,
    device: torch.device,
    *,
    progress: bool = False,
    checkpoint: Path | None = None,
    data_dir: str | None = None,
) -> RunResult:
    """Train ``spec.strategy`` (a fresh copy) on ``stream`` and evaluate it.

    Evaluates every task before training (the init row b), after each task (the rows of
    R) and every ``eval_every`` batches (the curves). With ``checkpoint``, the state is
    saved there after every task and a run that finds a checkpoint of the same
    configuration resumes after its last completed task, with identical results. A loss
    that becomes NaN or infinite stops the run at the end of that task; the result then
    has ``status == "diverged"`` and says where.
    """
    if not spec.strategy.resumable:
        checkpoint = None
    stream = stream.to(device)
    (result,) = train(
        [spec],
        [stream],
        lambda: OneSeed(spec, stream, device, data_dir),
        progress=progress,
        checkpoint=checkpoint,
    )
    return result


class Trainer(typing.Protocol):
    """What the loop of :func:`train` trains: ``S`` seeds of one configuration, each with
    its own stream, weights and draws (:class:`OneSeed`, or seeds stacked into one batched
    model, :mod:`lifelong.execution.vectorized`)."""

    device: str  # as the results name it

    def batches(self, task_id: int) -> Iterator[Batch]:
        """One epoch's batches of task ``task_id`` (each seed's, stacked when ``S > 1``)."""

    def before_task(self, task_id: int) -> None: ...

    def step(self, batch: Batch) -> torch.Tensor:
        """One step on ``batch``; every seed's loss ``[S]``."""

    def after_task(self, task_id: int, alive: list[bool]) -> None:
        """Consolidate the seeds still ``alive`` (a diverged seed stops before this)."""

    def evaluate(self) -> torch.Tensor:
        """Accuracy ``[S, T]`` of every seed on every task of its stream (no host sync;
        its numbers may be computed later, up to :meth:`settle`)."""

    def settle(self) -> None:
        """Finish the evaluations still under way (before their numbers are read)."""

    def online(self) -> list[dict[str, Any]]:
        """Each seed's record of the online measurements (:mod:`lifelong.evaluation.anytime`; empty
        lists when the stream options ask for none)."""

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the trained state (tensors, numbers, strings)."""

    def load_state(self, state: dict[str, Any]) -> None: ...


def evaluation_rows(protocol: Protocol, model: nn.Module, stream: Stream, device: str) -> int:
    """Test samples per evaluation batch: ``eval_batch_size``, or on a CPU, for a model
    whose training batch makes a :func:`~lifelong.execution.allocator.large_step` (a conv
    net), at most twice the training batch, whose activations stay cache-sized and under
    the allocator's threshold. ``cnn`` on 28x28 images, one thread (2026-12-05): 117 ms
    per 1,000 test images in batches of 64 against 534 ms in batches of 2,048. The
    accuracies are the same: each test sample's prediction is its own."""
    rows = protocol.eval_batch_size
    if device != "cpu":
        return rows
    if large_step(activation_bytes(model, stream) * protocol.batch_size):
        return min(rows, 2 * protocol.batch_size)
    return rows


class OneSeed:
    """One seed's strategy on its own model: an ordinary run.

    With hidden boundaries (``boundaries=hidden``) the strategy sees task ids 0 and no
    boundary hooks; with ``detect`` the hooks fire where
    :class:`lifelong.execution.boundaries.PlateauDetector` finds them, on the recent samples,
    and the task id it sees is the count of boundaries detected so far (0, 1, 2, ...).
    The online metrics (:class:`lifelong.evaluation.anytime.OnlineRecorder`) are taken on
    their schedule.
    """

    def __init__(
        self, spec: RunSpec, stream: Stream, device: torch.device, data_dir: str | None
    ) -> None:
        self.stream, self.protocol, self.options = stream, spec.protocol, spec.options
        self.device = str(torch.empty(0, device=device).device)  # "cuda:0" for "cuda"
        torch.manual_seed(spec.seed)
        self.model = build_model(self.protocol, stream, device)
        self.device_type = device.type
        self.eval_rows = evaluation_rows(self.protocol, self.model, stream, device.type)
        self.strategy = dataclasses.replace(spec.strategy)
        fast = self.protocol.fast and self.protocol.amp == "none"  # accelerations are float32
        info = StreamInfo.of(
            stream, spec.scenario, spec.seed, data_dir, fast, self.protocol.batch_size
        )
        info = dataclasses.replace(info, boundaries=self.options.boundaries_given)
        self.sampling = generator(device, spec.seed, 1)
        self.order = generator(device, spec.seed, 2)
        self.augment = generator(device, spec.seed, 3)
        self.strategy.setup(self.model, info, self.sampling)
        self.inputs = EvaluationInputs()
        online = generator(device, spec.seed, 4)  # its own draws: the run's stay as they were
        self.recorder = OnlineRecorder(stream, self.options, self.protocol.batch_size, online)
        detect = self.options.boundaries == "detect"
        self.detector = PlateauDetector() if detect else None
        self.recent = RecentSamples()
        self.task = 0

    def batches(self, task_id: int) -> Iterator[Batch]:
        seen = self.strategy.trains_on == "seen"
        data = _union(self.stream, task_id) if seen else training_data(self.stream.tasks[task_id])
        for batch in _batches(
            data, self.protocol.batch_size, self.order, self.augment, self.stream.ordered
        ):
            self.recorder.observe(batch.task_ids, batch.y)
            if not self.options.boundaries_given:  # never the true task id
                task = self.detected_task()
                batch = Batch(batch.x, batch.y, torch.full_like(batch.task_ids, task), task)
            yield batch

    def detected_task(self) -> int:
        """The task id the strategy sees with hidden boundaries: 0, or with ``detect`` the
        number of boundaries detected so far (a running count, never the true id)."""
        return len(self.recorder.record["detected"]) if self.detector is not None else 0

    def predict(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        """The strategy's scores; with hidden boundaries the ids it is shown are the ones
        it trains with (:meth:`detected_task`), not the evaluated task's."""
        if not self.options.boundaries_given:
            task_ids = torch.full_like(task_ids, self.detected_task())
        return self.strategy.predict(x, task_ids)

    def before_task(self, task_id: int) -> None:
        self.task = task_id
        with eval_mode(self.model):  # the online measurements leave batch norm alone
            composite = self.strategy.as_composite()
            head = composite.head if composite is not None else None
            self.recorder.start_task(self.stream.tasks[task_id], self.model, self.predict, head)
        if self.options.boundaries_given:
            self.strategy.before_task(training_data(self.stream.tasks[task_id]))

    def step(self, batch: Batch) -> torch.Tensor:
        with autocast(self.protocol, self.device_type):
            loss = self.strategy.train_step(batch)
        check_loss(self.strategy, loss)
        if batch.glance == self.protocol.glances - 1:
            task = self.stream.tasks[self.task]
            self.recorder.after_batch(len(batch.y), task, self.model, self.predict)
            if self.detector is not None:
                self._detect(batch, float(loss))
        return loss.reshape(1)

    def _detect(self, batch: Batch, loss: float) -> None:
        """Feed the detector; at a detected boundary, the hooks run on the recent samples."""
        assert self.detector is not None
        self.recent.add(batch)
        if self.detector.update(loss):
            ended = self.detected_task()
            self.recorder.detected()
            self.strategy.after_task(self.recent.data(ended))
            self.strategy.before_task(self.recent.data(ended + 1))

    def after_task(self, task_id: int, alive: list[bool]) -> None:
        self.recorder.end_task()
        if self.options.boundaries_given:
            self.strategy.after_task(training_data(self.stream.tasks[task_id]))

    def evaluate(self) -> torch.Tensor:
        """Every task's accuracy with the model in eval mode (batch norm's running
        statistics, no dropout), back in training mode after."""
        with eval_mode(self.model), autocast(self.protocol, self.device_type):
            shown = None if self.options.boundaries_given else self.detected_task()
            return evaluate(self.strategy, self.stream, self.eval_rows, self.inputs, shown)[None]

    def settle(self) -> None:
        """Nothing: the evaluations are done in place."""

    def online(self) -> list[dict[str, Any]]:
        return [self.recorder.record]

    def state(self) -> dict[str, Any]:
        return {
            "torch_rng": torch.get_rng_state(),
            "strategy": capture(self.strategy),
            "model": capture(self.model),
            "order": self.order.get_state(),
            "sampling": self.sampling.get_state(),
            "augment": self.augment.get_state(),
            "online": self.recorder.state(),
            "detector": self.detector.state() if self.detector is not None else {},
            "recent": self.recent.state(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch_rng"])
        restore(self.model, state["model"])
        restore(self.strategy, state["strategy"])
        self.order.set_state(state["order"])
        self.sampling.set_state(state["sampling"])
        self.recorder.load_state(state["online"])
        if self.detector is not None:
            self.detector.load_state(state["detector"])
        self.recent.load_state(state["recent"])
        if "augment" in state:  # a checkpoint of before augmentation existed: none drawn
            self.augment.set_state(state["augment"])


def autocast(protocol: Protocol, device_type: str) -> Any:
    """The context of a step and an evaluation: bf16 autocast with ``amp=bf16``, else none."""
    if protocol.amp == "bf16":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train(
    specs: Sequence[RunSpec],
    streams: Sequence[Stream],
    trainer: Callable[[], Trainer],
    *,
    progress: bool = False,
    checkpoint: Path | None = None,
    label: str = "",
) -> list[RunResult]:
    """The loop over tasks, epochs, batches and glances of the seeds ``specs`` (one
    configuration; ``streams`` on the trainer's device) that ``trainer()`` builds; one
    result per seed. See :func:`execute` for the schedule, checkpoints and divergence."""
    run = _Run(specs, streams, trainer())
    if checkpoint is not None and checkpoint.exists():
        try:
            run.load(checkpoint)
        except Exception as error:  # damaged, or state this setup cannot take: start afresh
            run.trainer.settle()
            aside = set_aside(checkpoint)
            warnings.warn(
                f"{checkpoint} cannot be resumed from ({_why_not_loaded(error)}); "
                f"set aside as {aside.name}, the run starts afresh",
                RuntimeWarning,
                stacklevel=3,
            )
            run = _Run(specs, streams, trainer())
    bar = _progress_bar(specs[0], streams[0], run.next_task, enabled=progress, label=label)
    try:
        for task in streams[0].tasks[run.next_task :]:
            run.train_task(task.id, bar)
            if not any(run.alive):
                break
            if checkpoint is not None and task.id + 1 < streams[0].n_tasks:
                checkpoint = _save_or_warn(run, checkpoint)
    finally:
        if bar is not None:
            bar.close()
        run.trainer.settle()
    return [run.result(s) for s in range(len(specs))]


def _save_or_warn(run: _Run, checkpoint: Path) -> Path | None:
    """Save a checkpoint; None (no more checkpoints) when the state cannot be saved."""
    try:
        run.save(checkpoint)
    except (TypeError, OSError) as error:  # a plug-in's own types; a full disk
        warnings.warn(
            f"{run.specs[0].strategy.name} cannot be checkpointed ({error}); "
            "it runs on without checkpoints",
            RuntimeWarning,
            stacklevel=4,
        )
        return None
    return checkpoint


class _Run:
    """The state of one run of ``S`` seeds between task boundaries (what a checkpoint holds)."""

    def __init__(self, specs: Sequence[RunSpec], streams: Sequence[Stream], trainer: Trainer):
        self.specs, self.streams, self.protocol = specs, streams, specs[0].protocol
        self.trainer = trainer
        self.started = time.perf_counter()
        self.elapsed_before = 0.0
        self.init = trainer.evaluate()
        self.rows: list[torch.Tensor] = []
        self.curves: list[tuple[int, int, torch.Tensor]] = [(0, -1, self.init)]
        self.step = 0
        self.next_task = 0
        self.alive = [True] * len(specs)
        self.stops: list[tuple[int, int, str]] = [(1 << 62, 1 << 62, "")] * len(specs)

    @property
    def key(self) -> str:
        if len(self.specs) == 1:
            return run_key(self.specs[0].config())
        return run_key({"seeds stacked": [spec.config() for spec in self.specs]})

    def train_task(self, task_id: int, bar: Any) -> None:
        """Train one task, evaluate on the schedule, and check the losses stayed finite."""
        protocol, trainer = self.protocol, self.trainer
        trainer.before_task(task_id)
        first_step, losses = self.step, []
        for _epoch in range(protocol.epochs):
            for batch in trainer.batches(task_id):
                for glance in range(protocol.glances):
                    seen = (
                        batch
                        if glance == batch.glance
                        else dataclasses.replace(batch, glance=glance)
                    )
                    loss = trainer.step(seen)
                self.step += 1
                losses.append(loss.detach())  # no graph kept until the task ends
                if protocol.eval_every and self.step % protocol.eval_every == 0:
                    self.curves.append((self.step, task_id, trainer.evaluate()))
                if bar is not None:
                    bar.update(1)
                    if self.step % 25 == 0 and len(self.specs) == 1:
                        bar.set_postfix(task=task_id, loss=f"{float(loss):.3f}")
        for s, bad in enumerate(_first_nonfinite(losses, len(self.specs))):  # one host sync
            if self.alive[s] and bad >= 0:  # not the broken model's curve points
                self.alive[s] = False
                step = first_step + bad + 1
                curves = sum(1 for c in self.curves if c[0] < step)
                why = f"loss became NaN or infinite at task {task_id}, step {step}"
                self.stops[s] = (len(self.rows), curves, why)
        if not any(self.alive):
            return
        trainer.after_task(task_id, self.alive)
        self.rows.append(trainer.evaluate())
        self.curves.append((self.step, task_id, self.rows[-1]))
        self.next_task = task_id + 1

    def save(self, path: Path) -> None:
        """Write the state after the last completed task, atomically."""
        self.trainer.settle()
        state = {
            "key": self.key,
            "next_task": self.next_task,
            "step": self.step,
            "init": self.init.cpu(),
            "rows": [row.cpu() for row in self.rows],
            "curves": [[s, t, a.cpu()] for s, t, a in self.curves],
            "alive": list(self.alive),
            "stops": [list(stop) for stop in self.stops],
            "trainer": self.trainer.state(),
            "elapsed": self.elapsed_before + time.perf_counter() - self.started,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # one per writing process
        try:
            torch.save(state, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def load(self, path: Path) -> None:
        """Continue from a checkpoint written by :meth:`save` for the same configuration."""
        state = torch.load(path, map_location=self.init.device, weights_only=True)
        if state["key"] != self.key:
            return  # another configuration's checkpoint: start afresh
        _check_state(state, self.streams[0].n_tasks, tuple(self.init.shape))
        device = self.init.device
        self.next_task, self.step = state["next_task"], state["step"]
        self.init = state["init"].to(device)
        self.rows = [row.to(device) for row in state["rows"]]
        self.curves = [(s, t, a.to(device)) for s, t, a in state["curves"]]
        self.alive = list(state["alive"])
        self.stops = [(int(r), int(c), str(w)) for r, c, w in state["stops"]]
        self.trainer.load_state(state["trainer"])
        self.elapsed_before = state["elapsed"]

    def result(self, s: int) -> RunResult:
        """Seed ``s``'s result (partial rows, NaN metrics and a status when it diverged);
        ``wall_s`` is its share of the run's time."""
        stream, spec = self.streams[s], self.specs[s]
        rows, curves, why = self.stops[s]
        b = self.init[s].cpu().double().numpy()
        matrix = [row[s].cpu().double().tolist() for row in self.rows[:rows]]
        online = self.trainer.online()[s]
        if why:
            scores = {name: math.nan for name in ("acc", "bwt", "fwt", "forgetting", "la", "bti")}
        else:
            scores = metrics.summarize(np.array(matrix), b)
            scores.update(metrics.online_summary(online))
        wall = self.elapsed_before + time.perf_counter() - self.started
        return RunResult(
            scenario=spec.scenario.name,
            strategy=spec.strategy.name,
            seed=spec.seed,
            config=spec.config(),
            key=run_key(spec.config()),
            task_names=[task.name for task in stream.tasks],
            matrix=matrix,
            init=b.tolist(),
            metrics=scores,
            curves=[Curve(st, t, a[s].tolist()) for st, t, a in _to_host(self.curves[:curves])],
            wall_s=wall / len(self.specs),
            device=self.trainer.device,
            status="diverged" if why else "ok",
            error=why,
            chance=1 / stream.n_outputs,
            online={k: v for k, v in online.items() if v},
        )


def _check_state(state: dict[str, Any], n_tasks: int, shape: tuple[int, ...]) -> None:
    """Refuse a checkpoint whose progress does not fit the stream (a checkpoint is written
    after task ``next_task - 1`` of ``n_tasks``, never after the last)."""
    next_task, rows = state["next_task"], state["rows"]
    if not isinstance(next_task, int) or not 1 <= next_task < n_tasks:
        raise CheckpointMismatch(f"next_task {next_task!r} is not in 1..{n_tasks - 1}")
    if not isinstance(state["step"], int) or state["step"] < 0:
        raise CheckpointMismatch(f"step {state['step']!r} is not a count of batches")
    if len(rows) != next_task:
        raise CheckpointMismatch(f"{len(rows)} rows of R for {next_task} tasks trained")
    for vector in (state["init"], *rows, *(c[2] for c in state["curves"])):
        if tuple(vector.shape) != shape:
            raise CheckpointMismatch(f"an evaluation of shape {tuple(vector.shape)}")


def _why_not_loaded(error: Exception) -> str:
    """One line on why a checkpoint was not loaded (never torch's advice to unpickle it)."""
    if isinstance(error, pickle.UnpicklingError):
        return "it holds objects other than tensors and numbers, which are never loaded"
    if isinstance(error, OSError):
        return error.strerror or type(error).__name__
    first = next((line for line in str(error).splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {first.strip()}" if first else type(error).__name__


KEPT_TEST_BYTES = 64 * 1024 * 1024
"""A stream whose test inputs take at most this many bytes as floats has them converted
once and kept for every evaluation of a run (bytes)."""


class EvaluationInputs:
    """A stream's test samples, task after task, as the model's float inputs.

    Up to :data:`KEPT_TEST_BYTES` they are converted once and kept for every later
    evaluation (Split-MNIST's 1,000 test digits: 3 MB); a larger test set is converted
    batch by batch into one buffer kept across evaluations, since a fresh float tensor per
    batch (megabytes, above the pinned mmap threshold) would be mapped and page-faulted
    anew every time. A batch it yields is valid until the next one.
    """

    def __init__(self, limit: int = KEPT_TEST_BYTES) -> None:
        self.limit = limit
        self.stream: Stream | None = None
        self.kept: torch.Tensor | None = None
        self.buffer: torch.Tensor | None = None
        self.layout: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def targets(
        self, stream: Stream
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The stream's test targets laid end to end, each sample's task (its position in
        the stream) and task id, and each task's sample count (at least 1), on the
        stream's device; built once per stream, with device operations only."""
        if stream is not self.stream or self.layout is None:
            self.stream, self.kept = stream, None
            tasks = stream.tasks
            y = torch.cat([t.y_test for t in tasks])
            owner = torch.cat([torch.full_like(t.y_test, i) for i, t in enumerate(tasks)])
            ids = torch.cat([torch.full_like(t.y_test, t.id) for t in tasks])
            sizes = torch.bincount(owner, minlength=len(tasks)).clamp_min_(1)
            self.layout = (y, owner, ids, sizes)
            self._keep(stream)
        return self.layout

    def _keep(self, stream: Stream) -> None:
        """Convert the test inputs once when they take at most :attr:`limit` bytes."""
        tasks = stream.tasks
        total = sum(len(t.y_test) for t in tasks)
        dim = tasks[0].x_test[:1].flatten(1).shape[1] if tasks else 0
        if 0 < total * dim * 4 <= self.limit:
            self.kept = self._convert(tasks, 0, total)

    def batches(self, stream: Stream, batch_size: int) -> Iterator[tuple[int, torch.Tensor]]:
        """``(first row, float inputs)`` of the stream's test samples, ``batch_size`` rows
        at a time (a batch may span the end of one task and the start of the next)."""
        tasks = stream.tasks
        total = sum(len(t.y_test) for t in tasks)
        self.targets(stream)
        for start in range(0, total, batch_size):
            end = min(start + batch_size, total)
            if self.kept is not None:
                yield start, self.kept[start:end]
            else:
                yield start, self._convert(tasks, start, end, reuse=True)

    def _convert(
        self, tasks: Sequence[Task], start: int, end: int, *, reuse: bool = False
    ) -> torch.Tensor:
        """Test samples ``start:end`` of the tasks laid end to end, as floats: each task's
        rows by its own conversion (``x / 255`` or its ``inputs``' normalisation)."""
        first = 0
        out: torch.Tensor | None = None
        for task in tasks:
            rows = len(task.y_test)
            a, b = max(start - first, 0), min(end - first, rows)
            first += rows
            if a >= b:
                continue
            raw = task.x_test[a:b].flatten(1)
            if out is None:
                out = self._empty(end - start, raw.shape[1], raw.device, reuse)
            at = first - rows + a - start
            floats = out[at : at + b - a].copy_(raw)
            floats.div_(255) if task.inputs is None else task.inputs.normalise_(floats)
        assert out is not None  # start < end
        return out

    def _empty(self, rows: int, dim: int, device: torch.device, reuse: bool) -> torch.Tensor:
        if not reuse:
            return torch.empty(rows, dim, device=device)
        size = rows * dim
        if self.buffer is None or self.buffer.numel() < size or self.buffer.device != device:
            self.buffer = torch.empty(size, device=device)
        return self.buffer[:size].view(rows, dim)


@torch.inference_mode()
def evaluate(
    strategy: Strategy,
    stream: Stream,
    batch_size: int,
    inputs: EvaluationInputs | None = None,
    task_id: int | None = None,
) -> torch.Tensor:
    """Accuracy on every task's test set, float ``[T]`` on the stream's device (no sync).
    ``strategy.predict`` is shown each sample's task id, or ``task_id`` for every sample
    when given (hidden boundaries: the id the strategy trains with, never the true one).
    The test sets are evaluated end to end in batches of ``batch_size`` rows, which may
    hold two tasks' samples (each sample's prediction is its own); the inputs are reused
    across evaluations, so ``predict`` reads them and does not write to them."""
    inputs = inputs or EvaluationInputs()
    y, owner, ids, sizes = inputs.targets(stream)
    hits = []
    for start, x in inputs.batches(stream, batch_size):
        end = start + len(x)
        shown = (
            ids[start:end].clone() if task_id is None else torch.full_like(y[start:end], task_id)
        )
        scores = strategy.predict(x, shown)
        check_scores(strategy, scores, (len(x), stream.n_outputs))
        hits.append(scores.argmax(1) == y[start:end])
    correct = torch.zeros_like(sizes)
    if hits:
        correct.index_add_(0, owner, torch.cat(hits).long())
    return correct.double() / sizes


def check_loss(strategy: Strategy, loss: object) -> None:
    """``train_step`` returns a 0-d loss tensor (checked without a host sync).

    Raises:
        ContractError: naming the rule and what came instead.
    """
    if not isinstance(loss, torch.Tensor):
        hint = (
            " (return the tensor, e.g. loss.detach(), not loss.item())"
            if isinstance(loss, float)
            else ""
        )
        raise ContractError(
            f"{strategy.name}: train_step must return a scalar loss tensor; "
            f"got {type(loss).__name__}{hint}"
        )
    if loss.ndim != 0:
        raise ContractError(
            f"{strategy.name}: train_step must return a scalar loss tensor; got shape "
            f"{list(loss.shape)} (reduce per-sample losses, e.g. with .mean())"
        )


def check_scores(strategy: Strategy, scores: object, shape: tuple[int, int]) -> None:
    """``predict`` returns one score per sample and output, float ``[B, n_outputs]``.

    Raises:
        ContractError: naming the rule and what came instead.
    """
    rule = f"{strategy.name}: predict must return float scores of shape {list(shape)}"
    if not isinstance(scores, torch.Tensor):
        raise ContractError(f"{rule} (batch, outputs); got {type(scores).__name__}")
    if tuple(scores.shape) != shape or not scores.is_floating_point():
        raise ContractError(
            f"{rule} (batch, outputs; lifelong takes the argmax), not labels; "
            f"got {scores.dtype} of shape {list(scores.shape)}"
        )


def _batches(
    data: TrainingData,
    batch_size: int,
    generator: torch.Generator,
    augment: torch.Generator | None = None,
    ordered: bool = False,
) -> Iterator[Batch]:
    """Shuffled (or, when ``ordered``, in-order) index-slice batches of ``data`` (no
    DataLoader), turned to floats by ``data.inputs`` (its random crops and flips drawn from
    ``augment``; None: none)."""
    if ordered:
        order = torch.arange(len(data.y), device=data.y.device)
    else:
        order = torch.randperm(len(data.y), generator=generator, device=data.y.device)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        x = to_floats(data.x.index_select(0, idx), data.inputs, augment)  # index_select: ~7x
        yield Batch(x, data.y.index_select(0, idx), data.task_ids.index_select(0, idx), data.id)


def _union(stream: Stream, upto: int) -> TrainingData:
    """The training data of tasks 0..upto together (for ``trains_on = "seen"``)."""
    parts = [training_data(task) for task in stream.tasks[: upto + 1]]
    return TrainingData(
        id=upto,
        name=parts[-1].name,
        x=torch.cat([p.x for p in parts]),
        y=torch.cat([p.y for p in parts]),
        task_ids=torch.cat([p.task_ids for p in parts]),
        inputs=parts[-1].inputs,
    )


def generator(device: torch.device, seed: int, stream_id: int) -> torch.Generator:
    """Seed ``seed``'s generator number ``stream_id`` (1: the strategy's draws, 2: the
    data order, 3: the augmentation of training batches, 4: the online measurements'
    sample order)."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + stream_id)


def _first_nonfinite(losses: list[torch.Tensor], seeds: int) -> list[int]:
    """For each seed, the index of the first of a task's step ``losses`` (each ``[seeds]``)
    that is NaN or infinite, -1 when none is."""
    if not losses:
        return [-1] * seeds
    bad = ~torch.isfinite(torch.stack(losses))  # [steps, seeds]
    first = torch.where(bad.any(0), bad.int().argmax(0), -1)
    return [int(i) for i in first.tolist()]


def _to_host(curves: list[tuple[int, int, torch.Tensor]]) -> list[tuple[int, int, torch.Tensor]]:
    if not curves:
        return []
    stacked = torch.stack([c[2] for c in curves]).cpu()
    return [(s, t, stacked[i]) for i, (s, t, _) in enumerate(curves)]


def _progress_bar(
    spec: RunSpec, stream: Stream, first_task: int, *, enabled: bool, label: str = ""
) -> Any:
    """A bar over the run's batches on a terminal (None otherwise); ``label`` names it
    (default: the strategy and seed)."""
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    total = 0
    for task in stream.tasks[first_task:]:
        tasks = stream.tasks[: task.id + 1] if spec.strategy.trains_on == "seen" else [task]
        n = sum(len(t.y_train) for t in tasks)
        total += -(-n // spec.protocol.batch_size) * spec.protocol.epochs
    label = label or f"{spec.strategy.name} seed {spec.seed}"
    return tqdm(total=total, desc=label, unit="batch", leave=False, file=sys.stderr)
