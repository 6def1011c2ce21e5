"""Avalanche's strategies as baselines inside lifelong's runner and evaluator.

``avalanche:EWC`` on the command line is :class:`AvalancheEWC`, a preset of
:class:`AvalancheBaseline`; the runner evaluates it exactly as it evaluates a native
strategy, so the R matrices, metrics and curves of both sit in one results directory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, final

import torch
from torch import nn

from lifelong.contracts.params import param
from lifelong.contracts.strategy import Batch, Strategy, StreamInfo
from lifelong.contracts.stream import TrainingData
from lifelong.errors import UserError, closest
from lifelong.interop.avalanche_streams import avalanche_dataset, require_avalanche

__all__ = [
    "ALGORITHMS",
    "AvalancheAGEM",
    "AvalancheBaseline",
    "AvalancheEWC",
    "AvalancheGDumb",
    "AvalancheGEM",
    "AvalancheLaMAML",
    "AvalancheLwF",
    "AvalancheNaive",
    "AvalancheReplay",
    "avalanche_strategies",
    "avalanche_strategy_class",
    "resolve",
]

ALGORITHMS: tuple[str, ...] = ("Naive", "EWC", "Replay", "LwF", "GEM", "AGEM", "GDumb", "LaMAML")
_ALGORITHM_DOC = "Avalanche strategy to run"


@dataclass
class AvalancheBaseline(Strategy):
    """One of Avalanche's strategies, trained a whole task at a time, judged by lifelong.

    Mapping: Avalanche trains on a whole experience at once, so ``train_step`` learns
    nothing (it returns a zero loss) and ``after_task`` turns the task's
    :class:`TrainingData` into an Avalanche experience (inputs / 255, task label = task id
    in the task setting, else 0) and calls ``strategy.train`` on it with Avalanche's own
    loop (``train_epochs`` x ``train_mb_size``; the protocol's epochs and batch size do not
    reach it). Curves are therefore flat inside a task and jump at its end; use
    ``eval_every=0`` to skip them. Prediction is the trained module's forward; Avalanche's
    evaluation and metrics are never called (its forgetting is R[j][j] - R[T][j], ours is
    max-based; our evaluator is the single judge).

    lifelong's MLP is wrapped as Avalanche expects: ``forward(x)`` for one head and an
    ``avalanche.models.MultiTaskModule`` (``forward(x, task_labels)``) in the task
    setting. Avalanche draws from the global RNGs; ``setup`` seeds them from the run's
    generator, so a seed gives one matrix. Hyperparameters an algorithm does not use are
    ignored.

    References: Lomonaco et al. 2021 (Avalanche); the algorithms' papers are cited on the
    presets (:class:`AvalancheEWC`, ...).
    """

    name: ClassVar[str] = "avalanche"
    resumable: ClassVar[bool] = False  # lifelong's checkpoints cannot hold Avalanche's state
    algorithm: str = param("Naive", _ALGORITHM_DOC, choices=ALGORITHMS)
    lr: float = param(0.1, "SGD learning rate (unused by LaMAML: learned rates move it)", gt=0)
    momentum: float = param(0.0, "SGD momentum", ge=0, le=1)
    train_mb_size: int = param(32, "mini-batch size of Avalanche's training loop", ge=1)
    train_epochs: int = param(1, "epochs of Avalanche's training loop over each task", ge=1)
    ewc_lambda: float = param(10.0, "EWC: penalty strength", ge=0)
    mem_size: int = param(200, "Replay, GDumb, LaMAML: samples kept in memory", ge=1)
    patterns_per_exp: int = param(256, "GEM, AGEM: samples kept per task", ge=1)
    memory_strength: float = param(0.5, "GEM: margin added to the projection", ge=0)
    sample_size: int = param(64, "AGEM: memory samples per reference gradient", ge=1)
    lwf_alpha: float = param(1.0, "LwF: weight of the distillation loss", ge=0)
    temperature: float = param(2.0, "LwF: distillation temperature", gt=0)
    n_inner_updates: int = param(5, "LaMAML: inner steps (chunks of each mini-batch)", ge=1)
    alpha_init: float = param(0.1, "LaMAML: initial learned learning rate", gt=0)
    lr_alpha: float = param(0.25, "LaMAML: learning rate of the learned rates", gt=0)
    buffer_mb_size: int = param(10, "LaMAML: memory samples added to each meta-batch", ge=1)
    second_order: bool = param(True, "LaMAML: differentiate through the inner steps")

    _learner: _Learner = field(init=False, repr=False)
    _uses_task_id: bool = field(init=False, repr=False, default=False)

    def __post_init__(self) -> None:
        chunk = math.ceil(self.train_mb_size / self.n_inner_updates)
        if self.algorithm == "LaMAML" and chunk * (self.n_inner_updates - 1) >= self.train_mb_size:
            raise UserError(
                f"avalanche:LaMAML splits each mini-batch of {self.train_mb_size} into "
                f"{self.n_inner_updates} chunks of {chunk}, leaving the last one empty (its "
                "loss is NaN); pick train_mb_size a multiple of n_inner_updates"
            )

    def setup(self, model: nn.Module, info: StreamInfo, generator: torch.Generator) -> None:
        _require(self.algorithm)
        from avalanche.training.determinism.rng_manager import RNGManager

        seed = torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device)
        RNGManager.set_random_seeds(int(seed))
        self._uses_task_id = info.uses_task_id
        wrapped = _multi_head(model) if info.uses_task_id else _SingleHead(model)
        self._learner = _Learner(_build(self, wrapped, next(model.parameters()).device))

    def train_step(self, batch: Batch) -> torch.Tensor:
        return torch.zeros((), device=batch.x.device)  # learning happens in after_task

    def after_task(self, data: TrainingData) -> None:
        from avalanche.benchmarks.scenarios.dataset_scenario import DatasetExperience
        from avalanche.benchmarks.scenarios.task_aware import with_task_labels

        label = data.id if self._uses_task_id else 0
        dataset = avalanche_dataset(data.x, data.y, label)
        experience = with_task_labels(
            DatasetExperience(dataset=dataset, current_experience=data.id)
        )
        experience.classes_in_this_experience = sorted(set(data.y.tolist()))
        self._learner.strategy.train(experience, eval_streams=[])
        self._learner.strategy.model.eval()

    def predict(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        # the learner's module, not the one given to setup: GDumb retrains a fresh copy
        return self._learner.strategy.model(x, task_ids)


@final
@dataclass
class AvalancheNaive(AvalancheBaseline):
    """Avalanche's Naive fine-tuning. References: McCloskey & Cohen 1989."""

    name: ClassVar[str] = "avalanche:Naive"
    algorithm: str = param("Naive", _ALGORITHM_DOC, choices=("Naive",))


