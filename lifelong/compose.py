"""Composition: ``er+ewc`` becomes a strategy of one learner, one memory and regularizers.

A spec joins names with ``+``. A name is a part registered in ``lifelong.strategies`` (an
init such as ``oml``; a learner such as ``sgd``, ``adam``; a memory, ``replay``; a
regularizer such as ``ewc``, ``si``) or a shortcut from :data:`SHORTCUTS` (``er`` =
replay, ``agem`` = the A-GEM learner with replay, ``der++`` = replay with logit
distillation). An axis left out takes its default: the runner's random init, the ``sgd``
learner, no memory, no regularizer.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, final

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from lifelong.errors import UserError, closest
from lifelong.init_axis import Init
from lifelong.model import MLP, mlp_cross_entropy_grads
from lifelong.params import build, param_specs
from lifelong.parts import Learner, Memory, Params, Regularizer, Replay
from lifelong.registry import parts, strategies
from lifelong.strategy import Batch, Strategy, StreamInfo
from lifelong.stream import TrainingData

__all__ = [
    "SHORTCUTS",
    "Composite",
    "compose",
    "configure",
    "is_composite",
    "parts_by_axis",
    "plain_mlp_objective",
    "setting_keys",
]

SHORTCUTS: dict[str, tuple[str, ...]] = {
    "er": ("replay",),
    "agem": ("agem", "replay"),
    "der++": ("replay", "der"),
    "la-maml": ("la-maml", "replay"),
    "c-maml": ("c-maml", "replay"),
    "sync-la-maml": ("sync-la-maml", "replay"),
    "mer": ("mer", "replay"),
}
"""Named classics and the parts they stand for (the learner defaults to ``sgd``).

