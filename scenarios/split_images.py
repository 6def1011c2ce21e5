"""Split CIFAR-10, CIFAR-100 and TinyImageNet: the classes of a colour image dataset
partitioned into tasks (Seq-CIFAR-10 and kin).

The images stay uint8 (flattened ``[N, 3*H*W]``, shape ``(3, H, W)``); every batch is
normalised by the dataset's channel means and deviations and, with ``augment`` (the
default), training batches are randomly cropped after padding 4 and flipped left-right on
the device, as DER and Mammoth train them (:class:`lifelong.InputTransform`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, cast

import torch

from lifelong import (
    MAX_SEED,
    SETTINGS,
    ClassSplitImages,
    ImageDataset,
    InputTransform,
    Setting,
    Stream,
    UserError,
    load_image_dataset,
    make_task,
    param,
    subsample,
)

CROP_PADDING = 4  # RandomCrop(32, padding=4) of DER / Mammoth's Seq-CIFAR-10


@dataclass
class SplitImages(ClassSplitImages):
    """Classes partitioned into ``n_tasks`` tasks of equal size, in the class-, domain- or
    task-incremental form (van de Ven et al. 2019); a family fixes the dataset.

    References: Lopez-Paz & Ranzato 2017 (GEM); Buzzega et al. 2020 (DER, Seq-CIFAR-10 and
    Seq-TinyImageNet); Gupta et al. 2020 (La-MAML, CIFAR-100 and TinyImageNet).
    """

    dataset: ClassVar[str]
    default_tasks: ClassVar[int]
    mean: ClassVar[tuple[float, float, float]]
    std: ClassVar[tuple[float, float, float]]
    setting: str = param("class", "class, domain or task incremental", choices=SETTINGS)
    n_tasks: int | None = param(5, "number of tasks; must divide the number of classes", ge=1)
    samples_per_task: int | None = param(
        None, "training samples per task (none: all available)", ge=1
    )
    class_seed: int | None = param(
        None, "seed that shuffles the class order (none: 0, 1, 2, ...)", ge=0, le=MAX_SEED
    )
    augment: bool = param(True, "random crop (padding 4) and flip of training batches")
    n_classes: int | None = param(
        None,
        "classes in the stream, the first of the class order (none: all); a meta-learned "
        "init's source=rest meta-trains on the others",
        ge=1,
    )

    def load(self, data_dir: str | None) -> ImageDataset:
        """The dataset, loaded once per process."""
        return load_image_dataset(self.dataset, data_dir)

    def build(self, seed: int, data_dir: str | None = None) -> Stream:
        data = self.load(data_dir)
        groups = self.class_groups(data)
        inputs = self.inputs(data)
        x_train, x_test = data.x_train.flatten(1), data.x_test.flatten(1)
        generator = torch.Generator().manual_seed(seed)
        setting = cast(Setting, self.setting)
        tasks = []
        for t, classes in enumerate(groups):
            train = torch.isin(data.y_train, torch.tensor(classes)).nonzero().squeeze(1)
            test = torch.isin(data.y_test, torch.tensor(classes)).nonzero().squeeze(1)
            keep = subsample(len(train), self.samples_per_task, generator, what=f"task {t}")
            train = train[keep]
            images = (x_train[train], x_test[test])
            labels = (data.y_train[train], data.y_test[test])
            name = "/".join(map(str, classes)) if len(classes) <= 5 else f"task {t}"
            offset = t * len(classes)
            tasks.append(make_task(t, name, images, labels, classes, offset, setting, inputs))
        per_task = len(groups[0])
        n_outputs = per_task * len(groups) if setting == "class" else per_task
        n_heads = len(groups) if setting == "task" else 1
        shape = tuple(data.x_train.shape[1:])
        return Stream(self.name, setting, tuple(tasks), n_outputs, n_heads, inputs.input_dim, shape)

    def footprint(self, data_dir: str | None = None) -> int:
        data = self.load(data_dir)
        per_task = len(data.y_train) // self.tasks(data)
        train = min(self.samples_per_task or per_task, per_task) * self.tasks(data)
        return (train + len(data.y_test)) * data.x_train[0].numel()

    def inputs(self, data: ImageDataset) -> InputTransform:
        """The normalisation of the dataset and, with ``augment``, its crop and flip."""
        shape = cast(tuple[int, int, int], tuple(data.x_train.shape[1:]))
        pad = CROP_PADDING if self.augment else 0
        return InputTransform(shape, self.mean, self.std, pad, self.augment)

    def tasks(self, data: ImageDataset) -> int:
        """The number of tasks (``n_tasks``, or the family's default when it is None)."""
        return self.n_tasks or self.default_tasks

    def class_order(self, n: int) -> list[int]:
        """``0..n-1``, shuffled by ``class_seed`` when it is set."""
        if self.class_seed is None:
            return list(range(n))
        shuffle = torch.Generator().manual_seed(self.class_seed)
        return torch.randperm(n, generator=shuffle).tolist()

    def used_classes(self, data: ImageDataset) -> int:
        """The number of classes in the stream (``n_classes``, at most the dataset's)."""
        if self.n_classes is not None and self.n_classes > data.n_classes:
            raise UserError(
                f"{self.name}: n_classes={self.n_classes}, but {data.name} has "
                f"{data.n_classes}; use at most {data.n_classes}"
            )
        return self.n_classes or data.n_classes

    def class_groups(self, data: ImageDataset) -> list[tuple[int, ...]]:
        """The dataset labels of every task, in training order."""
        n_tasks, used = self.tasks(data), self.used_classes(data)
        _check_divides(self.name, n_tasks, used, "classes")
        order, per_task = self.class_order(data.n_classes), used // n_tasks
        return [tuple(order[t * per_task : (t + 1) * per_task]) for t in range(n_tasks)]


def _check_divides(scenario: str, n_tasks: int, n: int, what: str) -> None:
    if n_tasks > n or n % n_tasks:
        divisors = [d for d in range(1, n + 1) if n % d == 0]
        raise UserError(
            f"{scenario}: n_tasks={n_tasks} does not divide the {n} {what}; use one of "
            f"{', '.join(map(str, divisors))}"
        )


@dataclass
class SplitCifar10(SplitImages):
    """CIFAR-10 in 5 tasks of 2 classes (Seq-CIFAR-10 of DER / Mammoth, class-incremental).

    References: Krizhevsky 2009 (CIFAR); Buzzega et al. 2020 (DER).
    """

    name: ClassVar[str] = "split-cifar10"
    dataset: ClassVar[str] = "cifar10"
    mean: ClassVar[tuple[float, float, float]] = (0.4914, 0.4822, 0.4465)  # Mammoth's
    std: ClassVar[tuple[float, float, float]] = (0.2470, 0.2435, 0.2615)
    default_tasks: ClassVar[int] = 5
    n_tasks: int | None = param(5, "number of tasks; must divide the 10 classes", ge=1)


@dataclass
class SplitCifar100(SplitImages):
    """CIFAR-100 in 10 tasks of 10 classes (n_tasks=20: 20 x 5; superclass: 20 coarse labels).

    With ``superclass`` a task holds whole superclasses (by default 20 tasks, one coarse
    label's 5 classes each; ``n_tasks`` must divide the 20 superclasses).

    References: Krizhevsky 2009; Lopez-Paz & Ranzato 2017 (GEM's 20 x 5); Gupta et al. 2020.
    """

    name: ClassVar[str] = "split-cifar100"
    dataset: ClassVar[str] = "cifar100"
    mean: ClassVar[tuple[float, float, float]] = (0.5071, 0.4867, 0.4408)  # Mammoth's
    std: ClassVar[tuple[float, float, float]] = (0.2675, 0.2565, 0.2761)
    n_tasks: int | None = param(
        None, "number of tasks; must divide the 100 classes (none: 10, or 20 with superclass)", ge=1
    )
    superclass: bool = param(False, "tasks of whole superclasses (coarse labels)")

    default_tasks: ClassVar[int] = 10

    def tasks(self, data: ImageDataset) -> int:
        return self.n_tasks or (20 if self.superclass else 10)

    def class_groups(self, data: ImageDataset) -> list[tuple[int, ...]]:
        if not self.superclass:
            return super().class_groups(data)
        if self.n_classes is not None:
            raise UserError(
                f"{self.name}: superclass=true takes whole superclasses; leave n_classes unset"
            )
        assert data.superclass_of is not None  # CIFAR-100's reader sets it
        n_super = max(data.superclass_of) + 1
        n_tasks = self.tasks(data)
        _check_divides(self.name, n_tasks, n_super, "superclasses (superclass=true)")
        order, per_task = self.class_order(n_super), n_super // n_tasks
        members = [
            [c for c, s in enumerate(data.superclass_of) if s == sup] for sup in range(n_super)
        ]
        return [
            tuple(c for sup in order[t * per_task : (t + 1) * per_task] for c in members[sup])
            for t in range(n_tasks)
        ]


@dataclass
class SplitTinyImageNet(SplitImages):
    """TinyImageNet's 200 classes (64x64) in 10 tasks of 20 (its validation set as test).

    References: Le & Yang 2015 (Tiny ImageNet); Buzzega et al. 2020; Gupta et al. 2020.
    """

    name: ClassVar[str] = "split-tinyimagenet"
    dataset: ClassVar[str] = "tinyimagenet"
    mean: ClassVar[tuple[float, float, float]] = (0.4802, 0.4480, 0.3975)  # Mammoth's
    std: ClassVar[tuple[float, float, float]] = (0.2770, 0.2691, 0.2821)
    default_tasks: ClassVar[int] = 10
    n_tasks: int | None = param(10, "number of tasks; must divide the 200 classes", ge=1)
