"""Composition: ``er+ewc`` becomes a strategy of one learner, one memory and regularizers.

A spec joins names with ``+``. A name is a part registered in ``lifelong.strategies`` (an
init such as ``oml``; a learner such as ``sgd``, ``adam``; a memory, ``replay``; a
regularizer such as ``ewc``, ``si``) or a shortcut that a part declares (:func:`shortcuts`:
``er`` = replay, ``agem`` = the A-GEM learner with replay, ``der++`` = replay with logit
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

from lifelong.composition.registry import parts, strategies
from lifelong.contracts.head_axis import Head
from lifelong.contracts.init_axis import Init
from lifelong.contracts.params import build, param_specs
from lifelong.contracts.parts import Learner, Memory, Objective, Params, Regularizer, Replay
from lifelong.contracts.strategy import Batch, Strategy, StreamInfo
from lifelong.contracts.stream import TrainingData
from lifelong.errors import ContractError, UserError, closest
from lifelong.fast.closed_form import ClosedForm, has_closed_form

__all__ = [
    "Composite",
    "compose",
    "configure",
    "default_learner",
    "is_composite",
    "partner_defaults",
    "parts_by_axis",
    "setting_keys",
    "shortcuts",
]


def shortcuts() -> dict[str, tuple[str, ...]]:
    """Named classics and the parts they stand for (the learner defaults to ``sgd``), each
    declared by the part that owns it (its ``shortcuts``), by name.

    ``er``: experience replay (``replay``; Chaudhry et al. 2019); ``agem``: A-GEM
    (Chaudhry et al. 2019); ``der++``: DER++ (``der``; Buzzega et al. 2020); ``la-maml``,
    ``c-maml``, ``sync-la-maml`` (Gupta et al. 2020) and ``mer`` (Riemer et al. 2019): the
    online meta-learners over the shared reservoir memory.

    Raises:
        ContractError: two parts declare one shortcut.
    """
    found: dict[str, tuple[str, ...]] = {}
    owners: dict[str, str] = {}
    for owner, cls in sorted(parts().items()):
        for name, members in cls.shortcuts.items():
            if name in found:
                raise ContractError(
                    f"the shortcut '{name}' is declared by both {owners[name]} and {owner}; "
                    "rename one"
                )
            found[name], owners[name] = tuple(members), owner
    return dict(sorted(found.items()))


def default_learner() -> str:
    """The name of the learner a composition without one gets: the one built-in learner
    that declares :attr:`lifelong.Learner.is_default` (``sgd``).

    Raises:
        ContractError: no built-in learner declares it, or several do.
    """
    declared = [  # on the class itself: a subclass of the default is not the default
        name
        for name, cls in parts().items()
        if issubclass(cls, Learner) and vars(cls).get("is_default", False)
    ]
    if len(declared) != 1:
        raise ContractError(
            f"exactly one built-in learner must declare is_default = True, not {declared}"
        )
    return declared[0]


def __getattr__(name: str) -> Any:
    if name == "SHORTCUTS":  # the former constant, read by older callers: the declared ones
        return shortcuts()
    if name == "DEFAULT_LEARNER":  # the former constant: the declared one
        return default_learner()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


def _default_learner() -> Learner:
    learner = parts()[default_learner()]()
    assert isinstance(learner, Learner)
    return learner


@final
@dataclass
class Composite(Strategy):
    """A strategy assembled from parts: one learner, at most one memory, any regularizers.

    Its step minimises ``cross-entropy + sum(lam * penalty)`` with the learner, replaying
    from the memory when there is one. When the learner takes proximal steps
    (:meth:`Learner.proximal_rate`: ``sgd``, ``agem``, ``mer``, the La-MAML family),
    quadratic penalties are left out of the objective and applied exactly after each
    step instead (:meth:`apply_proximal`).
    Build it with :func:`compose` (``compose("er+ewc")``) or directly from part instances.
    An ``init`` part, when given, sets the starting weights first and says which
    parameters learn; the other parts see only those. A ``head`` part (None: the model's
    own linear output layer) may then replace the output layer (``cosine``) or the
    prediction (``ncm``: the nearest class mean of the features).
    """

    learner: Learner = field(default_factory=_default_learner, metadata=_doc("update rule"))
    memory: Memory | None = field(default=None, metadata=_doc("what is kept and replayed"))
    regularizers: tuple[Regularizer, ...] = field(default=(), metadata=_doc("the penalties"))
    init: Init | None = field(default=None, metadata=_doc("the starting weights (random)"))
    head: Head | None = field(default=None, metadata=_doc("how features become a prediction"))
    spec: str = field(default="", metadata=_doc("the line it was composed from, e.g. er+ewc"))

    model: nn.Module = field(init=False, repr=False, compare=False)
    params: Params = field(init=False, repr=False, compare=False)
    keep_logits: bool = field(init=False, repr=False, compare=False)
    logits_from: Regularizer | None = field(init=False, repr=False, compare=False)
    tied: bool = field(init=False, repr=False, compare=False)
    explicit: tuple[Regularizer, ...] = field(init=False, repr=False, compare=False)
    proximal: tuple[Regularizer, ...] = field(init=False, repr=False, compare=False)
    last_join: tuple[Batch, Batch, Batch] | None = field(
        init=False, repr=False, compare=False, default=None
    )
    minimised: Objective = field(init=False, repr=False, compare=False)
    # a cache, and what setup builds again
    not_checkpointed: ClassVar[tuple[str, ...]] = ("last_join", "minimised", "logits_from")

    @property
    def name(self) -> str:  # type: ignore[override]
        """The spec it was composed from (``er+ewc``), else its parts joined by ``+``."""
        return self.spec or "+".join(p.name for p in self.parts())

    def parts(self) -> list[Init | Learner | Memory | Regularizer | Head]:
        """The init (if any), the learner, the memory (if any), the regularizers and the head
        (if any)."""
        init = [self.init] if self.init is not None else []
        memory = [self.memory] if self.memory is not None else []
        head = [self.head] if self.head is not None else []
        return [*init, self.learner, *memory, *self.regularizers, *head]

    def setup(self, model: nn.Module, info: StreamInfo, generator: torch.Generator) -> None:
        # Fresh part instances: a run never sees state left by an earlier run of the same spec.
        self.init = dataclasses.replace(self.init) if self.init is not None else None
        self.learner = dataclasses.replace(self.learner)
        self.memory = dataclasses.replace(self.memory) if self.memory is not None else None
        self.regularizers = tuple(dataclasses.replace(r) for r in self.regularizers)
        self.head = dataclasses.replace(self.head) if self.head is not None else None
        if self.head is not None:
            self.head.check(model, info)
        learns = self.init.prepare(model, info, generator) if self.init is not None else None
        own_head = self.head.prepare(model, info, generator) if self.head is not None else set()
        if learns is not None:
            learns = learns | own_head
        self.model = model
        self.params = {n: p for n, p in model.named_parameters() if learns is None or n in learns}
        self.logits_from = next((r for r in self.regularizers if r.needs_logits), None)
        self.keep_logits = self.logits_from is not None
        self.tied, self.last_join = _has_tied_tensors(model), None
        device = next(iter(self.params.values())).device
        self.learner.setup(self.params, info, generator)
        rate = self.learner.proximal_rate()
        self.proximal = tuple(r for r in self.regularizers if rate is not None and _is_quadratic(r))
        self.explicit = tuple(r for r in self.regularizers if r not in self.proximal)
        if self.memory is not None:
            self.memory.setup(info, device, generator)
            self.memory.bind(model, self.params)
        rates = self.init.learning_rates() if self.init is not None else None
        if rates is not None:
            # Rates learnt for the model's own output layer do not carry over to a head that
            # replaced it (the cosine head's normalised weights): its weights step at the
            # learner's own rate (sgd's lr; the look-ahead learners' alpha_init).
            kept = {n: r for n, r in rates.items() if n in self.params and n not in own_head}
            self.learner.use_rates({n: r.to(device) for n, r in kept.items()})
        for regularizer in self.regularizers:
            regularizer.setup(model, info, generator)
        self.minimised = Objective(self.objective, self._closed_form(info.fast))

    def _closed_form(self, fast: bool) -> ClosedForm | None:
        """What the objective declares: a closed form when the run is ``fast``, the model
        declares closed-form gradients (:class:`lifelong.ClosedFormModel`), all its weights
        learn and every penalty in the objective is quadratic."""
        quadratic = all(map(_is_quadratic, self.explicit))
        every_weight = len(self.params) == len(list(self.model.parameters()))
        own_head = self.head is None or self.head.model_forward
        if not (fast and quadratic and every_weight and own_head and has_closed_form(self.model)):
            return None
        read = any(r.reads_gradients for r in self.regularizers)
        return ClosedForm(tuple(self.params), self.explicit, gradients_read=read)

    def objective(self, params: Params, batch: Batch, replay: Replay | None) -> Tensor:
        """Cross-entropy on the batch the memory joins with its replay, plus each weighted penalty.

        Meta-learners call this once per sample and weight set, so it is lean: the live
        weights run the module as it is, other weights go through ``functional_call``
        (which checks for tied tensors only when the model has some), and the last
        joined batch is reused while the same batch and replay come back.
        """
        data = batch if replay is None else self._joined(batch, replay)
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
        """Whether the objective declares a closed form (:class:`lifelong.fast.ClosedForm`)
        with no penalty in it (or, with ``quadratic_penalties``, only quadratic ones)."""
        closed = self.minimised.closed_form
        return closed is not None and closed.covers(self.params, penalties=quadratic_penalties)

    def descends(self) -> bool:
        """Whether the objective lets a plain SGD step skip forming the gradient
        (:meth:`lifelong.fast.ClosedForm.descends`: the cross-entropy with at most quadratic
        penalties, no part reads it)."""
        closed = self.minimised.closed_form
        return closed is not None and closed.descends(self.params)

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
            if rate is None or quadratic is None:
                continue
            if isinstance(rate, dict):
                quadratic.proximal_step(params, {n: r * reg.lam for n, r in rate.items()})
            else:
                quadratic.proximal_step(params, rate * reg.lam)

    def _joined(self, batch: Batch, replay: Replay) -> Batch:
        """The memory's :meth:`Memory.joined`, kept while the same batch and replay return."""
        cached = self.last_join
        if cached is not None and cached[0] is batch and cached[1] is replay.batch:
            return cached[2]
        assert self.memory is not None  # a replay comes from the memory
        joined = self.memory.joined(batch, replay)
        self.last_join = (batch, replay.batch, joined)
        return joined

    def train_step(self, batch: Batch) -> Tensor:
        replay = self.memory.sample_for(batch) if self.memory is not None else None
        if replay is not None and not self.learner.takes_drawn_rows:
            replay.gather()  # before the step: no gather under a torch.func transform
        stores = self.memory is not None and batch.glance == 0  # a repeated glance: no new sample
        keeper = self.logits_from if stores else None  # asked before the step changes the weights
        kept = keeper.logits_to_store(batch) if keeper is not None else None
        step = self.learner.step(self.params, batch, replay, self.minimised)
        self.apply_proximal(self.params)
        if stores and self.memory is not None:
            self.memory.add(batch, kept)
        if self.head is not None and batch.glance == 0:
            self.head.observe(self.model, batch)
        for regularizer in self.regularizers:
            regularizer.observe(self.params, step.grads)
        return step.loss

    def before_task(self, data: TrainingData) -> None:
        for regularizer in self.regularizers:
            regularizer.before_task(self.params, data)

    def after_task(self, data: TrainingData) -> None:
        if self.memory is not None:
            self.memory.after_task(data)
        for regularizer in self.regularizers:
            regularizer.after_task(self.params, data)

    def predict(self, x: Tensor, task_ids: Tensor) -> Tensor:
        if self.head is None:
            return self.model(x, task_ids)
        reads = self.memory is not None and self.head.reads_stored
        stored = self.memory.stored() if reads and self.memory is not None else None
        return self.head.predict(self.model, x, task_ids, stored)

    def boundary_needs(self) -> list[str]:
        """The names of its parts that need task boundaries."""
        return [part.name for part in self.parts() if part.needs_boundaries]

    def as_composite(self) -> Composite:
        return self