``er``: experience replay (Chaudhry et al. 2019, "On tiny episodic memories"); ``agem``:
A-GEM (Chaudhry et al. 2019); ``der++``: DER++ (Buzzega et al. 2020); ``la-maml``,
``c-maml``, ``sync-la-maml`` (Gupta et al. 2020) and ``mer`` (Riemer et al. 2019): the
online meta-learners over the shared reservoir memory.
"""

DEFAULT_LEARNER = "sgd"


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


def _default_learner() -> Learner:
    learner = parts()[DEFAULT_LEARNER]()
    assert isinstance(learner, Learner)
    return learner


@final
@dataclass
class Composite(Strategy):
    """A strategy assembled from parts: one learner, at most one memory, any regularizers.

    Its step minimises ``cross-entropy + sum(lam * penalty)`` with the learner, replaying
    from the memory when there is one. When the learner takes proximal steps
    (:meth:`Learner.proximal_rate`, ``sgd``), quadratic penalties are left out of the
    objective and applied exactly after each step instead (:meth:`apply_proximal`).
    Build it with :func:`compose` (``compose("er+ewc")``) or directly from part instances.
    An ``init`` part, when given, sets the starting weights first and says which
    parameters learn; the other parts see only those.
    """

    learner: Learner = field(default_factory=_default_learner, metadata=_doc("update rule"))
    memory: Memory | None = field(default=None, metadata=_doc("what is kept and replayed"))
    regularizers: tuple[Regularizer, ...] = field(default=(), metadata=_doc("the penalties"))
    init: Init | None = field(default=None, metadata=_doc("the starting weights (random)"))
    spec: str = field(default="", metadata=_doc("the line it was composed from, e.g. er+ewc"))

    model: nn.Module = field(init=False, repr=False, compare=False)
    params: Params = field(init=False, repr=False, compare=False)
    keep_logits: bool = field(init=False, repr=False, compare=False)
    tied: bool = field(init=False, repr=False, compare=False)
    explicit: tuple[Regularizer, ...] = field(init=False, repr=False, compare=False)
    proximal: tuple[Regularizer, ...] = field(init=False, repr=False, compare=False)
    last_join: tuple[Batch, Batch, Batch] | None = field(
        init=False, repr=False, compare=False, default=None
    )
    one_head_mlp: bool = field(init=False, repr=False, compare=False, default=False)
    not_checkpointed: ClassVar[tuple[str, ...]] = ("last_join",)  # a cache, rebuilt on use
    n_weights: int = field(init=False, repr=False, compare=False, default=0)

    @property
    def name(self) -> str:  # type: ignore[override]
        """The spec it was composed from (``er+ewc``), else its parts joined by ``+``."""
        return self.spec or "+".join(p.name for p in self.parts())

    def parts(self) -> list[Init | Learner | Memory | Regularizer]:
        """The init (if any), the learner, the memory (if any) and the regularizers."""
        init = [self.init] if self.init is not None else []
        memory = [self.memory] if self.memory is not None else []
        return [*init, self.learner, *memory, *self.regularizers]

    def setup(self, model: nn.Module, info: StreamInfo, generator: torch.Generator) -> None:
        # Fresh part instances: a run never sees state left by an earlier run of the same spec.
        self.init = dataclasses.replace(self.init) if self.init is not None else None
        self.learner = dataclasses.replace(self.learner)
        self.memory = dataclasses.replace(self.memory) if self.memory is not None else None
        self.regularizers = tuple(dataclasses.replace(r) for r in self.regularizers)
        learns = self.init.prepare(model, info, generator) if self.init is not None else None
        self.model = model
        self.params = {n: p for n, p in model.named_parameters() if learns is None or n in learns}
        self.keep_logits = any(r.needs_logits for r in self.regularizers)
        self.tied, self.last_join = _has_tied_tensors(model), None
        rate = self.learner.proximal_rate()
        self.proximal = tuple(r for r in self.regularizers if rate is not None and _is_quadratic(r))
        self.explicit = tuple(r for r in self.regularizers if r not in self.proximal)
        self.n_weights = len(list(model.parameters()))
        self.one_head_mlp = type(model) is MLP and model.n_heads == 1
        device = next(iter(self.params.values())).device
        self.learner.setup(self.params, info, generator)
        if self.memory is not None:
            self.memory.setup(info, device, generator)
        for regularizer in self.regularizers:
            regularizer.setup(model, info, generator)

    def objective(self, params: Params, batch: Batch, replay: Replay | None) -> Tensor:
        """Cross-entropy on the batch joined with the replay batch, plus each weighted penalty.

        Meta-learners call this once per sample and weight set, so it is lean: the live
        weights run the module as it is, other weights go through ``functional_call``
        (which checks for tied tensors only when the model has some), and the last
        joined batch is reused while the same batch and replay come back.
        """
        data = batch if replay is None else self._joined(batch, replay.batch)
        if params is self.params:
            logits = self.model(data.x, data.task_ids)
        else:
            logits = functional_call(
                self.model, params, (data.x, data.task_ids), tie_weights=self.tied
            )
        ce = F.cross_entropy(logits, data.y)
        if not self.explicit:
            return ce
        return ce + self.penalties(params, batch, replay)

    def plain_mlp(self, quadratic_penalties: bool = False) -> bool:
        """Whether :meth:`objective` is the bare cross-entropy of a one-head ``lifelong.MLP``.

        True when the model is exactly :class:`lifelong.model.MLP` with one head, every
        parameter learns and no penalty is part of the objective (or, with
        ``quadratic_penalties``, only penalties that state a :class:`Quadratic`); a learner
        may then take the objective's gradients in closed form (:meth:`mlp_loss_and_grads`,
        La-MAML's look-ahead).
        """
        if not (self.one_head_mlp and len(self.params) == self.n_weights):
            return False
        return not self.explicit or (quadratic_penalties and all(map(_is_quadratic, self.explicit)))

    def mlp_loss_and_grads(
        self, params: Params, batch: Batch, replay: Replay | None
    ) -> tuple[Tensor, Params]:
        """:meth:`objective` and its gradient in closed form, when ``plain_mlp(True)`` holds.

        The cross-entropy's gradient is written out
        (:func:`lifelong.model.mlp_cross_entropy_grads`) and each quadratic penalty adds
        ``lam`` times its own (:meth:`lifelong.Quadratic.value_and_gradient`).
        """
        x, y = batch.x, batch.y
        if replay is not None:
            x, y = torch.cat([x, replay.batch.x]), torch.cat([y, replay.batch.y])
        loss, by_hand = mlp_cross_entropy_grads(list(params.values()), x, y)
        grads = dict(zip(params, by_hand, strict=True))
        for reg in self.explicit:
            quadratic = reg.quadratic()
            if quadratic is None:
                loss = loss + reg.lam * reg.penalty(params, batch, replay).detach()
                continue
            value, slope = quadratic.value_and_gradient(params)
            loss = loss + reg.lam * value
            for name, g in slope.items():
                grads[name].add_(g, alpha=reg.lam)
        return loss, grads

    def penalties(self, params: Params, batch: Batch, replay: Replay | None) -> Tensor:
        """``sum(lam * penalty)`` over the regularizers that are part of the objective."""
        return sum(
            (reg.lam * reg.penalty(params, batch, replay) for reg in self.explicit),
            batch.x.new_zeros(()),
        )

    def apply_proximal(self, params: Params) -> None:
        """The learner's exact implicit step on each quadratic penalty left out of the objective."""
        rate = self.learner.proximal_rate()
        for reg in self.proximal:
            quadratic = reg.quadratic()
            if rate is not None and quadratic is not None:
                quadratic.proximal_step(params, rate * reg.lam)

    def _joined(self, batch: Batch, replayed: Batch) -> Batch:
        cached = self.last_join
        if cached is not None and cached[0] is batch and cached[1] is replayed:
            return cached[2]
        joined = _join(batch, replayed)
        self.last_join = (batch, replayed, joined)
        return joined

    def train_step(self, batch: Batch) -> Tensor:
        replay = self.memory.sample() if self.memory is not None else None
        stores = self.memory is not None and batch.glance == 0  # a repeated glance: no new sample
        # The logits kept with a sample are the model's outputs as it trains on the batch,
        # before the update (DER, Buzzega et al. 2020, Algorithm 1: z = h(x); step; store z).
        kept = self._logits(batch) if stores and self.keep_logits else None
        step = self.learner.step(self.params, batch, replay, self.objective)
        self.apply_proximal(self.params)
        if stores and self.memory is not None:
            self.memory.add(batch, kept)
        for regularizer in self.regularizers:
            regularizer.observe(self.params, step.grads)
        return step.loss

    def after_task(self, data: TrainingData) -> None:
        for regularizer in self.regularizers:
            regularizer.after_task(self.params, data)

    def predict(self, x: Tensor, task_ids: Tensor) -> Tensor:
        return self.model(x, task_ids)

    def as_composite(self) -> Composite:
        return self

    @torch.no_grad()
    def _logits(self, batch: Batch) -> Tensor:
        return self.model(batch.x, batch.task_ids)


