"""The loop over tasks, epochs and batches, with the evaluation schedule and seeding."""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lifelong import metrics
from lifelong.allocator import pin_mmap_threshold
from lifelong.checkpoint import CheckpointMismatch, capture, restore
from lifelong.errors import ContractError, UserError
from lifelong.model import MLP
from lifelong.params import as_config
from lifelong.protocol import Protocol
from lifelong.result import Curve, RunResult, code_hash, run_key
from lifelong.results_dir import set_aside
from lifelong.scenario import ScenarioFamily
from lifelong.strategy import Batch, Strategy, StreamInfo
from lifelong.stream import Stream, TrainingData, training_data

__all__ = ["RunSpec", "evaluate", "execute", "resolve_device"]


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one run's numbers."""

    scenario: ScenarioFamily
    strategy: Strategy
    protocol: Protocol
    seed: int

    def config(self) -> dict[str, object]:
        """The full configuration, as saved in ``summary.json`` and hashed for the run key.

        A plug-in strategy (a class from outside lifelong) adds ``code``, a hash of its
        file's source and its class name, so that editing the file makes new runs.
        """
        config: dict[str, object] = {
            "scenario": {"name": self.scenario.name, **as_config(self.scenario)},
            "strategy": {"name": self.strategy.name, **as_config(self.strategy)},
            "protocol": as_config(self.protocol),
            "seed": self.seed,
        }
        code = code_hash(type(self.strategy))
        if code:
            config["code"] = code
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
    pin_mmap_threshold()
    if not spec.strategy.resumable:
        checkpoint = None
    run = _Run(spec, stream.to(device), device, data_dir)
    if checkpoint is not None and checkpoint.exists():
        try:
            run.load(checkpoint)
        except Exception as error:  # damaged, or state this setup cannot take: start afresh
            aside = set_aside(checkpoint)
            warnings.warn(
                f"{checkpoint} cannot be resumed from ({_why_not_loaded(error)}); "
                f"set aside as {aside.name}, the run starts afresh",
                RuntimeWarning,
                stacklevel=2,
            )
            run = _Run(spec, stream.to(device), device, data_dir)
    bar = _progress_bar(spec, stream, run.next_task, enabled=progress)
    for task in stream.tasks[run.next_task :]:
        run.train_task(task.id, bar)
        if run.diverged:
            break
        if checkpoint is not None and task.id + 1 < stream.n_tasks:
            try:
                run.save(checkpoint)
            except (TypeError, OSError) as error:  # a plug-in's own types; a full disk
                warnings.warn(
                    f"{spec.strategy.name} cannot be checkpointed ({error}); "
                    "it runs on without checkpoints",
                    RuntimeWarning,
                    stacklevel=2,
                )
                checkpoint = None
    if bar is not None:
        bar.close()
    return run.result()