def _is_quadratic(regularizer: Regularizer) -> bool:
    """Whether the regularizer declares its penalty a :class:`Quadratic` (``is_quadratic``)."""
    return regularizer.is_quadratic


def _has_tied_tensors(model: nn.Module) -> bool:
    """Whether one parameter or buffer is reachable under two names (shared weights)."""
    named = [
        *model.named_parameters(remove_duplicate=False),
        *model.named_buffers(remove_duplicate=False),
    ]
    return len({id(t) for _, t in named}) < len(named)


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
    found, named = parts(), shortcuts()
    names: list[str] = []
    for token in tokens:
        names += [n for n in named.get(token, (token,)) if n not in names]
    axes = (("inits", Init), ("learners", Learner), ("memories", Memory), ("heads", Head))
    for axis, base in axes:
        clash = [n for n in names if issubclass(found[n], base)]
        if len(clash) > 1:
            raise UserError(
                f"'{spec}' has two {axis} ({' and '.join(clash)}); a strategy has one, "
                f"e.g. {clash[0]}+{'+'.join(n for n in names if n not in clash)}".rstrip("+")
            )
    learners = [n for n in names if issubclass(found[n], Learner)]
    learner = learners[0] if learners else default_learner()
    built = [found[n]() for n in [learner, *(n for n in names if n != learner)]]
    built = _shortcut_settings(partner_defaults(built, spec), tokens, spec)
    composite = _assemble(built, spec="+".join(tokens))
    _check_memory(composite)
    return composite