def plain_mlp_objective(
    objective: object, params: Params, *, quadratic_penalties: bool = False
) -> Composite | None:
    """The composite whose :meth:`Composite.objective` ``objective`` is, when its model is a
    bare one-head MLP over ``params``' names (:meth:`Composite.plain_mlp`); else None.

    Learners then may take its gradients in closed form: the ``sgd`` learner
    (:meth:`Composite.mlp_loss_and_grads`, quadratic penalties included), La-MAML's
    look-ahead (``strategies/lookahead_mlp.py``) and MER's single-sample steps.
    """
    owner = getattr(objective, "__self__", None)
    if (
        isinstance(owner, Composite)
        and getattr(objective, "__func__", None) is Composite.objective
        and owner.plain_mlp(quadratic_penalties)
        and list(params) == list(owner.params)
    ):
        return owner
    return None


def _is_quadratic(regularizer: Regularizer) -> bool:
    """Whether the regularizer's class states its penalty as a :class:`Quadratic`."""
    return type(regularizer).quadratic is not Regularizer.quadratic


def _has_tied_tensors(model: nn.Module) -> bool:
    """Whether one parameter or buffer is reachable under two names (shared weights)."""
    named = [
        *model.named_parameters(remove_duplicate=False),
        *model.named_buffers(remove_duplicate=False),
    ]
    return len({id(t) for _, t in named}) < len(named)