class _Run:
    """The state of one run between task boundaries (what a checkpoint holds)."""

    def __init__(
        self, spec: RunSpec, stream: Stream, device: torch.device, data_dir: str | None
    ) -> None:
        self.spec, self.stream, self.protocol = spec, stream, spec.protocol
        self.started = time.perf_counter()
        self.elapsed_before = 0.0
        torch.manual_seed(spec.seed)
        hidden = self.protocol.hidden
        self.model = MLP(stream.input_dim, hidden, stream.n_outputs, stream.n_heads).to(device)
        self.strategy = dataclasses.replace(spec.strategy)
        info = StreamInfo.of(stream, spec.scenario, spec.seed, data_dir, self.protocol.fast)
        self.sampling = _generator(device, spec.seed, 1)
        self.order = _generator(device, spec.seed, 2)
        self.strategy.setup(self.model, info, self.sampling)
        self.inputs = InputBuffer()
        self.init = self.evaluate()
        self.rows: list[torch.Tensor] = []
        self.curves: list[tuple[int, int, torch.Tensor]] = [(0, -1, self.init)]
        self.step = 0
        self.next_task = 0
        self.bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.diverged = ""

    def evaluate(self) -> torch.Tensor:
        return evaluate(self.strategy, self.stream, self.protocol.eval_batch_size, self.inputs)

    def train_task(self, task_id: int, bar: Any) -> None:
        """Train one task, evaluate on the schedule, and check the losses stayed finite."""
        protocol, strategy = self.protocol, self.strategy
        data = training_data(self.stream.tasks[task_id])
        strategy.before_task(data)
        train = _union(self.stream, task_id) if strategy.trains_on == "seen" else data
        for _epoch in range(protocol.epochs):
            for batch in _batches(train, protocol.batch_size, self.order):
                for glance in range(protocol.glances):
                    loss = strategy.train_step(dataclasses.replace(batch, glance=glance))
                    check_loss(strategy, loss)
                self.step += 1
                first_bad = (self.bad_step < 0) & ~torch.isfinite(loss)
                self.bad_step = torch.where(first_bad, self.step, self.bad_step)
                if protocol.eval_every and self.step % protocol.eval_every == 0:
                    self.curves.append((self.step, task_id, self.evaluate()))
                if bar is not None:
                    bar.update(1)
                    if self.step % 25 == 0:
                        bar.set_postfix(task=task_id, loss=f"{float(loss):.3f}")
        bad_step = int(self.bad_step)  # one host sync per task
        if bad_step >= 0:
            self.diverged = f"loss became NaN or infinite at task {task_id}, step {bad_step}"
            self.curves = [c for c in self.curves if c[0] < bad_step]  # not the broken model
            return
        strategy.after_task(data)
        self.rows.append(self.evaluate())
        self.curves.append((self.step, task_id, self.rows[-1]))
        self.next_task = task_id + 1

    def save(self, path: Path) -> None:
        """Write the state after the last completed task, atomically."""
        state = {
            "key": run_key(self.spec.config()),
            "next_task": self.next_task,
            "step": self.step,
            "init": self.init.cpu(),
            "rows": [row.cpu() for row in self.rows],
            "curves": [[s, t, a.cpu()] for s, t, a in self.curves],
            "torch_rng": torch.get_rng_state(),
            "strategy": capture(self.strategy),
            "model": capture(self.model),
            "order": self.order.get_state(),
            "sampling": self.sampling.get_state(),
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
        if state["key"] != run_key(self.spec.config()):
            return  # another configuration's checkpoint: start afresh
        _check_state(state, self.stream.n_tasks)
        device = self.init.device
        self.next_task, self.step = state["next_task"], state["step"]
        self.init = state["init"].to(device)
        self.rows = [row.to(device) for row in state["rows"]]
        self.curves = [(s, t, a.to(device)) for s, t, a in state["curves"]]
        torch.set_rng_state(state["torch_rng"])
        restore(self.model, state["model"])
        restore(self.strategy, state["strategy"])
        self.order.set_state(state["order"])
        self.sampling.set_state(state["sampling"])
        self.elapsed_before = state["elapsed"]

    def result(self) -> RunResult:
        """The run's result (partial rows, NaN metrics and a status when it diverged)."""
        stream, spec = self.stream, self.spec
        b = self.init.cpu().double().numpy()
        matrix = [row.cpu().double().tolist() for row in self.rows]
        if self.diverged:
            scores = {name: math.nan for name in ("acc", "bwt", "fwt", "forgetting", "la", "bti")}
        else:
            scores = metrics.summarize(torch.stack(self.rows).cpu().double().numpy(), b)
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
            curves=[Curve(s, t, a.tolist()) for s, t, a in _to_host(self.curves)],
            wall_s=self.elapsed_before + time.perf_counter() - self.started,
            device=str(self.init.device),
            status="diverged" if self.diverged else "ok",
            error=self.diverged,
            chance=1 / stream.n_outputs,
        )


def _check_state(state: dict[str, Any], n_tasks: int) -> None:
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
        if tuple(vector.shape) != (n_tasks,):
            raise CheckpointMismatch(f"an evaluation of shape {tuple(vector.shape)}")


def _why_not_loaded(error: Exception) -> str:
    """One line on why a checkpoint was not loaded (never torch's advice to unpickle it)."""
    if isinstance(error, pickle.UnpicklingError):
        return "it holds objects other than tensors and numbers, which are never loaded"
    if isinstance(error, OSError):
        return error.strerror or type(error).__name__
    first = next((line for line in str(error).splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {first.strip()}" if first else type(error).__name__


class InputBuffer:
    """Test inputs turned from uint8 to float in one buffer kept across evaluations.

    A fresh float tensor per evaluation chunk (megabytes, above the pinned mmap
    threshold) would be mapped and page-faulted anew every time. A view it returns is
    valid until the next call."""

    def __init__(self) -> None:
        self.data: torch.Tensor | None = None

    def floats(self, raw: torch.Tensor) -> torch.Tensor:
        """``raw.float() / 255`` in the buffer (grown when ``raw`` does not fit)."""
        size = raw.numel()
        if self.data is None or self.data.numel() < size or self.data.device != raw.device:
            self.data = torch.empty(size, device=raw.device)
        return self.data[:size].view(raw.shape).copy_(raw).div_(255)


@torch.inference_mode()
def evaluate(
    strategy: Strategy, stream: Stream, batch_size: int, inputs: InputBuffer | None = None
) -> torch.Tensor:
    """Accuracy on every task's test set, float ``[T]`` on the stream's device (no sync)."""
    inputs = inputs or InputBuffer()
    accuracies = []
    for task in stream.tasks:
        correct = torch.zeros((), dtype=torch.long, device=task.y_test.device)
        for start in range(0, len(task.y_test), batch_size):
            x = inputs.floats(task.x_test[start : start + batch_size])
            y = task.y_test[start : start + batch_size]
            ids = torch.full_like(y, task.id)
            scores = strategy.predict(x, ids)
            check_scores(strategy, scores, (len(y), stream.n_outputs))
            correct += (scores.argmax(1) == y).sum()
        accuracies.append(correct.double() / max(len(task.y_test), 1))
    return torch.stack(accuracies)


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


def _batches(data: TrainingData, batch_size: int, generator: torch.Generator):
    """Shuffled index-slice batches of ``data`` (no DataLoader)."""
    order = torch.randperm(len(data.y), generator=generator, device=data.y.device)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        x = data.x.index_select(0, idx).float().div_(255)  # index_select: ~7x x[idx]
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
    )


def _generator(device: torch.device, seed: int, stream_id: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + stream_id)


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
