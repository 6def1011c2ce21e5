"""The parts a strategy is composed of: a learner, a memory and regularizers.

DESIGN.md, "The four axes of a strategy": the update rule (:class:`Learner`), what is kept
and replayed (:class:`Memory`) and the penalty that protects old knowledge
(:class:`Regularizer`) are independent choices. :class:`lifelong.Composite` combines them;
a part computes and returns values and never touches the strategy that holds it.

Parameters are dicts keyed by name (``dict(model.named_parameters())``), and every
forward pass is ``torch.func.functional_call(model, params, (x, task_ids))``.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from lifelong.contracts.composable import Composable
from lifelong.contracts.params import param
from lifelong.contracts.strategy import Batch, StreamInfo
from lifelong.contracts.stream import TrainingData
from lifelong.data.inputs import to_floats
from lifelong.errors import ContractError
from lifelong.execution.checkpoint import Checkpointed
from lifelong.training.optim import Stepper

if TYPE_CHECKING:
    from typing_extensions import Self

    from lifelong.fast.closed_form import Activations, ClosedForm

__all__ = [
    "Learner",
    "Memory",
    "Objective",
    "Quadratic",
    "QuadraticRegularizer",
    "Regularizer",
    "Replay",
    "StackedMemory",
    "Step",
    "UnformedGradients",
    "apply_gradients",
    "detached",
    "fisher_diagonal",
    "fisher_labels",
    "gradient_importance",
    "gradients",
    "quadratic_penalty",
    "task_sample",
]

Params = dict[str, Tensor]


class Replay:
    """Samples drawn from a memory.

    Attributes:
        batch: the stored samples, ``x [R, D]``, ``y [R]``, ``task_ids [R]``.
        logits: float ``[R, n_outputs]``, the model's outputs when each sample was stored
            (kept only when a regularizer declares ``needs_logits``; zeros otherwise).
        activations: an acceleration's payload, None unless a memory computed it: the
            forward pass of the incoming batch joined with these samples at the current
            weights (MIR's scoring on the default MLP), which a closed-form step may start
            from while the weights are unchanged (:class:`lifelong.fast.Activations`).
        rows: for a replay made by :meth:`drawn`, the rows drawn from the memory's
            buffers (int64 ``[R]``; :meth:`source` gives the buffers), so that a learner
            that takes the samples in another order (GEM's, grouped by task) gathers them
            once; None for a replay made with its batch.
    """

    __slots__ = ("_batch", "_buffers", "_logits", "_versions", "activations", "rows")

    def __init__(
        self, batch: Batch, logits: Tensor, activations: Activations | None = None
    ) -> None:
        self._batch: Batch | None = batch
        self._logits: Tensor | None = logits
        self.activations = activations
        self.rows: Tensor | None = None
        self._buffers: tuple[Batch, Tensor] | None = None
        self._versions: tuple[int, ...] = ()

    @classmethod
    def drawn(cls, buffers: Batch, stored_logits: Tensor, rows: Tensor) -> Replay:
        """The samples at ``rows`` of a memory's ``buffers`` (its whole ``x``, ``y``,
        ``task_ids``) and of its ``stored_logits``, gathered when :attr:`batch` or
        :attr:`logits` is first read (:meth:`gather` at once). Reading them after the
        memory's buffers are written raises ContractError, so they are read within the
        step that drew them."""
        replay = cls.__new__(cls)
        replay._batch = replay._logits = replay.activations = None
        replay.rows, replay._buffers = rows, (buffers, stored_logits)
        replay._versions = _versions(buffers, stored_logits)
        return replay

    @property
    def batch(self) -> Batch:
        if self._batch is None:
            buffers, rows = self.source()
            self._batch = Batch(
                buffers.x.index_select(0, rows),
                buffers.y.index_select(0, rows),
                buffers.task_ids.index_select(0, rows),
                buffers.task,
            )
        return self._batch

    @property
    def logits(self) -> Tensor:
        if self.rows is not None and self._logits is None:
            _, rows = self.source()
            assert self._buffers is not None  # a drawn replay's
            self._logits = self._buffers[1].index_select(0, rows)
        return self._logits  # type: ignore[return-value]  # given, or gathered above

    def gather(self) -> Replay:
        """Gather the batch and the logits now (a drawn replay), and return this replay."""
        _ = self.batch, self.logits
        return self

    def source(self) -> tuple[Batch, Tensor]:
        """The memory's buffers and the drawn rows of a replay made by :meth:`drawn`.

        Raises:
            ContractError: the memory's buffers were written since the draw.
        """
        if self._buffers is None or self.rows is None:
            raise ContractError("this replay was made with its batch; it has no drawn rows")
        if _versions(*self._buffers) != self._versions:
            raise ContractError(
                "a replay batch was read after its memory was written (new samples or "
                "rewritten logits); read it in the step that drew it, before the memory changes"
            )
        return self._buffers[0], self.rows

    def __repr__(self) -> str:
        if self._batch is None and self.rows is not None:
            return f"Replay(<{len(self.rows)} drawn rows, not gathered yet>)"
        return f"Replay(batch={self._batch!r})"


def _versions(buffers: Batch, logits: Tensor) -> tuple[int, ...]:
    """The in-place write counters of a memory's buffers (a view shares its base's)."""
    return (buffers.x._version, buffers.y._version, buffers.task_ids._version, logits._version)


@dataclass(frozen=True)
class Quadratic:
    """A penalty ``scale * sum_i weights_i * (theta_i - center_i)^2 + offset``, by name.

    Attributes:
        weights: the curvature of each weight's term, shaped like the parameter.
        center: the point each weight is pulled to.
        scale: a factor on every term (EWC's 1/2), kept apart so nothing is rescaled per step.
        offset: the constant that makes the value equal the regularizer's penalty.
    """

    weights: Params
    center: Params
    scale: float = 1.0
    offset: Tensor | float = 0.0

    def proximal_step(self, params: Params, rate: float | Params) -> None:
        """Move ``params`` in place to the exact minimiser of the penalty plus a step cost.

        ``u = argmin lam_w (u - c)^2 + (u - theta)^2 / (2 rate)`` per weight, i.e.
        ``u = (theta + k c) / (1 + k)`` with ``k = 2 rate scale w``; the caller folds
        ``lam`` into ``rate``, one number or one tensor per parameter (La-MAML's rates). It
        contracts towards ``c`` for any ``k >= 0``, so it never diverges.
        """
        with torch.no_grad():
            for name in self.weights:
                if name in params:
                    own = rate[name] if isinstance(rate, dict) else rate
                    pull, norm = self.proximal_terms(name, own)
                    params[name].add_(pull).div_(norm)

    def proximal_terms(self, name: str, rate: float | Tensor) -> tuple[Tensor, Tensor]:
        """``(k c, k + 1)`` of :meth:`proximal_step` for one parameter: it sets
        ``theta <- (theta + k c) / (k + 1)``."""
        k = self.weights[name] * (2 * self.scale) * rate
        return k * self.center[name], k + 1

    def value(self, params: Params) -> Tensor:
        """The penalty at ``params``, 0-d and differentiable: the regularizer's ``penalty``."""
        return self.scale * quadratic_penalty(params, self.weights, self.center) + self.offset

    def value_and_slopes(self, params: Params) -> tuple[Tensor, Params]:
        """The penalty at ``params`` and ``w (theta - c)`` by name (its gradient is ``2
        scale`` times that), no graph."""
        names, slopes, value = self._value_and_slopes(params)
        return value, dict(zip(names, slopes, strict=True))

    def value_and_gradient(self, params: Params) -> tuple[Tensor, Params]:
        """The penalty at ``params`` and its gradient ``2 scale w (theta - c)``, no graph.

        Names the penalty does not cover get no entry in the gradient.
        """
        names, slopes, value = self._value_and_slopes(params)
        torch._foreach_mul_(slopes, 2 * self.scale)  # one kernel per list, not per weight
        return value, dict(zip(names, slopes, strict=True))

    def add_gradient(self, params: Params, grads: Params, alpha: float) -> Tensor:
        """The penalty at ``params``; adds ``alpha`` times its gradient to ``grads`` in
        place (the scaling folded into the addition: one pass over the weights fewer than
        :meth:`value_and_gradient` and an addition)."""
        names, slopes, value = self._value_and_slopes(params)
        torch._foreach_add_([grads[n] for n in names], slopes, alpha=2 * self.scale * alpha)
        return value

    def _value_and_slopes(self, params: Params) -> tuple[list[str], list[Tensor], Tensor]:
        """The names covered, ``w (theta - c)`` for each, and the penalty's value."""
        names = list(self.weights)
        diffs = torch._foreach_sub(
            [params[n].detach() for n in names], [self.center[n] for n in names]
        )
        slopes = torch._foreach_mul(diffs, [self.weights[n] for n in names])
        terms = [
            torch.dot(s.reshape(-1), d.reshape(-1)) for s, d in zip(slopes, diffs, strict=True)
        ]
        value = self.offset + self.scale * torch.stack(terms).sum()
        return names, list(slopes), torch.as_tensor(value)


@dataclass(frozen=True)
class Objective:
    """What a learner minimises: ``objective(params, batch, replay) -> 0-d loss``.

    Attributes:
        loss: the function itself, the reference a learner differentiates.
        closed_form: declared when the loss's gradient has a closed form
            (:class:`lifelong.fast.ClosedForm`; None: autograd only). Learners may then
            take the accelerations of :mod:`lifelong.fast`.
    """

    loss: Callable[[Params, Batch, Replay | None], Tensor]
    closed_form: ClosedForm | None = None

    def __call__(self, params: Params, batch: Batch, replay: Replay | None) -> Tensor:
        return self.loss(params, batch, replay)


@dataclass(frozen=True)
class Step:
    """What a learner's step returns.

    Attributes:
        loss: 0-d, detached: the objective the learner minimised, before the update.
        grads: that objective's gradient at the weights before the update, by parameter
            name, before any projection (A-GEM's, GEM's): SI's path integral reads it.
            An empty :class:`UnformedGradients` when the learner did not form it or keeps
            it to itself, which it may only where the objective has a
            :class:`lifelong.fast.ClosedForm` whose ``gradients_read`` is False (every
            regularizer declares :attr:`Regularizer.reads_gradients` False; the plain
            ``sgd`` step forms none where the closed form :meth:`descends`).
    """

    loss: Tensor
    grads: Params


class UnformedGradients(dict[str, Tensor]):
    """:attr:`Step.grads` of a step that formed no gradient: empty, and reading a
    parameter's gradient from it raises a :class:`lifelong.ContractError` that says how
    to be given them (a regularizer's ``reads_gradients``)."""

    def __missing__(self, name: str) -> Tensor:
        raise ContractError(
            f"the step's gradient of {name!r} was not formed (a plain sgd step or a gem "
            "step on the closed-form cross-entropy hands none over where every regularizer "
            "declares reads_gradients = False); a regularizer whose observe reads gradients keeps "
            "reads_gradients = True"
        )


@dataclass
class Learner(Composable, Checkpointed, abc.ABC):
    """The update rule: how one incoming batch (and a replayed one) changes the weights.

    Attributes:
        needs_memory: the rule reads a replay batch (so a memory is required).
        passes_replay: the rule gives the replay batch to the objective, so penalties
            that read it (DER's) apply.
    """

    needs_memory: ClassVar[bool] = False
    passes_replay: ClassVar[bool] = True
    takes_drawn_rows: ClassVar[bool] = False
    """The rule reads a drawn replay's rows itself (:meth:`Replay.source`: GEM's grouping by
    task); any other learner is handed the replay gathered (:meth:`Replay.gather`), so
    nothing is gathered under a ``torch.func`` transform or after the memory changes."""
    takes_rates: ClassVar[bool] = False
    """The rule can step with per-parameter rates an init learned (:meth:`use_rates`)."""
    is_default: ClassVar[bool] = False
    """The learner a composition that names none gets (``er`` is ``sgd+replay``); one
    built-in declares it, ``sgd``."""

    @abc.abstractmethod
    def setup(self, params: Params, info: StreamInfo, generator: torch.Generator) -> None:
        """Build optimiser state for ``params`` (the model's own parameters, updated in place)."""

    @abc.abstractmethod
    def step(
        self, params: Params, batch: Batch, replay: Replay | None, objective: Objective
    ) -> Step:
        """Update ``params`` in place from ``batch`` (and ``replay``), minimising ``objective``."""

    def use_rates(self, rates: Params) -> None:
        """Step with these per-parameter learning rates (by name, shaped like the weights;
        Meta-SGD's, from the init) instead of one rate; called after :meth:`setup`, only
        on a learner that declares :attr:`takes_rates`."""
        raise NotImplementedError(f"learner '{self.name}' takes no per-parameter rates")

    def proximal_rate(self) -> float | Params | None:
        """The step size of an exact proximal step for quadratic penalties, or None.

        One number, or one non-negative tensor per parameter by name (a learner whose
        steps have per-weight rates, La-MAML's ``relu(alpha)``). A learner that returns a
        rate ``eta`` does not see the quadratic penalties (EWC, SI,
        MAS) in its objective; after each of its steps the composite moves every weight to
        ``argmin_u lam * w (u - c)^2 + (u - theta)^2 / (2 eta)``, the implicit step on the
        penalty, which is stable at any strength. None (the default) adds the penalties to
        the objective like any other loss term.
        """
        return None

    def stacked_sgd(self) -> tuple[float, float] | None:
        """``(lr, momentum)`` when this rule's step is plain SGD on the objective (then
        followed by :meth:`proximal_rate`'s step, if any), which seeds stacked along a
        leading dimension take as one batched SGD step (``--vectorize``); None (the
        default): the rule cannot be stacked over seeds."""
        return None


@dataclass
class Memory(Composable, Checkpointed, abc.ABC):
    """What is kept from the past: ``add`` incoming samples, ``sample`` a replay batch.

    Attributes:
        stackable: :meth:`stacked` joins several seeds' memories of this kind into one
            (seeds trained as one batched model, ``--vectorize``).
    """

    stackable: ClassVar[bool] = False

    @abc.abstractmethod
    def setup(self, info: StreamInfo, device: torch.device, generator: torch.Generator) -> None:
        """Allocate the (empty) storage on ``device``."""

    def bind(self, model: nn.Module, params: Params) -> None:
        """Called once after :meth:`setup` with the network and its live weights by name
        (used only through ``functional_call``): a policy that reads the model, MIR's
        retrieval or GSS's selection, keeps them. The default ignores them."""

    def sample_for(self, batch: Batch) -> Replay | None:
        """The replay batch that goes with the incoming ``batch`` (MIR's retrieval reads
        it); the default is :meth:`sample`."""
        return self.sample()

    @abc.abstractmethod
    def add(self, batch: Batch, logits: Tensor | None) -> None:
        """Offer ``batch``'s samples (and the model's ``logits [B, n_outputs]``) for storage."""

    def after_task(self, data: TrainingData) -> None:
        """Called when a task ends, with its training data, before the regularizers'
        ``after_task`` (a memory that chooses at a task's end, herding, does it here;
        ``--vectorize`` calls each seed's). The default does nothing."""

    @abc.abstractmethod
    def sample(self) -> Replay | None:
        """A replay batch drawn with the run's generator, or None while the memory is empty."""

    @abc.abstractmethod
    def joined(self, batch: Batch, replay: Replay) -> Batch:
        """The batch the objective's cross-entropy runs on, from the incoming ``batch`` and
        the ``replay`` drawn for it (ER's: the incoming samples, then the replayed ones)."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of samples stored."""

    def replay_rows(self, batch_size: int) -> int:
        """The most samples a replay batch holds in a stream of ``batch_size``-sample
        batches (0: unknown, the default). A run sizes its step's buffers by it
        (:meth:`lifelong.execution.runner.RunSpec.training_rows`)."""
        return 0

    def stored(self) -> Batch | None:
        """Every sample held (``x [N, D]``, ``y``, ``task_ids``), for heads that read the
        memory (the ``ncm`` head's prototypes); None when empty or when this memory does
        not expose its samples (the default)."""
        return None

    @classmethod
    def stacked(cls, memories: list[Self]) -> StackedMemory:
        """One memory for several seeds' ``memories`` (``--vectorize``), each seed's draws
        its own; offered when :attr:`stackable` says so."""
        raise NotImplementedError(f"memory '{cls.name}' offers no stacked form")


class StackedMemory(Protocol):
    """The memories of stacked seeds (:meth:`Memory.stacked`): every seed's batch at once,
    stacked along a leading dimension ``[S, ...]``."""

    def sample(self) -> tuple[Batch, Tensor] | None:
        """Every seed's replay batch stacked and its stored logits ``[S, R, C]``; None
        while the memories are empty."""

    def add(self, stacked: Batch, logits: Tensor | None) -> None:
        """Offer row ``s`` of ``stacked`` (and of ``logits``) to seed ``s``'s memory."""


@dataclass
class Regularizer(Composable, Checkpointed, abc.ABC):
    """A penalty that protects old knowledge; the strategy adds ``lam * penalty(...)``.

    Attributes:
        needs_memory: the penalty reads a replay batch (so a memory is required).
        needs_logits: the memory must keep the model's logits of each stored sample.
    """

    needs_memory: ClassVar[bool] = False
    needs_logits: ClassVar[bool] = False
    is_quadratic: ClassVar[bool] = False
    """The penalty is a quadratic that :meth:`quadratic` states (declare it with that
    method): proximal learners then apply it exactly, and closed forms may include it."""
    reads_gradients: ClassVar[bool] = True
    """:meth:`observe` may read each step's gradients (SI's path integral). A part that
    never does declares False: a learner may then step without forming them
    (:func:`lifelong.fast.cross_entropy_descent`), and :meth:`observe` is given an empty
    :class:`UnformedGradients`."""
    lam: float = param(1.0, "strength of the penalty", ge=0)

    @abc.abstractmethod
    def setup(self, model: nn.Module, info: StreamInfo, generator: torch.Generator) -> None:
        """Reset the state; ``model`` is used only through ``functional_call``."""

    @abc.abstractmethod
    def penalty(self, params: Params, batch: Batch, replay: Replay | None) -> Tensor:
        """The penalty at ``params`` (0-d, differentiable), before multiplying by ``lam``."""

    def quadratic(self) -> Quadratic | None:
        """The penalty as ``sum_i w_i (theta_i - c_i)^2`` plus a constant, or None.

        Regularizers whose penalty is such a quadratic (EWC, online EWC, SI, MAS) return
        it, so that a learner with a :meth:`Learner.proximal_rate` applies it exactly;
        None before the first consolidation. Others keep the default None and are always
        part of the objective. It may change only in :meth:`after_task` and
        :meth:`before_task` (``--vectorize`` reads it once per task, after
        :meth:`before_task`, and when it resumes from a checkpoint).
        """
        return None

    def logits_to_store(self, batch: Batch) -> Tensor:
        """The logits ``[B, n_outputs]`` the memory keeps with ``batch``'s samples, asked
        for before the learner's step (only of a part that declares ``needs_logits``)."""
        raise NotImplementedError(f"{self.name} declares no logits to store")

    def observe(self, params: Params, grads: Params) -> None:
        """Called by the strategy after every update with the step's gradients (SI; none
        when the part declares :attr:`reads_gradients` False)."""

    def before_task(self, params: Params, data: TrainingData) -> None:
        """Called when a task begins (with task boundaries), before its first step."""

    def after_task(self, params: Params, data: TrainingData) -> None:
        """Consolidate at the end of a task (importance, anchors, old model)."""


@dataclass
class QuadraticRegularizer(Regularizer):
    """A regularizer whose penalty is the :class:`Quadratic` its :meth:`quadratic` states
    (EWC, online EWC, SI, MAS): it declares ``is_quadratic`` and its penalty is that
    quadratic's value (0 while it states none), so the two never disagree."""

    is_quadratic: ClassVar[bool] = True

    @abc.abstractmethod
    def quadratic(self) -> Quadratic | None:
        """The penalty as a :class:`Quadratic`, or None before the first consolidation."""

    def penalty(self, params: Params, batch: Batch, replay: Replay | None) -> Tensor:
        quadratic = self.quadratic()
        return batch.x.new_zeros(()) if quadratic is None else quadratic.value(params)


def gradients(loss: Tensor, params: Params) -> Params:
    """``d loss / d params``, by name."""
    return dict(zip(params, torch.autograd.grad(loss, tuple(params.values())), strict=True))


def apply_gradients(optimizer: Stepper, params: Params, grads: Params) -> None:
    """Set every ``param.grad`` to ``grads[name]`` and take one optimiser step."""
    for name, p in params.items():
        p.grad = grads[name]
    optimizer.step()


def detached(params: Mapping[str, Tensor]) -> Params:
    """A copy of ``params`` that no later update or graph touches (an anchor, an old model)."""
    return {name: p.detach().clone() for name, p in params.items()}


def quadratic_penalty(params: Params, weights: Params, anchor: Params) -> Tensor:
    """``sum_i weights_i * (params_i - anchor_i)^2`` over every named parameter, 0-d."""
    terms = [(w * (params[name] - anchor[name]).pow(2)).sum() for name, w in weights.items()]
    return torch.stack(terms).sum()


def task_sample(data: TrainingData, n: int, generator: torch.Generator) -> Batch:
    """Up to ``n`` training samples of a task, drawn without replacement, as a model-ready batch."""
    take = torch.randperm(len(data.y), generator=generator, device=data.y.device)[:n]
    x = to_floats(data.x[take], data.inputs)  # normalised, never augmented
    return Batch(x, data.y[take], data.task_ids[take], data.id)


def gradient_importance(
    model: nn.Module,
    params: Params,
    batch: Batch,
    sample_loss: Callable[[Tensor, Tensor], Tensor],
    kind: Literal["square", "abs"],
    chunk: int = 64,
    summed_loss: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> Params:
    """Mean over samples of ``g_i^2`` or ``|g_i|``, ``g_i`` the gradient of sample i's loss.

    Args:
        sample_loss: ``(logits [1, n_outputs], y [1]) -> 0-d`` loss of one sample.
        kind: ``"square"`` (a Fisher diagonal) or ``"abs"`` (MAS importance).
        summed_loss: ``(logits [B, n_outputs], y [B]) -> 0-d``, the sum of
            ``sample_loss`` over the rows (e.g. cross-entropy with ``reduction="sum"``);
            it enables the one-pass path below.
        chunk: samples whose per-sample gradients are held at once on the general path
            (memory ``chunk x n_params``).

    Returns:
        Tensors shaped like ``params``. When ``summed_loss`` is given and every parameter
        in ``params`` belongs to an ``nn.Linear`` that the forward pass calls once (the
        built-in MLP), the per-sample
        gradient of a weight is the outer product ``delta_i a_i^T`` of the layer's output
        gradient and input, so the sum over samples is ``(delta^2)^T (a^2)`` (or with
        absolute values): one forward and one backward for the whole batch. Any other
        model takes ``vmap(grad(...))`` over the samples, ``chunk`` at a time; the two
        agree to float rounding.
    """
    frozen = detached(params)
    layers = _linear_layers(model, frozen) if summed_loss is not None and len(batch.y) else None
    total = None
    with eval_mode(model):
        if layers is not None and summed_loss is not None:
            total = _linear_importance(model, layers, frozen, batch, summed_loss, kind)
        if total is None:
            total = _vmap_importance(model, frozen, batch, sample_loss, kind, chunk)
    return {name: t / max(len(batch.y), 1) for name, t in total.items()}


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode inside the block, in its former mode after.

    Per-sample quantities (EWC's Fisher, MAS's importance) take the network as it
    predicts: batch norm with its running statistics, which one sample's gradient can be
    taken through (batch statistics would mix the samples of a batch, and updating them
    inside ``vmap`` is not possible)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _linear_layers(model: nn.Module, params: Params) -> dict[str, nn.Linear] | None:
    """The Linear layers owning every name in ``params`` (by module name), or None."""
    layers = {
        name: module for name, module in model.named_modules() if isinstance(module, nn.Linear)
    }
    owned = {f"{name}.{kind}" for name, layer in layers.items() for kind in ("weight", "bias")}
    if not set(params) <= owned:
        return None
    return {n: m for n, m in layers.items() if f"{n}.weight" in params or f"{n}.bias" in params}


def _linear_importance(
    model: nn.Module,
    layers: dict[str, nn.Linear],
    params: Params,
    batch: Batch,
    summed_loss: Callable[[Tensor, Tensor], Tensor],
    kind: Literal["square", "abs"],
) -> Params | None:
    """Summed per-sample importances from each Linear's inputs and output gradients.

    None when the forward pass calls a layer more than once or on 3-D inputs, where the
    outer-product form does not hold.
    """
    inputs: dict[str, list[Tensor]] = {name: [] for name in layers}
    outputs: dict[str, list[Tensor]] = {name: [] for name in layers}

    def recorder(name: str) -> Callable[[nn.Module, tuple[Tensor, ...], Tensor], None]:
        def record(module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
            inputs[name].append(args[0].detach())
            outputs[name].append(out)

        return record

    live = {name: p.detach().requires_grad_() for name, p in params.items()}
    hooks = [layer.register_forward_hook(recorder(name)) for name, layer in layers.items()]
    try:
        logits = functional_call(model, live, (batch.x, batch.task_ids))
    finally:
        for hook in hooks:
            hook.remove()
    if not all(len(o) == 1 and o[0].dim() == 2 for o in outputs.values()):
        return None
    names = list(layers)
    deltas = torch.autograd.grad(summed_loss(logits, batch.y), [outputs[n][0] for n in names])
    total: Params = {}
    for name, delta in zip(names, deltas, strict=True):
        a = inputs[name][0]
        d, a = (delta.pow(2), a.pow(2)) if kind == "square" else (delta.abs(), a.abs())
        if f"{name}.weight" in params:
            total[f"{name}.weight"] = d.T @ a
        if f"{name}.bias" in params:
            total[f"{name}.bias"] = d.sum(0)
    return {name: total[name] for name in params}


def _vmap_importance(
    model: nn.Module,
    params: Params,
    batch: Batch,
    sample_loss: Callable[[Tensor, Tensor], Tensor],
    kind: Literal["square", "abs"],
    chunk: int,
) -> Params:
    """Summed per-sample importances from ``vmap(grad(...))``, ``chunk`` samples at a time."""

    def one(p: Params, x: Tensor, y: Tensor, t: Tensor) -> Tensor:
        return sample_loss(functional_call(model, p, (x[None], t[None])), y[None])

    per_sample = vmap(grad(one), in_dims=(None, 0, 0, 0))
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    for start in range(0, len(batch.y), chunk):
        part = slice(start, start + chunk)
        g = per_sample(params, batch.x[part], batch.y[part], batch.task_ids[part])
        for name in total:
            total[name] += (g[name].pow(2) if kind == "square" else g[name].abs()).sum(0)
    return total


def fisher_diagonal(
    model: nn.Module,
    params: Params,
    batch: Batch,
    kind: str,
    generator: torch.Generator,
) -> Params:
    """Diagonal of the Fisher information of the model's predictive distribution on ``batch``.

    ``"empirical"`` uses the batch's labels; ``"true"`` draws one label per sample from
    the model's own prediction (an unbiased one-sample estimate of the true Fisher).

    References: Kirkpatrick et al. 2017; Martens 2020 ("New insights and perspectives on
    the natural gradient method") on empirical versus true Fisher.
    """
    labelled = fisher_labels(model, params, batch, kind, generator)
    return gradient_importance(
        model, params, labelled, F.cross_entropy, "square", summed_loss=_summed_cross_entropy
    )


def fisher_labels(
    model: nn.Module, params: Params, batch: Batch, kind: str, generator: torch.Generator
) -> Batch:
    """``batch`` with the labels :func:`fisher_diagonal` differentiates: its own
    (``"empirical"``) or one drawn per sample from the model's prediction (``"true"``)."""
    if kind not in ("empirical", "true"):
        raise ValueError(f"fisher kind must be 'empirical' or 'true', not {kind!r}")
    if kind == "empirical":
        return batch
    with torch.no_grad(), eval_mode(model):
        probs = functional_call(model, params, (batch.x, batch.task_ids)).softmax(1)
    labels = torch.multinomial(probs, 1, generator=generator).squeeze(1)
    return Batch(batch.x, labels, batch.task_ids, batch.task)


def _summed_cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits, y, reduction="sum")
