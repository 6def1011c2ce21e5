"""The init parts: ``random`` and the meta-learned ``maml``, ``reptile`` and ``oml``.

A meta-learned initialization is trained before the stream on tasks drawn from a pool
disjoint from it (:func:`lifelong.metatrain.meta_tasks`: another dataset, such as
Fashion-MNIST or the UCI handwritten digits, or unused permutations or rotations of the
training split; ``source`` picks which), then written into
the run's model. Meta-training shows a bar on a terminal and is cached on disk
(``$LIFELONG_CACHE/inits``, else ``~/.cache/lifelong/inits``) under a key made of the whole
config, the task pool, the model's shapes and the seed, so that a sweep meta-trains once
per config and seed, whatever strategy the init is combined with.

References: Finn et al. 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
Networks" (MAML); Nichol et al. 2018, "On First-Order Meta-Learning Algorithms" (Reptile);
Javed & White 2019, "Meta-Learning Representations for Continual Learning" (OML).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, final

import torch
from torch import nn

from lifelong import ImageScenario, StreamInfo, UserError, param
from lifelong.init_axis import Init
from lifelong.metatrain import (
    META_SOURCES,
    MAMLConfig,
    MetaTaskSource,
    OMLConfig,
    ReptileConfig,
    check_meta_source,
    meta_init,
    meta_tasks,
    pln_names,
)

SOURCE_DOC = (
    "where the disjoint meta-training tasks come from (auto: by scenario; uci-digits: "
    "scikit-learn's held-out UCI handwritten digits in MNIST's format)"
)


def _source(kind: str, info: StreamInfo, source: str) -> MetaTaskSource:
    """The meta-training pool for the run's stream; a hand-built stream has none."""
    return meta_tasks(_scenario(kind, info), info, info.seed, info.data_dir, source=source)


def _scenario(kind: str, info: StreamInfo) -> ImageScenario:
    if not isinstance(info.scenario, ImageScenario):
        raise UserError(
            f"the '{kind}' init is meta-learned and needs a scenario to draw disjoint "
            "meta-training tasks from; run it on a registered scenario such as split-mnist, "
            "not on a hand-built stream"
        )
    return info.scenario


@dataclass
class _MetaLearned(Init):
    """What the meta-learned inits share: the ``source`` of their meta-training tasks,
    checked before any run starts."""

    source: str = param("auto", SOURCE_DOC, choices=META_SOURCES)

    def check(self, model: nn.Module, info: StreamInfo) -> None:
        check_meta_source(_scenario(self.name, info), self.source, info.data_dir)


@final
@dataclass
class RandomInit(Init):
    """The model's own random initialization (PyTorch's ``nn.Linear`` default); all learn."""

    name: ClassVar[str] = "random"

    def prepare(
        self, model: nn.Module, info: StreamInfo, generator: torch.Generator
    ) -> set[str] | None:
        return None


@final
@dataclass
class MamlInit(_MetaLearned):
    """A MAML initialization: a few SGD steps from it fit a new task; every weight learns.

    References: Finn et al. 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of
    Deep Networks".
    """

    name: ClassVar[str] = "maml"
    meta_steps: int = param(MAMLConfig.meta_steps, "outer (meta) updates", ge=1)
    tasks_per_batch: int = param(MAMLConfig.tasks_per_batch, "tasks per meta update", ge=1)
    inner_steps: int = param(MAMLConfig.inner_steps, "SGD steps on a task's support data", ge=1)
    inner_batch: int = param(MAMLConfig.inner_batch, "support samples per inner step", ge=1)
    query_size: int = param(MAMLConfig.query_size, "query samples per task", ge=1)
    inner_lr: float = param(MAMLConfig.inner_lr, "learning rate of the inner steps", gt=0)
    outer_lr: float = param(MAMLConfig.outer_lr, "Adam learning rate of the meta update", gt=0)
    first_order: bool = param(MAMLConfig.first_order, "first-order MAML (no second derivatives)")

    def config(self) -> MAMLConfig:
        """The meta-training config these fields describe."""
        return MAMLConfig(
            self.meta_steps,
            self.tasks_per_batch,
            self.inner_steps,
            self.inner_batch,
            self.query_size,
            self.inner_lr,
            self.outer_lr,
            self.first_order,
        )

    def prepare(
        self, model: nn.Module, info: StreamInfo, generator: torch.Generator
    ) -> set[str] | None:
        source = _source(self.name, info, self.source)
        meta_init("maml", model, source, self.config(), seed=info.seed, progress=True)
        return None