def partner_defaults(members: list[Any], spec: str) -> list[Any]:
    """``members`` with the defaults each declares for the others applied (``partner_defaults``).

    La-MAML declares ``{"replay": {"batch": 10}}``: composed with ``replay`` it replays 10
    samples, its paper's value, while ``replay`` alone replays as many as arrive. A
    ``--set`` (applied later by :func:`configure`) still wins.

    Raises:
        UserError: two parts declare different defaults for one key of a third.
    """
    by_name: dict[str, dict[str, Any]] = {}
    declared_by: dict[tuple[str, str], str] = {}
    names = {p.name for p in members}
    for part in members:
        for target, values in type(part).partner_defaults.items():
            if target not in names:
                continue
            for key, value in values.items():
                earlier = by_name.setdefault(target, {}).get(key, value)
                if earlier != value:
                    raise UserError(
                        f"'{spec}': {declared_by[target, key]} and {part.name} declare "
                        f"different defaults for {target}.{key} ({earlier} and {value}); "
                        f"choose one with --set {target}.{key}=VALUE"
                    )
                by_name[target][key], declared_by[target, key] = value, part.name
    return [_rebuild(p, by_name[p.name]) if p.name in by_name else p for p in members]


def _shortcut_settings(members: list[Any], tokens: list[str], spec: str) -> list[Any]:
    """``members`` with the settings that the shortcuts among ``tokens`` give them
    (:attr:`lifelong.contracts.composable.Composable.shortcut_settings`: ``mir`` is ``replay`` with
    ``retrieve=mir``). Raises UserError when two shortcuts set one key differently."""
    declared = {
        name: settings
        for cls in parts().values()
        for name, settings in cls.shortcut_settings.items()
        if name in tokens
    }
    by_name: dict[str, dict[str, Any]] = {}
    for _, settings in sorted(declared.items()):
        for target, values in settings.items():
            for key, value in values.items():
                earlier = by_name.setdefault(target, {}).setdefault(key, value)
                if earlier != value:
                    raise UserError(
                        f"'{spec}': two shortcuts set {target}.{key} ({earlier} and {value}); "
                        f"keep one, or choose with --set {target}.{key}=VALUE"
                    )
    return [_rebuild(p, by_name[p.name]) if p.name in by_name else p for p in members]