@final
@dataclass
class AvalancheEWC(AvalancheBaseline):
    """Avalanche's EWC, one penalty per task ("separate"). References: Kirkpatrick et al. 2017."""

    name: ClassVar[str] = "avalanche:EWC"
    algorithm: str = param("EWC", _ALGORITHM_DOC, choices=("EWC",))


@final
@dataclass
class AvalancheReplay(AvalancheBaseline):
    """Avalanche's Replay (experience-balanced buffer). References: Chaudhry et al. 2019."""

    name: ClassVar[str] = "avalanche:Replay"
    algorithm: str = param("Replay", _ALGORITHM_DOC, choices=("Replay",))


@final
@dataclass
class AvalancheLwF(AvalancheBaseline):
    """Avalanche's Learning without Forgetting. References: Li & Hoiem 2017."""

    name: ClassVar[str] = "avalanche:LwF"
    algorithm: str = param("LwF", _ALGORITHM_DOC, choices=("LwF",))


@final
@dataclass
class AvalancheGEM(AvalancheBaseline):
    """Avalanche's GEM (needs quadprog). References: Lopez-Paz & Ranzato 2017."""

    name: ClassVar[str] = "avalanche:GEM"
    algorithm: str = param("GEM", _ALGORITHM_DOC, choices=("GEM",))


@final
@dataclass
class AvalancheAGEM(AvalancheBaseline):
    """Avalanche's A-GEM. References: Chaudhry et al. 2019 (A-GEM)."""

    name: ClassVar[str] = "avalanche:AGEM"
    algorithm: str = param("AGEM", _ALGORITHM_DOC, choices=("AGEM",))


@final
@dataclass
class AvalancheGDumb(AvalancheBaseline):
    """Avalanche's GDumb: retrain from the initial weights on a class-balanced memory.

    References: Prabhu et al. 2020.
    """

    name: ClassVar[str] = "avalanche:GDumb"
    algorithm: str = param("GDumb", _ALGORITHM_DOC, choices=("GDumb",))


@final
@dataclass
class AvalancheLaMAML(AvalancheBaseline):
    """Avalanche's La-MAML (``lamaml_v2``), which differs from the paper's.

    Each mini-batch is split into ``n_inner_updates`` chunks (one inner step per chunk,
    not per sample), there are no glances, the reservoir memory is refreshed once per
    experience (not per batch), it is second order by default, and its constructor
    re-initialises the network (Kaiming normal), so its init row b differs from other
    strategies' at the same seed.

    References: Gupta, Yadav & Paull 2020 (La-MAML).
    """

    name: ClassVar[str] = "avalanche:LaMAML"
    algorithm: str = param("LaMAML", _ALGORITHM_DOC, choices=("LaMAML",))


_PRESETS: dict[str, type[AvalancheBaseline]] = {
    cls.name.partition(":")[2]: cls
    for cls in (
        AvalancheNaive,
        AvalancheEWC,
        AvalancheReplay,
        AvalancheLwF,
        AvalancheGEM,
        AvalancheAGEM,
        AvalancheGDumb,
        AvalancheLaMAML,
    )
}


