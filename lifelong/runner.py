"""The loop over tasks, epochs and batches, with the evaluation schedule and seeding."""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass

import torch

from lifelong import metrics
from lifelong.errors import UserError
from lifelong.model import MLP
from lifelong.params import as_config
from lifelong.protocol import Protocol
from lifelong.result import Curve, RunResult, run_key
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
        """The full configuration, as saved in ``summary.json`` and hashed for the run key."""
        return {
            "scenario": {"name": self.scenario.name, **as_config(self.scenario)},
            "strategy": {"name": self.strategy.name, **as_config(self.strategy)},
            "protocol": as_config(self.protocol),
            "seed": self.seed,
        }


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; asking for CUDA without one is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}'; use auto, cpu or cuda") from None


def execute(
    spec: RunSpec,
    stream: Stream,
    device: torch.device,
    *,
    progress: bool = False,
) -> RunResult:
    """Train ``spec.strategy`` (a fresh copy) on ``stream`` and evaluate it.

    Evaluates every task before training (the init row b), after each task (the rows of
    R) and every ``eval_every`` batches (the curves).
    """
    start = time.perf_counter()
    torch.manual_seed(spec.seed)
    stream = stream.to(device)
    protocol = spec.protocol
    model = MLP(stream.input_dim, protocol.hidden, stream.n_outputs, stream.n_heads).to(device)
    strategy = dataclasses.replace(spec.strategy)
    info = StreamInfo(
        stream.n_tasks, stream.setting, stream.n_outputs, stream.n_heads, stream.input_dim
    )
    strategy.setup(model, info, _generator(device, spec.seed, 1))
    order = _generator(device, spec.seed, 2)
    init = evaluate(strategy, stream, protocol.eval_batch_size)
    rows: list[torch.Tensor] = []
    curves: list[tuple[int, int, torch.Tensor]] = [(0, -1, init)]
    step = 0
    bar = _progress_bar(spec, stream, protocol, enabled=progress)
    for task in stream.tasks:
        data = training_data(task)
        strategy.before_task(data)
        train = _union(stream, task.id) if strategy.trains_on == "seen" else data
        for _epoch in range(protocol.epochs):
            for batch in _batches(train, protocol.batch_size, order):
                for glance in range(protocol.glances):
                    loss = strategy.train_step(dataclasses.replace(batch, glance=glance))
                step += 1
                if protocol.eval_every and step % protocol.eval_every == 0:
                    curves.append(
                        (step, task.id, evaluate(strategy, stream, protocol.eval_batch_size))
                    )
                if bar is not None:
                    bar.update(1)
                    if step % 25 == 0:
                        bar.set_postfix(task=task.id, loss=f"{float(loss):.3f}")
        strategy.after_task(data)
        rows.append(evaluate(strategy, stream, protocol.eval_batch_size))
        curves.append((step, task.id, rows[-1]))
    if bar is not None:
        bar.close()
    matrix = torch.stack(rows).cpu().double().numpy()
    b = init.cpu().double().numpy()
    return RunResult(
        scenario=spec.scenario.name,
        strategy=spec.strategy.name,
        seed=spec.seed,
        config=spec.config(),
        key=run_key(spec.config()),
        task_names=[task.name for task in stream.tasks],
        matrix=matrix.tolist(),
        init=b.tolist(),
        metrics=metrics.summarize(matrix, b),
        curves=[Curve(s, t, a.tolist()) for s, t, a in _to_host(curves)],
        wall_s=time.perf_counter() - start,
        device=str(device),
    )


@torch.inference_mode()
def evaluate(strategy: Strategy, stream: Stream, batch_size: int) -> torch.Tensor:
    """Accuracy on every task's test set, float ``[T]`` on the stream's device (no sync)."""
    accuracies = []
    for task in stream.tasks:
        correct = torch.zeros((), dtype=torch.long, device=task.y_test.device)
        for start in range(0, len(task.y_test), batch_size):
            x = task.x_test[start : start + batch_size].float().div_(255)
            y = task.y_test[start : start + batch_size]
            ids = torch.full_like(y, task.id)
            correct += (strategy.predict(x, ids).argmax(1) == y).sum()
        accuracies.append(correct.double() / max(len(task.y_test), 1))
    return torch.stack(accuracies)


def _batches(data: TrainingData, batch_size: int, generator: torch.Generator):
    """Shuffled index-slice batches of ``data`` (no DataLoader)."""
    order = torch.randperm(len(data.y), generator=generator, device=data.y.device)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        yield Batch(data.x[idx].float().div_(255), data.y[idx], data.task_ids[idx], data.id)


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


def _progress_bar(spec: RunSpec, stream: Stream, protocol: Protocol, *, enabled: bool):
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    total = 0
    for task in stream.tasks:
        n = (
            sum(len(t.y_train) for t in stream.tasks[: task.id + 1])
            if spec.strategy.trains_on == "seen"
            else len(task.y_train)
        )
        total += -(-n // protocol.batch_size) * protocol.epochs
    label = f"{spec.strategy.name} seed {spec.seed}"
    return tqdm(total=total, desc=label, unit="batch", leave=False, file=sys.stderr)
