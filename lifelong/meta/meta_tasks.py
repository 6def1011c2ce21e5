"""The pools of tasks that meta-learned inits (MAML, Reptile, OML) meta-train on, disjoint
from the evaluation stream.

Where the tasks come from (an init's ``source``; only ever training-split images):

- a transform kind that a scenario family declares (``permuted``, ``rotated``: see
  :attr:`lifelong.ImageScenario.transform_kind`): the scenario's dataset under new
  transforms of that kind, drawn by the family (:meth:`lifelong.ImageScenario.draw_transform`)
  from ``seed + 1_000_000``, never from the stream's seed, and disjoint from the stream's own
  (rotated-mnist: angles in [180, 360), at least 10 degrees from every evaluation angle).
- ``uci-digits``, ``fashion-mnist``, ``mnist5k``, ``mnist``: another dataset's images.
  A family whose tasks are made by a transform still applies its own kind, drawn as above.
  ``uci-digits`` is a held-out digits dataset, the 1,797 UCI optical-recognition digits that
  scikit-learn ships (:func:`lifelong.data.mnist.load_uci_digits`: other writers, scanner and
  preprocessing than MNIST's), rescaled to MNIST's 20x20 box centred by centre of mass in
  28x28: the ten digit classes of an MNIST stream, none of its images, training or test.
  For OML on Split-MNIST it meta-trains a far better representation than Fashion-MNIST
  (reports/meta-init.md, "Meta-training on held-out digits (UCI)").
- ``auto``: the family's :attr:`lifelong.ImageScenario.meta_source`; ``held-out`` (split
  families) means the UCI digits for a digits stream, else Fashion-MNIST where it is
  installed, else ``permuted``; the embedded digits for a Fashion-MNIST stream.

Colour image streams (split-cifar10, split-cifar100, split-tinyimagenet) meta-train on
colour images of classes disjoint from the stream, normalised as the stream normalises them:

- ``rest``: the classes of the stream's own dataset that no task of the stream holds (the
  scenario's ``n_classes`` leaves the last of its class order out of the stream);
- ``cifar10``, ``cifar100``: the other CIFAR's training images (their classes are mutually
  exclusive by construction, Krizhevsky 2009); for a stream of the same 32x32 size only;
- ``auto``: ``rest`` when the stream leaves classes out, else CIFAR-10 for a CIFAR-100
  stream and CIFAR-100 for a CIFAR-10 stream; a TinyImageNet stream has no disjoint other
  dataset (CIFAR's classes overlap its own) and must leave classes out (``n_classes``).

Every source builds a pool of ``n_tasks`` tasks laid out like the evaluation stream: the same
number of classes per task, model targets mapped as the stream maps them (class-incremental:
``slot * classes_per_task + position``; domain: the position; task: the position on head
``i mod n_heads``), so a meta-trained initialization fits the stream's model. When a task
holds fewer classes than the source, its classes are a group of a random partition of the
source's classes (random relabelled groups); otherwise a task holds every class.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from lifelong.contracts.scenario import ClassSplitImages, ImageScenario, ScenarioFamily, Transform
from lifelong.contracts.strategy import Batch, StreamInfo
from lifelong.data.images import IMAGE_DATASETS, load_image_dataset
from lifelong.data.inputs import InputTransform
from lifelong.data.mnist import load_dataset, load_uci_digits
from lifelong.errors import UserError, closest

__all__ = [
    "META_SOURCES",
    "MetaTask",
    "MetaTaskSource",
    "check_meta_source",
    "meta_tasks",
]

META_DATASETS: tuple[str, ...] = ("fashion-mnist", "mnist5k", "mnist", "uci-digits")
REST = "rest"  # a colour stream's dataset, the classes its tasks leave out
COLOUR_SOURCES: tuple[str, ...] = ("cifar10", "cifar100", REST)
META_SOURCES: tuple[str, ...] = ("auto", *META_DATASETS, "permuted", "rotated", *COLOUR_SOURCES)
"""The choices of an init's ``source``; ``permuted`` and ``rotated`` are the transform kinds
the built-in families declare (a family's own kind is also accepted)."""
META_SEED_OFFSET = 1_000_000  # meta-task draws never share a generator with the stream's
HELD_OUT = "held-out"  # ImageScenario.meta_source: another dataset's images
_DIGITS = ("mnist", "mnist5k")


@dataclass(frozen=True)
class MetaTask:
    """One meta-training task: its classes, target mapping, head and image transform."""

    classes: tuple[int, ...]
    targets: tuple[int, ...]
    head: int
    lookup: Tensor  # int64 [n_classes]: dataset label -> target (-1 outside ``classes``)
    transform: Transform | None = None
    drawn: Mapping[str, Any] | None = None  # the transform's kind and parameters


@dataclass(frozen=True)
class MetaTaskSource:
    """A pool of tasks disjoint from an evaluation stream, drawn from a training split.

    Attributes:
        kind: the resolved source (``"permuted"``, ``"rotated"``, ``"fashion-mnist"``, ...).
        dataset: the dataset whose training split supplies the images.
        key: a digest of everything that defines the tasks (for the init cache).
        images: uint8 ``[N, 28, 28]`` (or ``[N, 3, H, W]`` for a colour source), the
            training split of ``dataset`` (never a test split; ``uci-digits``, used only
            here, has no split and gives all 1,797 images).
        labels: int64 ``[N]``.
        tasks: the pool.
        pools: training indices of each task's classes, by class tuple.
        n_outputs: outputs per head of the stream's model.
        inputs: a colour source's normalisation (the stream's), None for grey sources.
    """

    kind: str
    dataset: str
    key: str
    images: Tensor
    labels: Tensor
    tasks: tuple[MetaTask, ...]
    pools: Mapping[tuple[int, ...], Tensor]
    n_outputs: int
    inputs: InputTransform | None = None

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
            A Batch: ``x`` float ``[n, 784]`` in [0, 1] (a colour source: ``[n, 3*H*W]``
            normalised as the stream's test inputs), ``y`` targets, ``task_ids`` the head.
        """
        spec = self.tasks[task]
        pool = self.pools[spec.classes if classes is None else tuple(classes)]
        pick = torch.randint(len(pool), (n,), generator=generator)
        idx = pool[pick.to(pool.device)]
        x = self.images[idx]
        if spec.transform is not None:
            x = spec.transform(x)
        y = spec.lookup[self.labels[idx]]
        x = (
            x.flatten(1).float().div_(255)
            if self.inputs is None
            else self.inputs.test(x.flatten(1))
        )
        return Batch(x, y, torch.full_like(y, spec.head), task)

    def sample_mixed(self, n: int, generator: torch.Generator) -> Batch:
        """``n`` samples, each from a task drawn uniformly (OML's random batch)."""
        counts = torch.bincount(
            torch.randint(len(self.tasks), (n,), generator=generator), minlength=len(self.tasks)
        )
        picked = [self.sample(t, c, generator) for t, c in enumerate(counts.tolist()) if c]
        return concat_batches(picked)

    def to(self, device: torch.device) -> MetaTaskSource:
        """The same source with its tensors on ``device`` (transforms follow their input)."""
        return replace(
            self,
            images=self.images.to(device),
            labels=self.labels.to(device),
            tasks=tuple(replace(t, lookup=t.lookup.to(device)) for t in self.tasks),
            pools={k: v.to(device) for k, v in self.pools.items()},
        )


def concat_batches(batches: Sequence[Batch]) -> Batch:
    """The samples of ``batches`` in order, as one batch (task ``-1``: mixed)."""
    return Batch(
        torch.cat([b.x for b in batches]),
        torch.cat([b.y for b in batches]),
        torch.cat([b.task_ids for b in batches]),
        -1,
    )


def check_meta_source(
    scenario: ScenarioFamily, source: str, data_dir: str | None = None
) -> tuple[str, str, str | None]:
    """The meta-training source ``source`` resolves to for ``scenario``, as
    ``(kind, dataset, transform kind)``; a UserError when it is unknown or would hold the
    stream's own classes. Loads no training data but what ``auto`` needs to decide (a
    colour stream: its own dataset, to know the classes it leaves out)."""
    if isinstance(scenario, ClassSplitImages):
        return _colour_source(scenario, source, data_dir)
    assert isinstance(scenario, ImageScenario)  # the init checks it (metatrain.py)
    if source in COLOUR_SOURCES:
        raise UserError(
            f"source '{source}' of the meta-learned init is for colour image streams, and "
            f"the {scenario.name} stream holds 28x28 grey images; use source=auto or a grey one"
        )
    kinds = _transform_families(scenario)
    known = (*META_SOURCES, *(k for k in kinds if k not in META_SOURCES))
    if source not in known:
        raise UserError(
            f"source '{source}' of the meta-learned init is unknown"
            f"{closest(source, known)}; choose one of {', '.join(known)}"
        )
    kind = _resolve(scenario, source, data_dir)
    transform: str | None
    if kind in kinds:
        transform, dataset = kind, scenario.dataset
    elif kind in META_DATASETS:
        transform, dataset = scenario.transform_kind, kind
    else:
        raise UserError(f"meta-training: no scenario family draws '{kind}' transforms")
    same = dataset == scenario.dataset or {dataset, scenario.dataset} <= set(_DIGITS)
    if transform is None and same:
        raise UserError(
            f"source '{kind}' of the meta-learned init holds the classes of the "
            f"{scenario.dataset} stream itself; use source=permuted, rotated or another dataset"
        )
    return kind, dataset, transform


def left_out_classes(scenario: ClassSplitImages, data_dir: str | None) -> list[int]:
    """The dataset labels of a colour stream's dataset that no task of the stream holds."""
    data = scenario.load(data_dir)
    used = {c for group in scenario.class_groups(data) for c in group}
    return [c for c in range(data.n_classes) if c not in used]


_OTHER_CIFAR = {"cifar10": "cifar100", "cifar100": "cifar10"}


def _colour_source(
    scenario: ClassSplitImages, source: str, data_dir: str | None
) -> tuple[str, str, None]:
    """``(kind, dataset, None)`` of a colour stream's source (module doc); a UserError
    for a source whose classes or image size cannot be disjoint from or fit the stream."""
    dataset, name = scenario.dataset, scenario.name
    if source not in ("auto", *COLOUR_SOURCES):
        what = "holds 28x28 grey images" if source in META_SOURCES else "is unknown"
        raise UserError(
            f"source '{source}' of the meta-learned init {what}{closest(source, META_SOURCES)};"
            f" the {name} stream meta-trains on colour images: use source=auto, "
            + ", ".join(COLOUR_SOURCES)
        )
    left_out = bool(left_out_classes(scenario, data_dir))
    kind = source
    if source == "auto":
        kind = REST if left_out else _OTHER_CIFAR.get(dataset, REST)
    if kind == REST and not left_out:
        raise UserError(
            f"the {name} stream holds every class of {dataset}, so no class is left for the "
            "meta-learned init to meta-train on; leave some out (--set n_classes=N)"
            + (f" or use source={_OTHER_CIFAR[dataset]}" if dataset in _OTHER_CIFAR else "")
        )
    if kind == dataset:
        raise UserError(
            f"source '{kind}' of the meta-learned init holds the classes of the {name} stream"
            " itself; use source=rest (with --set n_classes=N) or the other CIFAR"
        )
    if kind != REST and dataset not in _OTHER_CIFAR:
        raise UserError(
            f"source '{kind}' of the meta-learned init: CIFAR's 32x32 images do not fit the "
            f"{name} stream's 64x64 ones, and their classes overlap TinyImageNet's; use "
            "source=rest with --set n_classes=N"
        )
    return kind, (dataset if kind == REST else kind), None


def meta_tasks(
    scenario: ScenarioFamily,
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
    available = torch.arange(n_classes)
    inputs = None
    if isinstance(scenario, ClassSplitImages):  # normalised as the stream is
        inputs = scenario.inputs(scenario.load(data_dir))
        if kind == REST:
            available = torch.tensor(left_out_classes(scenario, data_dir))
    per_task, n_slots = _layout(info, len(available))
    family = _transform_families(scenario)[transform] if transform is not None else None
    g = torch.Generator().manual_seed(seed + META_SEED_OFFSET)
    tasks, partition = [], available
    for i in range(n_tasks):
        group = i % (len(available) // per_task)
        if group == 0 and per_task < len(available):
            partition = available[torch.randperm(len(available), generator=g)]
        classes = tuple(sorted(partition[group * per_task : (group + 1) * per_task].tolist()))
        slot = i % n_slots
        offset = slot * per_task if info.setting == "class" else 0
        lookup = torch.full((n_classes,), -1, dtype=torch.long)
        lookup[list(classes)] = torch.arange(offset, offset + per_task)
        head = slot if info.setting == "task" else 0
        task = MetaTask(classes, tuple(range(offset, offset + per_task)), head, lookup)
        if family is not None:
            assert isinstance(scenario, ImageScenario)  # only they draw transforms
            drawn = family.draw_transform(g, scenario, seed)
            task = replace(task, transform=drawn.apply, drawn=drawn.drawn)
        tasks.append(task)
    pools = _class_pools(tasks, labels)
    key = _source_key(kind, dataset, images, labels, tasks, inputs)
    return MetaTaskSource(
        kind, dataset, key, images, labels, tuple(tasks), pools, info.n_outputs, inputs
    )


def _class_pools(tasks: Sequence[MetaTask], labels: Tensor) -> dict[tuple[int, ...], Tensor]:
    """Training indices of every task's classes and of each of its classes alone."""
    groups = {t.classes for t in tasks} | {(c,) for t in tasks for c in t.classes}
    return {k: torch.isin(labels, torch.tensor(k)).nonzero().squeeze(1) for k in groups}


def _source_key(
    kind: str,
    dataset: str,
    images: Tensor,
    labels: Tensor,
    tasks: Sequence[MetaTask],
    inputs: InputTransform | None = None,
) -> str:
    """A digest of everything that defines the pool's tasks."""
    described = [
        {"classes": t.classes, "targets": t.targets, "head": t.head, "transform": t.drawn}
        for t in tasks
    ]
    payload: dict[str, Any] = {
        "kind": kind,
        "dataset": dataset,
        "n_train": len(labels),
        "tasks": described,
    }
    if dataset == "uci-digits":  # made here, not read from files: key the pixels themselves
        payload["pixels"] = hashlib.sha256(images.numpy().tobytes()).hexdigest()
    if inputs is not None:  # a colour source: its labels and the stream's normalisation
        payload["labels"] = hashlib.sha256(labels.numpy().tobytes()).hexdigest()
        payload["inputs"] = [inputs.mean, inputs.std]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _training_split(dataset: str, data_dir: str | None) -> tuple[Tensor, Tensor, int]:
    """Training images, labels and the number of classes of a meta-training dataset."""
    if dataset == "uci-digits":
        images, labels = load_uci_digits()
        return images, labels, int(labels.max()) + 1
    if dataset in IMAGE_DATASETS:
        colour = load_image_dataset(dataset, data_dir)
        return colour.x_train, colour.y_train, colour.n_classes
    data = load_dataset(dataset, data_dir if dataset != "mnist5k" else None)
    return data.x_train, data.y_train, data.n_classes


def _transform_families(scenario: ScenarioFamily) -> dict[str, type[ImageScenario]]:
    """The scenario families that draw transforms, by transform kind: the registered ones
    and the stream's own (a user's family need not be registered)."""
    from lifelong.composition.registry import scenarios  # lazy: the registry imports the init axis

    found = {
        family.transform_kind: family
        for family in scenarios().values()
        if issubclass(family, ImageScenario) and family.transform_kind is not None
    }
    if isinstance(scenario, ImageScenario) and scenario.transform_kind is not None:
        found[scenario.transform_kind] = type(scenario)
    return found


def _resolve(scenario: ImageScenario, source: str, data_dir: str | None) -> str:
    """The source ``auto`` stands for (the module doc); any other source as it is."""
    if source != "auto":
        return source
    if scenario.meta_source != HELD_OUT:
        return scenario.meta_source
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