def _join(a: Batch, b: Batch) -> Batch:
    return Batch(
        torch.cat([a.x, b.x]), torch.cat([a.y, b.y]), torch.cat([a.task_ids, b.task_ids]), a.task
    )


def is_composite(strategy: object) -> bool:
    """Whether ``strategy`` is a composite or a spec for one (not a registered class or a path)."""
    if isinstance(strategy, Composite):
        return True
    return isinstance(strategy, str) and ":" not in strategy and strategy not in strategies()


def compose(spec: str) -> Composite:
    """Build the composite that ``spec`` (``"er+ewc"``, ``"agem+si"``, ``"adam+replay"``) names.

    Raises:
        UserError: an unknown name (the closest is suggested), two learners or two
            memories, a name given twice, or a part that needs a memory without one.
    """
    tokens = _tokens(spec)
    found = parts()
    names: list[str] = []
    for token in tokens:
        names += [n for n in SHORTCUTS.get(token, (token,)) if n not in names]
    for axis, base in (("inits", Init), ("learners", Learner), ("memories", Memory)):
        clash = [n for n in names if issubclass(found[n], base)]
        if len(clash) > 1:
            raise UserError(
                f"'{spec}' has two {axis} ({' and '.join(clash)}); a strategy has one, "
                f"e.g. {clash[0]}+{'+'.join(n for n in names if n not in clash)}".rstrip("+")
            )
    learners = [n for n in names if issubclass(found[n], Learner)]
    learner = learners[0] if learners else DEFAULT_LEARNER
    built = [found[n]() for n in [learner, *(n for n in names if n != learner)]]
    composite = _assemble(built, spec="+".join(tokens))
    _check_memory(composite)
    return composite


def _tokens(spec: str) -> list[str]:
    # Split at a '+' that is followed by a name, so that 'der++' stays one token.
    tokens = [t.strip() for t in re.split(r"\+(?=[^+])", spec.strip())]
    known = [*SHORTCUTS, *parts(), *strategies()]
    for token in tokens:
        if not token:
            raise UserError(f"'{spec}' has an empty name; join names with '+', e.g. er+ewc")
        if token in strategies():
            raise UserError(
                f"'{token}' is a whole strategy and cannot be combined in '{spec}'; "
                f"combine parts ({', '.join(sorted(parts()))}) or shortcuts "
                f"({', '.join(SHORTCUTS)})"
            )
        if token not in SHORTCUTS and token not in parts():
            raise UserError(
                f"unknown strategy or part '{token}'{closest(token, known)}; strategies: "
                f"{', '.join(sorted(strategies()))}; shortcuts: {', '.join(SHORTCUTS)}; "
                f"parts: {', '.join(sorted(parts()))} (see `lifelong list`)"
            )
    repeated = [t for i, t in enumerate(tokens) if t in tokens[:i]]
    if repeated:
        raise UserError(f"'{repeated[0]}' appears twice in '{spec}'; give each part once")
    return tokens


def _check_memory(composite: Composite) -> None:
    learner = composite.learner
    for part in composite.parts():
        if isinstance(part, (Learner, Regularizer)) and part.needs_memory:
            if composite.memory is None:
                raise UserError(
                    f"'{part.name}' in '{composite.name}' needs a memory; add one, "
                    f"e.g. {composite.name}+replay"
                )
            if isinstance(part, Regularizer) and not learner.passes_replay:
                raise UserError(
                    f"'{part.name}' reads replayed samples, which the learner "
                    f"'{learner.name}' does not pass on; use it with sgd or adam"
                )


