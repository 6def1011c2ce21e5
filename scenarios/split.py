"""Split: the classes of a dataset partitioned into tasks (Split-MNIST and kin)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, cast

import torch

from lifelong import ImageScenario, Stream, UserError, make_task, param, subsample
from lifelong.contracts.params import MAX_SEED
from lifelong.contracts.stream import Setting


@dataclass
class SplitScenario(ImageScenario):
    """Classes partitioned into ``n_tasks`` tasks of equal size (default 5 x 2 classes).

    ``setting`` picks the form (van de Ven et al. 2019, "Three scenarios for continual
    learning"): ``task`` (one head per task, task id given), ``domain`` (labels mapped to
    the within-task index, one head) or ``class`` (one head over all classes).

    References: Zenke et al. 2017 (Split-MNIST); van de Ven et al. 2019.
    """

    name: ClassVar[str] = "split-mnist"
    meta_source: ClassVar[str] = "held-out"  # its tasks hold classes: meta-train on others
    setting: str = param(
        "class", "class, domain or task incremental", choices=("class", "domain", "task")
    )
    n_tasks: int = param(5, "number of tasks; must divide the number of classes", ge=1)
    class_seed: int | None = param(
        None, "seed that shuffles the class order (none: 0, 1, ..., 9)", ge=0, le=MAX_SEED
    )

    def build(self, seed: int, data_dir: str | None = None) -> Stream:
        data = self.load(data_dir)
        per_task = self._classes_per_task(data.n_classes)
        order = list(range(data.n_classes))
        if self.class_seed is not None:
            shuffle = torch.Generator().manual_seed(self.class_seed)
            order = torch.randperm(data.n_classes, generator=shuffle).tolist()
        generator = torch.Generator().manual_seed(seed)
        tasks = []
        for t in range(self.n_tasks):
            classes = tuple(order[t * per_task : (t + 1) * per_task])
            train = torch.isin(data.y_train, torch.tensor(classes)).nonzero().squeeze(1)
            test = torch.isin(data.y_test, torch.tensor(classes)).nonzero().squeeze(1)
            keep = subsample(len(train), self.samples_per_task, generator, what=f"task {t}")
            train = train[keep]
            images = (data.x_train[train].flatten(1), data.x_test[test].flatten(1))
            labels = (data.y_train[train], data.y_test[test])
            name = "/".join(map(str, classes))
            setting = cast(Setting, self.setting)
            tasks.append(make_task(t, name, images, labels, classes, t * per_task, setting))
        n_outputs = data.n_classes if self.setting == "class" else per_task
        n_heads = self.n_tasks if self.setting == "task" else 1
        setting = cast(Setting, self.setting)
        return Stream(self.name, setting, tuple(tasks), n_outputs, n_heads, 784, (1, 28, 28))

    def _classes_per_task(self, n_classes: int) -> int:
        if self.n_tasks > n_classes:
            raise UserError(
                f"split-mnist: n_tasks={self.n_tasks} is more than the {n_classes} classes "
                f"of {self.dataset}; use n_tasks <= {n_classes}"
            )
        divisors = [d for d in range(1, n_classes + 1) if n_classes % d == 0]
        if n_classes % self.n_tasks:
            raise UserError(
                f"split-mnist: n_tasks={self.n_tasks} does not divide the {n_classes} "
                f"classes of {self.dataset}; use one of {', '.join(map(str, divisors))}"
            )
        return n_classes // self.n_tasks