def _tokens(spec: str) -> list[str]:
    # Split at a '+' that is followed by a name, so that 'der++' stays one token.
    tokens = [t.strip() for t in re.split(r"\+(?=[^+])", spec.strip())]
    named = shortcuts()
    known = [*named, *parts(), *strategies()]
    for token in tokens:
        if not token:
            raise UserError(f"'{spec}' has an empty name; join names with '+', e.g. er+ewc")
        if token in strategies():
            raise UserError(
                f"'{token}' is a whole strategy and cannot be combined in '{spec}'; "
                f"combine parts ({', '.join(sorted(parts()))}) or shortcuts "
                f"({', '.join(named)})"
            )
        if token not in named and token not in parts():
            raise UserError(
                f"unknown strategy or part '{token}'{closest(token, known)}; strategies: "
                f"{', '.join(sorted(strategies()))}; shortcuts: {', '.join(named)}; "
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
    _check_memory_settings(assembled, [(rebuilt[i], set(given)) for i, given in values.items()])
    if type(composite) is not Composite:  # a subclass keeps its class, and so its own hooks
        parts = ("learner", "memory", "regularizers", "init", "head")
        assembled = dataclasses.replace(
            composite, **{name: getattr(assembled, name) for name in parts}
        )
    return assembled, used


def _check_memory_settings(composite: Composite, given: list[tuple[Any, set[str]]]) -> None:
    """A setting a part declares memory-only (:attr:`Composable.memory_settings`), given
    true, asks for samples a composition without a memory never has: refused."""
    if composite.memory is not None:
        return
    for part, names in given:
        for name in sorted(names & type(part).memory_settings):
            if getattr(part, name):
                raise UserError(
                    f"--set {part.name}.{name}=true acts on a memory's samples and "
                    f"'{composite.name}' keeps none; add one (e.g. {composite.name}+replay), "
                    f"give it only to the strategies that keep one (--set SPEC.{name}=true), "
                    "or leave it out"
                )


def _assemble(members: list[Init | Learner | Memory | Regularizer | Head], spec: str) -> Composite:
    """The composite of ``members``: its init, first learner, memory, regularizers, head."""
    learner = next(p for p in members if isinstance(p, Learner))
    memory = next((p for p in members if isinstance(p, Memory)), None)
    regularizers = tuple(p for p in members if isinstance(p, Regularizer))
    init = next((p for p in members if isinstance(p, Init)), None)
    if init is not None and init.gives_rates() and not learner.takes_rates:
        raise UserError(
            f"'{spec}': the '{init.name}' init gives per-parameter learning rates, which the "
            f"learner '{learner.name}' does not take; use sgd or la-maml, or "
            f"--set {init.name}.rates=false"
        )
    head = next((p for p in members if isinstance(p, Head)), None)
    return Composite(learner, memory, regularizers, init=init, head=head, spec=spec)


def _check_key(part: Init | Learner | Memory | Regularizer | Head, name: str) -> None:
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
    """The registered parts grouped by axis (inits, learners, memories, regularizers, heads),
    for listings."""
    axes: dict[str, type] = {
        "inits": Init,
        "learners": Learner,
        "memories": Memory,
        "regularizers": Regularizer,
        "heads": Head,
    }
    return {
        axis: {name: cls for name, cls in sorted(parts().items()) if issubclass(cls, base)}
        for axis, base in axes.items()
    }
