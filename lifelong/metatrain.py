"""Meta-trained initializations (MAML, Reptile, OML) on tasks disjoint from the evaluation stream.

Where the meta-training tasks come from (an init's ``source``; only ever training-split images):

- ``permuted`` (``auto`` for ``permuted-mnist`` and unknown families): the scenario's dataset
  under pixel permutations drawn from ``seed + 1_000_000``, never from the stream's seed.
- ``rotated`` (``auto`` for ``rotated-mnist``): the scenario's dataset rotated by angles in
  [180, 360) degrees, the half turn GEM's generator never uses, at least 10 degrees from
  every evaluation angle (and from 0 for families whose images are not rotated).
- ``uci-digits``, ``fashion-mnist``, ``mnist5k``, ``mnist``: another dataset's images
  (``auto`` for ``split-mnist``: the UCI digits for a digits stream, else Fashion-MNIST
  where it is installed, else ``permuted``; the embedded digits for a Fashion-MNIST stream).
  A permuted or rotated family still applies its own kind of transform, drawn as above.
  ``uci-digits`` is a held-out digits dataset, the 1,797 UCI optical-recognition digits that
  scikit-learn ships (:func:`lifelong.data.load_uci_digits`: other writers, scanner and
  preprocessing than MNIST's), rescaled to MNIST's 20x20 box centred by centre of mass in
  28x28: the ten digit classes of an MNIST stream, none of its images, training or test.
  For OML on Split-MNIST it meta-trains a far better representation than Fashion-MNIST
  (reports/meta-init.md, "Meta-training on held-out digits (UCI)").

Every source builds a pool of ``n_tasks`` tasks laid out like the evaluation stream: the same
number of classes per task, model targets mapped as the stream maps them (class-incremental:
``slot * classes_per_task + position``; domain: the position; task: the position on head
``i mod n_heads``), so a meta-trained initialization fits the stream's model. For split
families a task's classes are a group of a random partition of the source's classes (random
relabelled groups); for permuted and rotated families a task holds every class.

References: Finn et al. 2017 (MAML); Nichol et al. 2018 (Reptile); Javed & White 2019 (OML).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.cache_dir import cache_home
from lifelong.data import load_dataset, load_uci_digits
from lifelong.errors import UserError, closest
from lifelong.functional import Params, load_params, loss_fn, meta_gradient, sgd_inner_loop
from lifelong.params import as_config, param
from lifelong.scenario import ImageScenario
from lifelong.strategy import Batch, StreamInfo

__all__ = [
    "META_SOURCES",
    "MAMLConfig",
    "MetaTask",
    "MetaTaskSource",
    "OMLConfig",
    "ReptileConfig",
    "cache_root",
    "cached_init",
    "meta_init",
    "meta_tasks",
    "meta_train_maml",
    "meta_train_oml",
    "meta_train_reptile",
    "model_shape",
    "pln_names",
]

META_SOURCES: tuple[str, ...] = (
    "auto",
    "fashion-mnist",
    "mnist5k",
    "mnist",
    "uci-digits",
    "permuted",
    "rotated",
)
META_SEED_OFFSET = 1_000_000  # meta-task draws never share a generator with the stream's
TRAIN_SEED_OFFSET = 2_000_000  # sampling and initial weights of meta-training
MIN_ANGLE_GAP = 10.0  # degrees between a meta-training and an evaluation rotation
PLN_PREFIX = "head."  # lifelong.MLP's output layer: OML's prediction network (PLN) ends with it
_CACHE_VERSION = 2  # bump when an algorithm changes, so stale inits are not reused
_DIGITS = ("mnist", "mnist5k")


@dataclass(frozen=True)
class MetaTask:
    """One meta-training task: its classes, target mapping, head and image transform."""

    classes: tuple[int, ...]
    targets: tuple[int, ...]
    head: int
    lookup: Tensor  # int64 [n_classes]: dataset label -> target (-1 outside ``classes``)
    permutation: Tensor | None = None  # int64 [784]
    angle: float | None = None  # degrees


@dataclass(frozen=True)
class MetaTaskSource:
    """A pool of tasks disjoint from an evaluation stream, drawn from a training split.

    Attributes:
        kind: the resolved source (``"permuted"``, ``"rotated"``, ``"fashion-mnist"``, ...).
        dataset: the dataset whose training split supplies the images.
        key: a digest of everything that defines the tasks (for the init cache).
        images: uint8 ``[N, 28, 28]``, the training split of ``dataset`` (never a test
            split; ``uci-digits``, used only here, has no split and gives all 1,797 images).
        labels: int64 ``[N]``.
        tasks: the pool.
        pools: training indices of each task's classes, by class tuple.
        n_outputs: outputs per head of the stream's model.
    """

    kind: str
    dataset: str
    key: str
    images: Tensor
    labels: Tensor
    tasks: tuple[MetaTask, ...]
    pools: Mapping[tuple[int, ...], Tensor]
    n_outputs: int

    def sample_task(self, generator: torch.Generator) -> int:
        """Index of a task drawn uniformly from the pool."""
        return int(torch.randint(len(self.tasks), (1,), generator=generator))

    def sample(
        self, task: int, n: int, generator: torch.Generator, classes: Sequence[int] | None = None
    ) -> Batch:
        """``n`` training samples of ``task`` (with replacement), transformed and mapped.

        Args:
            classes: restrict to these dataset labels of the task (OML's trajectory).

        Returns:
            A Batch: ``x`` float ``[n, 784]`` in [0, 1], ``y`` targets, ``task_ids`` the head.
        """
        spec = self.tasks[task]
        pool = self.pools[spec.classes if classes is None else tuple(classes)]
        pick = torch.randint(len(pool), (n,), generator=generator)
        idx = pool[pick.to(pool.device)]
        x = self.images[idx]
        if spec.angle is not None:
            x = _rotate(x, spec.angle)
        x = x.flatten(1)
        if spec.permutation is not None:
            x = x[:, spec.permutation]
        y = spec.lookup[self.labels[idx]]
        return Batch(x.float().div_(255), y, torch.full_like(y, spec.head), task)

    def sample_mixed(self, n: int, generator: torch.Generator) -> Batch:
        """``n`` samples, each from a task drawn uniformly (OML's random batch)."""
        counts = torch.bincount(
            torch.randint(len(self.tasks), (n,), generator=generator), minlength=len(self.tasks)
        )
        return _cat([self.sample(t, c, generator) for t, c in enumerate(counts.tolist()) if c])

    def to(self, device: torch.device) -> MetaTaskSource:
        """The same source with its tensors on ``device``."""
        tasks = tuple(
            replace(
                t,
                lookup=t.lookup.to(device),
                permutation=None if t.permutation is None else t.permutation.to(device),
            )
            for t in self.tasks
        )
        pools = {k: v.to(device) for k, v in self.pools.items()}
        return replace(
            self,
            images=self.images.to(device),
            labels=self.labels.to(device),
            tasks=tasks,
            pools=pools,
        )


def check_meta_source(
    scenario: ImageScenario, source: str, data_dir: str | None = None
) -> tuple[str, str, str | None]:
    """The meta-training source ``source`` resolves to for ``scenario``, as
    ``(kind, dataset, transform)``; a UserError when it is unknown or would hold the
    stream's own classes. Loads no training data but what ``auto`` needs to decide."""
    if source not in META_SOURCES:
        raise UserError(
            f"source '{source}' of the meta-learned init is unknown"
            f"{closest(source, META_SOURCES)}; choose one of {', '.join(META_SOURCES)}"
        )
    kind = _resolve(scenario, source, data_dir)
    dataset = kind if kind not in ("permuted", "rotated") else scenario.dataset
    transform = kind if kind in ("permuted", "rotated") else _family_transform(scenario)
    same = dataset == scenario.dataset or {dataset, scenario.dataset} <= set(_DIGITS)
    if transform is None and same:
        raise UserError(
            f"source '{kind}' of the meta-learned init holds the classes of the "
            f"{scenario.dataset} stream itself; use source=permuted, rotated or another dataset"
        )
    return kind, dataset, transform


def meta_tasks(
    scenario: ImageScenario,
    info: StreamInfo,
    seed: int,
    data_dir: str | None = None,
    *,
    source: str = "auto",
    n_tasks: int = 20,
) -> MetaTaskSource:
    """The meta-training tasks for a stream of ``scenario`` with seed ``seed`` (module doc).

    Args:
        scenario: the evaluation stream's family and parameters.
        info: the evaluation stream's layout (setting, outputs, heads, number of tasks).
        seed: the run seed; meta tasks are drawn from ``seed + META_SEED_OFFSET``.
        data_dir: where IDX files lie (as for the scenario).
        source: one of :data:`META_SOURCES`.
        n_tasks: tasks in the pool.

    Returns:
        The pool, on the CPU.
    """
    if n_tasks < 1:
        raise UserError(f"meta-training needs at least one task, got n_tasks={n_tasks}")
    kind, dataset, transform = check_meta_source(scenario, source, data_dir)
    images, labels, n_classes = _training_split(dataset, data_dir)
    per_task, n_slots = _layout(info, n_classes)
    g = torch.Generator().manual_seed(seed + META_SEED_OFFSET)
    avoid = _evaluation_angles(scenario, seed) if transform == "rotated" else []
    tasks, partition = [], torch.arange(n_classes)
    for i in range(n_tasks):
        group = i % (n_classes // per_task)
        if group == 0 and per_task < n_classes:
            partition = torch.randperm(n_classes, generator=g)
        classes = tuple(sorted(partition[group * per_task : (group + 1) * per_task].tolist()))
        slot = i % n_slots
        offset = slot * per_task if info.setting == "class" else 0
        lookup = torch.full((n_classes,), -1, dtype=torch.long)
        lookup[list(classes)] = torch.arange(offset, offset + per_task)
        tasks.append(
            MetaTask(
                classes=classes,
                targets=tuple(range(offset, offset + per_task)),
                head=slot if info.setting == "task" else 0,
                lookup=lookup,
                permutation=torch.randperm(784, generator=g) if transform == "permuted" else None,
                angle=_draw_angle(g, avoid) if transform == "rotated" else None,
            )
        )
    groups = {t.classes for t in tasks} | {(c,) for t in tasks for c in t.classes}
    pools = {k: torch.isin(labels, torch.tensor(k)).nonzero().squeeze(1) for k in groups}
    payload: dict[str, Any] = {
        "kind": kind,
        "dataset": dataset,
        "n_train": len(labels),
        "tasks": [_describe(t) for t in tasks],
    }
    if dataset == "uci-digits":  # made here, not read from files: key the pixels themselves
        payload["pixels"] = hashlib.sha256(images.numpy().tobytes()).hexdigest()
    key = _digest(payload)
    return MetaTaskSource(kind, dataset, key, images, labels, tuple(tasks), pools, info.n_outputs)


def _training_split(dataset: str, data_dir: str | None) -> tuple[Tensor, Tensor, int]:
    """Training images, labels and the number of classes of a meta-training dataset."""
    if dataset == "uci-digits":
        images, labels = load_uci_digits()
        return images, labels, int(labels.max()) + 1
    data = load_dataset(dataset, data_dir if dataset != "mnist5k" else None)
    return data.x_train, data.y_train, data.n_classes


def _resolve(scenario: ImageScenario, source: str, data_dir: str | None) -> str:
    if source != "auto":
        return source
    if scenario.name == "rotated-mnist":
        return "rotated"
    if scenario.name != "split-mnist":
        return "permuted"
    if scenario.dataset == "fashion-mnist":
        return "mnist5k"
    try:
        load_uci_digits()
    except UserError:
        pass  # scikit-learn not installed: documented fallbacks
    else:
        return "uci-digits"
    try:
        load_dataset("fashion-mnist", data_dir)
    except UserError:
        return "permuted"
    return "fashion-mnist"


def _family_transform(scenario: ImageScenario) -> str | None:
    return {"permuted-mnist": "permuted", "rotated-mnist": "rotated"}.get(scenario.name)


def _layout(info: StreamInfo, n_classes: int) -> tuple[int, int]:
    """Classes per task and the number of output slots (class-IL) or heads (task-IL)."""
    per_task = info.n_outputs // info.n_tasks if info.setting == "class" else info.n_outputs
    if per_task < 1 or n_classes % per_task:
        raise UserError(
            f"meta-training: {per_task} classes per task do not divide the "
            f"{n_classes} classes of the meta-training source"
        )
    slots = {"class": info.n_outputs // per_task, "task": info.n_heads, "domain": 1}
    return per_task, slots[info.setting]


def _evaluation_angles(scenario: ImageScenario, seed: int) -> list[float]:
    from lifelong.scenarios.rotated import RotatedScenario  # lazy: scenarios import lifelong

    return scenario.task_angles(seed) if isinstance(scenario, RotatedScenario) else [0.0]


def _draw_angle(generator: torch.Generator, avoid: Sequence[float]) -> float:
    for _ in range(1000):
        angle = 180.0 + 180.0 * float(torch.rand((), generator=generator, dtype=torch.float64))
        if all(abs((angle - a + 180.0) % 360.0 - 180.0) >= MIN_ANGLE_GAP for a in avoid):
            return angle
    raise UserError(
        "meta-training: no rotation in [180, 360) is 10 degrees from every "
        "evaluation angle; use source=permuted"
    )


def _rotate(images: Tensor, degrees: float) -> Tensor:
    """Rotate uint8 ``[N, 28, 28]`` images about their centre, bilinear, as rotated-mnist does."""
    theta = math.radians(degrees)
    matrix = torch.tensor(
        [[math.cos(theta), -math.sin(theta), 0.0], [math.sin(theta), math.cos(theta), 0.0]],
        device=images.device,
    )
    x = images.unsqueeze(1).float()
    grid = F.affine_grid(matrix.expand(len(x), 2, 3), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.squeeze(1).round().clamp(0, 255).to(torch.uint8)


def _describe(task: MetaTask) -> dict[str, Any]:
    perm = None if task.permutation is None else task.permutation.tolist()
    return {
        "classes": task.classes,
        "targets": task.targets,
        "head": task.head,
        "angle": task.angle,
        "permutation": perm,
    }


def _digest(payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class MAMLConfig:
    """MAML: an initialization from which a few SGD steps fit a new task (Finn et al. 2017)."""

    meta_steps: int = param(500, "outer (meta) updates", ge=1)
    tasks_per_batch: int = param(4, "tasks averaged in one meta update", ge=1)
    inner_steps: int = param(3, "SGD steps on a task's support data", ge=1)
    inner_batch: int = param(10, "support samples per inner step", ge=1)
    query_size: int = param(30, "query samples of the outer loss per task", ge=1)
    inner_lr: float = param(0.1, "learning rate of the inner SGD steps", gt=0)
    outer_lr: float = param(1e-3, "Adam learning rate of the meta update", gt=0)
    first_order: bool = param(False, "first-order MAML: no second derivatives")


@dataclass(frozen=True)
class ReptileConfig:
    """Reptile: move the initialization toward task-adapted weights (Nichol et al. 2018)."""

    meta_steps: int = param(500, "outer (meta) updates", ge=1)
    tasks_per_batch: int = param(4, "tasks averaged in one meta update", ge=1)
    inner_steps: int = param(5, "SGD steps on each task", ge=1)
    inner_batch: int = param(10, "samples per inner step", ge=1)
    inner_lr: float = param(0.1, "learning rate of the inner SGD steps", gt=0)
    outer_lr: float = param(1.0, "meta step size, annealed linearly to 0", gt=0)


@dataclass(frozen=True)
class OMLConfig:
    """OML: a representation (RLN) under which online SGD on the head (PLN) interferes little.

    References: Javed & White 2019, "Meta-Learning Representations for Continual Learning".
    """

    meta_steps: int = param(500, "outer (meta) updates", ge=1)
    classes_per_episode: int = param(
        3, "classes of a trajectory (topped up from tasks sharing the head)", ge=1
    )
    samples_per_class: int = param(5, "single-sample PLN steps per trajectory class", ge=1)
    random_batch: int = param(20, "samples from all tasks added to the outer loss", ge=0)
    inner_lr: float = param(0.03, "learning rate of the PLN's inner SGD steps", gt=0)
    outer_lr: float = param(1e-3, "Adam learning rate of the meta update", gt=0)
    first_order: bool = param(False, "drop second derivatives through the inner loop")
    reset_rows: bool = param(True, "re-initialize the PLN rows of a trajectory's classes")
    pln_layers: int = param(
        1, "final Linear layers that form the PLN (the rest of the network is the RLN)", ge=1
    )


def pln_names(model: nn.Module, layers: int) -> list[str]:
    """The parameter names of OML's prediction network: the last ``layers`` Linear layers.

    The Linear modules are taken in module order (``model.named_modules()``; for
    :class:`lifelong.MLP` ``body.0``, ``body.2``, ..., ``head``); the last must be the
    output layer ``head``. Everything else is the representation (RLN).

    Raises:
        UserError: when ``layers`` would leave the RLN without a Linear layer.
        ValueError: when the model's last Linear layer is not ``head``.
    """
    linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linear or f"{linear[-1]}." != PLN_PREFIX:
        raise ValueError(
            f"OML needs a prediction network ending with the output layer {PLN_PREFIX!r}; "
            f"the model's Linear layers are {linear}"
        )
    if layers >= len(linear):
        raise UserError(
            f"oml: pln_layers={layers} leaves no representation (RLN) to meta-learn: the "
            f"model has {len(linear)} Linear layers, so pln_layers must be at most "
            f"{len(linear) - 1}"
        )
    return [
        f"{owner}.{name}"
        for owner in linear[-layers:]
        for name, _ in model.get_submodule(owner).named_parameters(recurse=False)
    ]


def meta_train_maml(
    model: nn.Module,
    source: MetaTaskSource,
    cfg: MAMLConfig,
    *,
    seed: int,
    progress: bool = False,
) -> Params:
    """Meta-train a whole-network initialization with (first-order) MAML.

    Each meta update: for ``tasks_per_batch`` tasks, ``inner_steps`` SGD steps on support
    batches from ``theta``, the query loss at the adapted weights, its gradient back to
    ``theta`` (through the inner steps unless ``first_order``), one Adam step.

    Args:
        model: the network, used only through ``functional_call`` (its weights are ignored:
            the starting weights are drawn from ``seed`` so that the result is a function of
            the cache key).

    Returns:
        Detached CPU-or-model-device weights by name.
    """
    g, params = _start(model, seed)
    source = source.to(_device(model))
    loss = loss_fn(model)
    optimizer = torch.optim.Adam(list(params.values()), lr=cfg.outer_lr)
    for _ in _progress(cfg.meta_steps, "maml", progress):
        total = {n: torch.zeros_like(p) for n, p in params.items()}
        for _ in range(cfg.tasks_per_batch):
            task = source.sample_task(g)
            support = [source.sample(task, cfg.inner_batch, g) for _ in range(cfg.inner_steps)]
            fast = sgd_inner_loop(
                loss, params, support, cfg.inner_lr, create_graph=not cfg.first_order
            )[-1]
            grads, _ = meta_gradient(loss(fast, source.sample(task, cfg.query_size, g)), params)
            total = {n: total[n] + grads[n] / cfg.tasks_per_batch for n in total}
        _adam_step(optimizer, params, total)
    return _detached(params)


def meta_train_reptile(
    model: nn.Module,
    source: MetaTaskSource,
    cfg: ReptileConfig,
    *,
    seed: int,
    progress: bool = False,
) -> Params:
    """Meta-train a whole-network initialization with batched Reptile.

    Each meta update adapts ``theta`` to ``tasks_per_batch`` tasks by plain SGD and moves it
    by ``outer_lr * mean(phi_task - theta)``, the step size annealed linearly to 0.

    Returns:
        Detached weights by name (see :func:`meta_train_maml` for ``model``).
    """
    g, params = _start(model, seed)
    source = source.to(_device(model))
    loss = loss_fn(model)
    for step in _progress(cfg.meta_steps, "reptile", progress):
        rate = cfg.outer_lr * (1.0 - step / cfg.meta_steps)
        moved = {n: torch.zeros_like(p) for n, p in params.items()}
        for _ in range(cfg.tasks_per_batch):
            task = source.sample_task(g)
            batches = [source.sample(task, cfg.inner_batch, g) for _ in range(cfg.inner_steps)]
            phi = sgd_inner_loop(loss, params, batches, cfg.inner_lr)[-1]
            moved = {n: moved[n] + (phi[n].detach() - params[n].detach()) for n in moved}
        with torch.no_grad():
            for n, p in params.items():
                p.add_(moved[n], alpha=rate / cfg.tasks_per_batch)
    return _detached(params)


def meta_train_oml(
    model: nn.Module,
    source: MetaTaskSource,
    cfg: OMLConfig,
    *,
    seed: int,
    progress: bool = False,
) -> Params:
    """Meta-train OML's representation (RLN) and the start of its prediction network (PLN).

    The PLN is the last ``cfg.pln_layers`` Linear layers (:func:`pln_names`; by default
    ``head.*`` only), the RLN the rest. Each meta update (Javed & White 2019): draw a task
    and ``classes_per_episode`` classes (:func:`_episode_classes`: the task's own, topped up
    from other tasks that share its head when it has fewer, as 2-class split tasks do),
    re-initialize their output rows (of ``head.*``, whatever the PLN's depth), take one
    single-sample SGD step on the PLN only per trajectory sample (class by class,
    so the trajectory learns classes in sequence), then an Adam step on every weight from
    the loss of the adapted network on the trajectory plus ``random_batch`` samples of all
    tasks, differentiated through the inner loop (second order unless ``first_order``).

    Returns:
        Detached weights by name (see :func:`meta_train_maml` for ``model``).
    """
    pln = pln_names(model, cfg.pln_layers)
    g, params = _start(model, seed)
    source = source.to(_device(model))
    loss = loss_fn(model)
    optimizer = torch.optim.Adam(list(params.values()), lr=cfg.outer_lr)
    for _ in _progress(cfg.meta_steps, "oml", progress):
        chosen = _episode_classes(source, source.sample_task(g), cfg.classes_per_episode, g)
        start = params
        if cfg.reset_rows:
            start = _reset_rows(params, [_output_row(source, t, i) for t, i in chosen], g)
        trajectory = [
            source.sample(t, cfg.samples_per_class, g, classes=(source.tasks[t].classes[i],))
            for t, i in chosen
        ]
        steps = [_row(b, i) for b in trajectory for i in range(len(b.y))]
        fast = sgd_inner_loop(
            loss, start, steps, cfg.inner_lr, only=pln, create_graph=not cfg.first_order
        )[-1]
        remember = [source.sample_mixed(cfg.random_batch, g)] if cfg.random_batch else []
        grads, _ = meta_gradient(loss(fast, _cat([*trajectory, *remember])), params)
        _adam_step(optimizer, params, grads)
    return _detached(params)


def _episode_classes(
    source: MetaTaskSource, task: int, count: int, g: torch.Generator
) -> list[tuple[int, int]]:
    """``(task, class index)`` of one OML trajectory, in the order it learns them.

    Up to ``count`` classes of ``task`` (in index order); when it has fewer, the rest are
    drawn from the other tasks on the same head whose output rows are still free, so a
    trajectory over 2-class split tasks still spans ``count`` classes in sequence.
    """
    spec = source.tasks[task]
    own = sorted(torch.randperm(len(spec.classes), generator=g)[:count].tolist())
    chosen = [(task, i) for i in own]
    if len(chosen) >= count:
        return chosen
    used = {_output_row(source, t, i) for t, i in chosen}
    others = [
        (t, i)
        for t, other in enumerate(source.tasks)
        if t != task and other.head == spec.head
        for i in range(len(other.classes))
        if _output_row(source, t, i) not in used
    ]
    for k in torch.randperm(len(others), generator=g).tolist():
        t, i = others[k]
        if len(chosen) < count and _output_row(source, t, i) not in used:
            chosen.append((t, i))
            used.add(_output_row(source, t, i))
    return chosen


def _output_row(source: MetaTaskSource, task: int, index: int) -> int:
    """The PLN output row of class ``index`` of ``task`` (its head's slot for the target)."""
    spec = source.tasks[task]
    return spec.head * source.n_outputs + spec.targets[index]


def _start(model: nn.Module, seed: int) -> tuple[torch.Generator, Params]:
    """The meta-training generator and starting weights drawn from it (nn.Linear's default:
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for a layer's weight and bias)."""
    g = torch.Generator().manual_seed(seed + TRAIN_SEED_OFFSET)
    params: Params = {}
    named = dict(model.named_parameters())
    for name, p in named.items():
        owner = name.rsplit(".", 1)[0]
        fan_in = named[f"{owner}.weight"].shape[1] if f"{owner}.weight" in named else p.shape[-1]
        bound = 1.0 / math.sqrt(fan_in)
        value = (torch.rand(p.shape, generator=g, dtype=p.dtype) * 2 - 1) * bound
        params[name] = value.to(p.device).requires_grad_(True)
    return g, params


def _reset_rows(params: Params, rows: list[int], g: torch.Generator) -> Params:
    """``params`` with the given PLN output rows re-drawn (weights) and zeroed (biases)."""
    weight, bias = params[f"{PLN_PREFIX}weight"], params[f"{PLN_PREFIX}bias"]
    mask = torch.zeros(len(bias), dtype=torch.bool)
    mask[rows] = True
    fresh = torch.randn(weight.shape, generator=g, dtype=weight.dtype) * math.sqrt(
        2.0 / weight.shape[1]
    )  # Kaiming-normal, as OML's reset does
    mask = mask.to(weight.device)
    return {
        **params,
        f"{PLN_PREFIX}weight": torch.where(mask[:, None], fresh.to(weight.device), weight),
        f"{PLN_PREFIX}bias": torch.where(mask, torch.zeros_like(bias), bias),
    }


def _row(batch: Batch, i: int) -> Batch:
    return Batch(batch.x[i : i + 1], batch.y[i : i + 1], batch.task_ids[i : i + 1], batch.task)


def _cat(batches: Sequence[Batch]) -> Batch:
    return Batch(
        torch.cat([b.x for b in batches]),
        torch.cat([b.y for b in batches]),
        torch.cat([b.task_ids for b in batches]),
        -1,
    )


def _adam_step(optimizer: torch.optim.Optimizer, params: Params, grads: Params) -> None:
    for name, p in params.items():
        p.grad = grads[name]
    optimizer.step()


def _detached(params: Params) -> Params:
    return {n: p.detach().clone() for n, p in params.items()}


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _progress(total: int, kind: str, enabled: bool) -> Iterator[int]:
    """``range(total)``, with a bar on stderr when ``enabled`` and stderr is a terminal."""
    if not (enabled and sys.stderr.isatty()):
        yield from range(total)
        return
    from tqdm import tqdm  # lazy: only for terminals

    with tqdm(total=total, desc=f"meta-train {kind}", unit="step", file=sys.stderr) as bar:
        for step in range(total):
            yield step
            bar.update(1)


def cache_root() -> Path:
    """Where meta-trained initializations are kept: ``$LIFELONG_CACHE/inits`` when the
    variable is set, else ``~/.cache/lifelong/inits``."""
    return cache_home() / "inits"


def model_shape(model: nn.Module) -> dict[str, str]:
    """``{name: "float32[100, 784]"}`` for every parameter: the model part of a cache key."""
    return {
        n: f"{str(p.dtype).removeprefix('torch.')}{list(p.shape)}"
        for n, p in model.named_parameters()
    }


def cached_init(
    kind: str,
    cfg: Any,
    source_key: str,
    shape: Mapping[str, str],
    compute: Callable[[], Params],
    *,
    seed: int,
    device: str = "cpu",
    cache_dir: str | os.PathLike[str] | None = None,
) -> Params:
    """Load an initialization from the disk cache, or compute and store it.

    The key is the digest of everything that determines the result: ``kind``, every field
    of ``cfg``, the task source's key, the model's parameter shapes and dtypes, ``seed``,
    the device type and a format version. Files are written atomically (temporary file then
    ``os.replace``) and read with ``torch.load(weights_only=True)``.

    Args:
        cfg: a config dataclass made with :func:`lifelong.param`.
        compute: called only on a miss; returns weights by name.
        cache_dir: overrides :func:`cache_root`.

    Returns:
        Weights by name, on the CPU, not requiring grad.
    """
    key = json.dumps(
        {
            "version": _CACHE_VERSION,
            "kind": kind,
            "config": as_config(cfg),
            "source": source_key,
            "model": dict(shape),
            "seed": seed,
            "device": torch.device(device).type,
        },
        sort_keys=True,
    )
    folder = Path(cache_dir) if cache_dir is not None else cache_root()
    path = folder / f"{hashlib.sha256(key.encode()).hexdigest()}.pt"
    if path.is_file():
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a file we cannot read must not be silently replaced
            raise UserError(f"cached initialization {path} is unreadable ({e}); delete it") from e
        if stored.get("key") == key:
            return dict(stored["params"])
    params = {n: t.detach().cpu().clone() for n, t in compute().items()}
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"key": key, "params": params}, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return params


_TRAINERS: dict[str, tuple[type, Callable[..., Params]]] = {
    "maml": (MAMLConfig, meta_train_maml),
    "reptile": (ReptileConfig, meta_train_reptile),
    "oml": (OMLConfig, meta_train_oml),
}


def meta_init(
    kind: str,
    model: nn.Module,
    source: MetaTaskSource,
    cfg: MAMLConfig | ReptileConfig | OMLConfig,
    *,
    seed: int,
    progress: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Params:
    """Meta-train (or load from the cache) an initialization and copy it into ``model``.

    Args:
        kind: ``"maml"``, ``"reptile"`` or ``"oml"``; ``cfg`` must be its config class.

    Returns:
        The weights by name, as loaded into ``model`` (on the CPU).
    """
    if kind not in _TRAINERS:
        raise UserError(
            f"unknown meta-initialization '{kind}'{closest(kind, _TRAINERS)}; "
            f"choose one of {', '.join(_TRAINERS)}"
        )
    cfg_type, train = _TRAINERS[kind]
    if not isinstance(cfg, cfg_type):
        raise TypeError(f"{kind} needs a {cfg_type.__name__}, got {type(cfg).__name__}")
    device = _device(model)
    params = cached_init(
        kind,
        cfg,
        source.key,
        model_shape(model),
        lambda: train(model, source, cfg, seed=seed, progress=progress),
        seed=seed,
        device=device.type,
        cache_dir=cache_dir,
    )
    load_params(model, params)
    return params