def avalanche_strategy_class(algorithm: str) -> type[AvalancheBaseline]:
    """The preset for ``algorithm`` (``"EWC"``; case is ignored), named ``avalanche:EWC``."""
    found = {name.lower(): cls for name, cls in _PRESETS.items()}
    if algorithm.lower() not in found:
        raise UserError(
            f"unknown Avalanche strategy '{algorithm}'{closest(algorithm, _PRESETS)};"
            f" known: {', '.join(f'avalanche:{a}' for a in _PRESETS)}"
        )
    return found[algorithm.lower()]


def avalanche_strategies() -> dict[str, type[Strategy]]:
    """Every preset by its command-line name, for ``lifelong list`` (imports no avalanche)."""
    return {cls.name: cls for cls in _PRESETS.values()}


def resolve(spec: str) -> type[AvalancheBaseline]:
    """The strategy class that ``avalanche:NAME`` names, for lifelong's registry.

    Raises:
        UserError: an unknown NAME, avalanche-lib missing, or GEM without quadprog.
    """
    cls = avalanche_strategy_class(spec.removeprefix("avalanche:"))
    _require(cls.name.partition(":")[2])
    return cls


def _require(algorithm: str) -> None:
    require_avalanche(f"avalanche:{algorithm}")
    if algorithm == "GEM":
        import qpsolvers  # an avalanche-lib dependency

        if "quadprog" not in qpsolvers.available_solvers:
            raise UserError("avalanche:GEM needs the QP solver quadprog: pip install quadprog")


def _build(cfg: AvalancheBaseline, model: nn.Module, device: torch.device) -> Any:
    """The Avalanche strategy ``cfg.algorithm`` around ``model``, with evaluation switched off."""
    from avalanche.training import AGEM, EWC, GEM, GDumb, LwF, Naive, Replay
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.training.supervised.lamaml_v2 import LaMAML

    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    common = dict(
        model=model,
        optimizer=optimizer,
        criterion=nn.CrossEntropyLoss(),
        train_mb_size=cfg.train_mb_size,
        train_epochs=cfg.train_epochs,
        device=device,
        evaluator=EvaluationPlugin(),
        eval_every=-1,
    )
    classes = {
        "Naive": Naive,
        "EWC": EWC,
        "Replay": Replay,
        "LwF": LwF,
        "GEM": GEM,
        "AGEM": AGEM,
        "GDumb": GDumb,
        "LaMAML": LaMAML,
    }
    extra: dict[str, dict[str, Any]] = {
        "Naive": {},
        "EWC": {"ewc_lambda": cfg.ewc_lambda},
        "Replay": {"mem_size": cfg.mem_size},
        "LwF": {"alpha": cfg.lwf_alpha, "temperature": cfg.temperature},
        "GEM": {"patterns_per_exp": cfg.patterns_per_exp, "memory_strength": cfg.memory_strength},
        "AGEM": {"patterns_per_exp": cfg.patterns_per_exp, "sample_size": cfg.sample_size},
        "GDumb": {"mem_size": cfg.mem_size},
        "LaMAML": {
            "n_inner_updates": cfg.n_inner_updates,
            "second_order": cfg.second_order,
            "alpha_init": cfg.alpha_init,
            "lr_alpha": cfg.lr_alpha,
            "max_buffer_size": cfg.mem_size,
            "buffer_mb_size": cfg.buffer_mb_size,
        },
    }
    return classes[cfg.algorithm](**common, **extra[cfg.algorithm])


class _Learner(nn.Module):
    """Holds the Avalanche strategy where lifelong's task-boundary checkpoints skip it.

    A checkpoint stores this holder as an empty state dict (Avalanche's own dill-based
    checkpointing fails on these strategies in 0.6.0), so saving works and resuming, which
    would silently lose EWC importances, buffers and learned rates, fails loudly instead.
    """

    def __init__(self, strategy: Any) -> None:
        super().__init__()
        self.strategy = strategy  # not an nn.Module: stays out of state_dict()

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        raise RuntimeError(
            "an Avalanche baseline cannot resume from a checkpoint (Avalanche's strategy "
            "state is not in it); delete the run's file under checkpoints/ in the results "
            "directory to run it afresh"
        )


class _SingleHead(nn.Module):
    """lifelong's one-head MLP as Avalanche calls it: ``forward(x)`` (task labels ignored)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, task_labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x)


def _multi_head(net: nn.Module) -> nn.Module:
    """lifelong's multi-head MLP as an ``avalanche.models.MultiTaskModule``."""
    from avalanche.models import MultiTaskModule

    class MultiHead(MultiTaskModule):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor, task_labels: Any) -> Any:
            if task_labels is None:  # every known head, as LwF's distillation asks
                return self.forward_all_tasks(x)
            return self.net(x, torch.as_tensor(task_labels, device=x.device).expand(len(x)))

        def forward_single_task(self, x: torch.Tensor, task_label: int) -> torch.Tensor:
            return self.net(x, torch.full((len(x),), task_label, device=x.device))

    return MultiHead(net)