def configure(strategy: str | Composite, settings: Mapping[str, Any]) -> tuple[Composite, set[str]]:
    """Apply the ``--set`` settings that concern a composite; return it and the keys used.

    ``part.key`` (``ewc.lam``, ``replay.size``) sets one part; ``spec.key`` (``er.lr``) and
    a bare key (``lr``) go to the one part of this composite that declares the key. A bare
    key that two of its parts declare is an error asking for the ``part.key`` form.
    """
    composite = compose(strategy) if isinstance(strategy, str) else strategy
    values: dict[int, dict[str, Any]] = {}
    used: set[str] = set()
    members = composite.parts()
    for key, value in settings.items():
        prefix, dot, name = key.rpartition(".")
        if dot and prefix != composite.name:
            targets = [i for i, p in enumerate(members) if p.name == prefix]
            if targets:
                _check_key(members[targets[0]], name)
        else:
            targets = [i for i, p in enumerate(members) if name in param_specs(type(p))]
            if len(targets) > 1:
                owners = [members[i].name for i in targets]
                raise UserError(
                    f"--set {key}: {' and '.join(owners)} in '{composite.name}' both have "
                    f"'{name}'; say which, e.g. --set {owners[0]}.{name}={value}"
                )
        for i in targets:
            values.setdefault(i, {})[name] = value
            used.add(key)
    rebuilt = [_rebuild(p, values.get(i, {})) for i, p in enumerate(members)]
    assembled = _assemble(rebuilt, spec=composite.spec)
    if type(composite) is not Composite:  # a subclass keeps its class, and so its own hooks
        parts = ("learner", "memory", "regularizers", "init")
        assembled = dataclasses.replace(
            composite, **{name: getattr(assembled, name) for name in parts}
        )
    return assembled, used


def _assemble(members: list[Init | Learner | Memory | Regularizer], spec: str) -> Composite:
    """The composite of ``members``: its init, first learner, memory and regularizers."""
    learner = next(p for p in members if isinstance(p, Learner))
    memory = next((p for p in members if isinstance(p, Memory)), None)
    regularizers = tuple(p for p in members if isinstance(p, Regularizer))
    init = next((p for p in members if isinstance(p, Init)), None)
    return Composite(learner, memory, regularizers, init=init, spec=spec)


def _check_key(part: Init | Learner | Memory | Regularizer, name: str) -> None:
    specs = param_specs(type(part))
    if name not in specs:
        raise UserError(
            f"{part.name} has no parameter '{name}'{closest(name, specs)}; its parameters: "
            f"{', '.join(specs) or 'none'}"
        )


def _rebuild(part: Any, changes: dict[str, Any]) -> Any:
    """A fresh instance of ``part``'s class with its values and ``changes`` applied, checked."""
    current = {name: getattr(part, name) for name in param_specs(type(part))}
    return build(type(part), {**current, **changes}, owner=part.name)


def setting_keys(composite: Composite) -> list[str]:
    """Every ``--set`` key a composite accepts (for suggestions): ``lam`` and ``ewc.lam``, ..."""
    keys: list[str] = []
    for part in composite.parts():
        names = list(param_specs(type(part)))
        keys += names + [f"{part.name}.{n}" for n in names]
    return keys


def parts_by_axis() -> dict[str, dict[str, type]]:
    """The registered parts grouped by axis (learners, memories, regularizers), for listings."""
    axes: dict[str, type] = {
        "inits": Init,
        "learners": Learner,
        "memories": Memory,
        "regularizers": Regularizer,
    }
    return {
        axis: {name: cls for name, cls in sorted(parts().items()) if issubclass(cls, base)}
        for axis, base in axes.items()
    }
