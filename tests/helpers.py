"""Helpers shared by the test files (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lifelong import RunResult, Strategy, Stream, make_task
from lifelong.composition.plan import plan_runs
from lifelong.execution.runner import RunSpec, _Run, execute
from lifelong.models.mlp import MLP
from lifelong.training.functional import load_params

CPU = torch.device("cpu")


def plan_one(
    strategy: str | Strategy,
    settings: Mapping[str, Any] | None = None,
    *,
    seed: int = 0,
    scenario: str = "split-mnist",
) -> RunSpec:
    """The one checked run of ``strategy`` on ``scenario`` with ``seed`` and ``settings``."""
    (spec,) = plan_runs(scenario, [strategy], [seed], settings)
    return spec


def run_one(
    strategy: str | Strategy,
    settings: Mapping[str, Any] | None = None,
    *,
    seed: int = 0,
    stream: Stream | None = None,
    scenario: str = "split-mnist",
) -> RunResult:
    """Plan one run and execute it on the CPU, on ``stream`` (by default the scenario's own)."""
    spec = plan_one(strategy, settings, seed=seed, scenario=scenario)
    return execute(spec, spec.scenario.build(seed) if stream is None else stream, CPU)


def tiny_mlp(
    hidden: tuple[int, ...] = (4,), n_heads: int = 1, dtype: torch.dtype = torch.float64
) -> MLP:
    """An MLP 3-hidden-2 with N(0, 1) weights and biases 0.5 (most ReLUs live on the test
    data), float64 by default for gradient checks."""
    model = MLP(3, hidden, 2, n_heads).to(dtype)
    g = torch.Generator().manual_seed(0)
    load_params(
        model,
        {
            n: torch.randn(p.shape, generator=g, dtype=p.dtype)
            if p.ndim == 2
            else torch.full_like(p, 0.5)
            for n, p in model.named_parameters()
        },
    )
    return model


TINY_FACTORY = """
import numpy as np
import lifelong

def make_dataset():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 10)
    x = np.clip(rng.random((4, 9))[y] + 0.05 * rng.standard_normal((40, 9)), 0, 1)
    return lifelong.from_arrays(x.astype("float32"), y, name="tiny")
"""


def tiny_factory(folder: Path) -> str:
    """A factory file of 40 samples (9 features, 4 classes) in ``folder``, as ``file:function``
    for ``--set dataset=...``."""
    path = folder / "tiny.py"
    path.write_text(TINY_FACTORY)
    return f"{path}:make_dataset"


def painted_stream(
    name: str,
    sample_shape: tuple[int, ...],
    region: Callable[[int], tuple[Any, ...]],
    setting: str,
    n_tasks: int,
    per_class: int,
    seed: int,
) -> Stream:
    """A tiny separable stream of uint8 samples shaped ``sample_shape`` (images when it has
    three dimensions): 2 classes per task, noise in 0-59, class ``c`` brightened by 150 at
    the index ``region(c)`` of a sample (learnable by any model)."""
    generator = torch.Generator().manual_seed(seed)
    tasks = []
    for t in range(n_tasks):
        classes = (2 * t, 2 * t + 1)
        images, labels = [], []
        for split in (per_class, per_class // 2):
            y = torch.tensor(classes).repeat_interleave(split)
            x = torch.randint(
                0, 60, (len(y), *sample_shape), generator=generator, dtype=torch.uint8
            )
            for c in classes:
                x[(y == c, *region(c))] += 150
            images.append(x)
            labels.append(y)
        train, test = (images[0], images[1]), (labels[0], labels[1])
        name_t = f"{classes[0]}/{classes[1]}"
        tasks.append(make_task(t, name_t, train, test, classes, 2 * t, setting))  # type: ignore[arg-type]
    n_outputs = 2 * n_tasks if setting == "class" else 2
    n_heads = n_tasks if setting == "task" else 1
    shape = sample_shape if len(sample_shape) == 3 else ()
    dim = math.prod(sample_shape)
    return Stream(name, setting, tuple(tasks), n_outputs, n_heads, dim, shape)  # type: ignore[arg-type]


def image_stream(
    shape: tuple[int, int, int], setting: str = "class", n_tasks: int = 2, per_class: int = 6
) -> Stream:
    """A tiny stream of uint8 images ``[N, C, H, W]``, 2 classes per task, each class
    brightening its own half of one channel (learnable by any model)."""
    channels, height = shape[0], shape[1]

    def region(c: int) -> tuple[Any, ...]:
        half = slice(0, height // 2) if c % 2 else slice(height // 2, height)
        return c % channels, half

    return painted_stream("images", shape, region, setting, n_tasks, per_class, seed=1)


SMALL_MODELS: dict[str, dict[str, str]] = {
    "mlp": {"hidden": "16,16"},  # two hidden layers: an RLN before OML's two-layer PLN
    "cnn": {"model.channels": "2,4", "model.hidden": "8"},
    "resnet18-reduced": {"model.nf": "2"},
    "lamaml-conv": {"model.channels": "4", "model.hidden": "8"},
}
"""Settings that make each built-in model small enough for quick tests."""


def model_settings(model: str) -> dict[str, str]:
    """``--set`` settings of ``model`` at its small test width."""
    return {"model": model, **SMALL_MODELS[model]}


def finite_differences(
    f: Callable[[], Tensor], tensors: dict[str, Tensor], eps: float = 1e-6
) -> dict[str, Tensor]:
    """Central differences of the scalar ``f()`` with respect to every element of ``tensors``."""
    grads = {}
    for name, t in tensors.items():
        g = torch.zeros_like(t)
        flat = t.data.view(-1)
        for i in range(flat.numel()):
            old = float(flat[i])
            flat[i] = old + eps
            up = f().item()
            flat[i] = old - eps
            down = f().item()
            flat[i] = old
            g.view(-1)[i] = (up - down) / (2 * eps)
        grads[name] = g
    return grads


@contextlib.contextmanager
def crashing_at_task(task: int = 3) -> Iterator[None]:
    """Inside the block a run is interrupted (KeyboardInterrupt) as task ``task`` starts,
    after the tasks before it have reached its checkpoint."""
    original = _Run.train_task

    def crash(self: _Run, task_id: int, bar: Any) -> Any:
        if task_id == task:
            raise KeyboardInterrupt
        return original(self, task_id, bar)

    _Run.train_task = crash  # type: ignore[method-assign]
    try:
        yield
    finally:
        _Run.train_task = original  # type: ignore[method-assign]