@final
@dataclass
class ReptileInit(_MetaLearned):
    """A Reptile initialization: the weights moved toward task-adapted ones; every weight learns.

    References: Nichol et al. 2018, "On First-Order Meta-Learning Algorithms".
    """

    name: ClassVar[str] = "reptile"
    meta_steps: int = param(ReptileConfig.meta_steps, "outer (meta) updates", ge=1)
    tasks_per_batch: int = param(ReptileConfig.tasks_per_batch, "tasks per meta update", ge=1)
    inner_steps: int = param(ReptileConfig.inner_steps, "SGD steps on each task", ge=1)
    inner_batch: int = param(ReptileConfig.inner_batch, "samples per inner step", ge=1)
    inner_lr: float = param(ReptileConfig.inner_lr, "learning rate of the inner steps", gt=0)
    outer_lr: float = param(ReptileConfig.outer_lr, "meta step size, annealed to 0", gt=0)

    def config(self) -> ReptileConfig:
        """The meta-training config these fields describe."""
        return ReptileConfig(
            self.meta_steps,
            self.tasks_per_batch,
            self.inner_steps,
            self.inner_batch,
            self.inner_lr,
            self.outer_lr,
        )

    def prepare(
        self, model: nn.Module, info: StreamInfo, generator: torch.Generator
    ) -> set[str] | None:
        source = _source(self.name, info, self.source)
        meta_init("reptile", model, source, self.config(), seed=info.seed, progress=True)
        return None


@final
@dataclass
class OmlInit(_MetaLearned):
    """OML: a meta-learned representation (RLN), frozen in the stream; only the PLN learns.

    The prediction network (PLN) is the last ``pln_layers`` Linear layers of the model, in
    module order (1: the output layer ``head.*``; 2: the last hidden layer and ``head.*``, as
    OML's two final fully connected layers), the RLN everything before them; both are
    meta-trained.

    With ``reset_head`` (the default) the whole PLN is re-drawn before the stream
    (Kaiming-normal weights, zero biases, from the run's generator), as OML's evaluation does
    (``--reset``): the meta-trained output rows belong to meta-training classes, which the
    stream's classes are not, and meta-training itself re-initializes the output rows of
    every trajectory's classes, so the RLN is trained for exactly this start.
    ``reset_head=false`` keeps the meta-trained PLN instead.

    References: Javed & White 2019, "Meta-Learning Representations for Continual Learning"
    (official code khurramjaved96/mrcl).
    """

    name: ClassVar[str] = "oml"
    meta_steps: int = param(OMLConfig.meta_steps, "outer (meta) updates", ge=1)
    classes_per_episode: int = param(
        OMLConfig.classes_per_episode, "classes per trajectory, across tasks if needed", ge=1
    )
    samples_per_class: int = param(OMLConfig.samples_per_class, "PLN steps per class", ge=1)
    random_batch: int = param(OMLConfig.random_batch, "all-task samples in the meta loss", ge=0)
    inner_lr: float = param(OMLConfig.inner_lr, "learning rate of the PLN's inner steps", gt=0)
    outer_lr: float = param(OMLConfig.outer_lr, "Adam learning rate of the meta update", gt=0)
    first_order: bool = param(OMLConfig.first_order, "drop second derivatives in meta-training")
    reset_rows: bool = param(OMLConfig.reset_rows, "re-draw a trajectory's PLN rows in training")
    reset_head: bool = param(True, "re-draw the PLN before the stream, as OML's evaluation does")
    pln_layers: int = param(
        OMLConfig.pln_layers, "final Linear layers that form the PLN; the rest is the RLN", ge=1
    )

    def config(self) -> OMLConfig:
        """The meta-training config these fields describe."""
        return OMLConfig(
            meta_steps=self.meta_steps,
            classes_per_episode=self.classes_per_episode,
            samples_per_class=self.samples_per_class,
            random_batch=self.random_batch,
            inner_lr=self.inner_lr,
            outer_lr=self.outer_lr,
            first_order=self.first_order,
            reset_rows=self.reset_rows,
            pln_layers=self.pln_layers,
        )

    def check(self, model: nn.Module, info: StreamInfo) -> None:
        pln_names(model, self.pln_layers)
        super().check(model, info)

    def prepare(
        self, model: nn.Module, info: StreamInfo, generator: torch.Generator
    ) -> set[str] | None:
        pln = set(pln_names(model, self.pln_layers))  # before meta-training: fail early
        source = _source(self.name, info, self.source)
        meta_init("oml", model, source, self.config(), seed=info.seed, progress=True)
        if self.reset_head:
            _redraw(model, pln, generator)
        for n, p in model.named_parameters():
            p.requires_grad_(n in pln)  # the RLN is fixed: no gradient flows into it
        return pln


@torch.no_grad()
def _redraw(model: nn.Module, names: set[str], generator: torch.Generator) -> None:
    """Kaiming-normal (fan-in) weights and zero biases for ``names``, as OML initializes."""
    for n, p in model.named_parameters():
        if n in names and p.dim() > 1:
            noise = torch.randn(p.shape, generator=generator, device=generator.device)
            p.copy_(noise * math.sqrt(2.0 / p.shape[1]))
        elif n in names:
            p.zero_()
