"""Several seeds of one strategy trained as one batched model (``--vectorize``).

Each seed keeps everything a sequential run has: its own stream, initial weights (the
same ``torch.manual_seed(seed)`` draw), data order, memory draws and penalties, built by
the very same parts. Only the arithmetic is batched: the seeds' weights are stacked along
a leading dimension, and SGD, being elementwise, updates the stack as it would each seed.

- A one-head MLP whose objective has no penalty or only quadratic ones (naive, er, ewc,
  si, mas, online-ewc, with or without the sgd learner's proximal step) takes the
  hand-written gradients of the ``sgd`` learner, batched over seeds
  (:func:`lifelong.fast.stacked_mlp.stacked_mlp_cross_entropy_grads`): every seed's numbers equal
  its sequential run's exactly.
- Other objectives (lwf, der, several heads) go through ``vmap`` of ``functional_call``
  and one backward pass of the summed per-seed losses, which gives every seed its own
  gradient (the seeds share no weight) up to float rounding; over a long run such a
  difference can flip a ReLU and with it a prediction now and then.

Regularizers are the seeds' own objects, called per seed on views of the stack; their
quadratic penalties and proximal steps are stacked once per task. The replay memories
draw per seed from their own generators and copy rows in and out at once
(the memory's stacked form, :meth:`lifelong.Memory.stacked`).

Evaluation is where curves spend their time (every few batches, every task's test set,
every seed): all tasks' test sets of all seeds are held as one ``[S, N, D]`` float tensor,
an evaluation is one batched product per layer into reused buffers, and for bare
one-head MLPs it runs on a spare core beside training, on a copy of the weights
(:class:`Evaluations`): the same products as in place, so the same numbers.

The runner's loop (:func:`lifelong.execution.runner.train`) trains the stack as it trains one
seed: this module is only the stacked :class:`lifelong.execution.runner.Trainer`.

Supported (:func:`vectorizable`): strategies whose parts declare it, never named here: a
plain composite (:meth:`lifelong.Strategy.as_composite`; ``naive`` is the ``sgd`` one)
whose learner's step stacks (:meth:`lifelong.contracts.parts.Learner.stacked_sgd`: ``sgd``) and
whose memory, if any, offers a stacked form (:attr:`lifelong.Memory.stackable`:
``replay``), e.g. ``er``, ``ewc``, ``er+ewc``, ``si``, ``lwf``, ``der++``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from lifelong.contracts.parts import Regularizer, Replay, UnformedGradients
from lifelong.contracts.strategy import Batch, Strategy, StreamInfo
from lifelong.contracts.stream import Stream, TrainingData, training_data
from lifelong.data.inputs import to_floats
from lifelong.errors import UserError
from lifelong.evaluation.result import RunResult
from lifelong.execution.checkpoint import capture, restore
from lifelong.execution.runner import RunSpec, generator, train
from lifelong.fast.stacked_mlp import (
    stacked_mlp_cross_entropy_descent,
    stacked_mlp_cross_entropy_grads,
)
from lifelong.models.axis import build_model
from lifelong.models.mlp import ClosedFormModel
from lifelong.training.optim import SGD

if TYPE_CHECKING:
    from lifelong.composition.compose import Composite

__all__ = ["augments", "run_vectorized", "vectorizable"]


def vectorizable(spec: RunSpec, model: nn.Module | None = None) -> str:
    """Why ``spec`` (with ``model``, its network, when known) cannot run vectorized ("" when
    it can).

    The batched run does what :class:`Composite` does around its parts, so it takes a
    strategy that is a plain composite (:meth:`Strategy.as_composite`) whose learner's
    step stacks over seeds (:meth:`Learner.stacked_sgd`) and whose memory, if any, offers
    a stacked form (:meth:`Memory.stacked`); its regularizers may be any (they read the
    weights they are passed, as every part does). The model must declare
    :class:`lifelong.ClosedFormModel` (the ``mlp``: no buffers, a forward that ``vmap``
    batches over stacked weights), and the run be in float32 (``amp=none``)."""
    from lifelong.composition.compose import Composite

    if model is not None and not isinstance(model, ClosedFormModel):
        return (
            f"its model ({spec.protocol.model}) does not declare lifelong.ClosedFormModel "
            "(only such models, e.g. mlp, stack over seeds)"
        )
    if spec.protocol.amp != "none":
        return f"it runs with amp={spec.protocol.amp}; vectorized runs are float32"
    if spec.options.changed():
        return "stream options (boundaries, blurry, gradual, ...) run one seed at a time"
    strategy = spec.strategy.as_composite()
    if strategy is None:
        return f"'{spec.strategy.name}' is not a composite of parts"
    if type(strategy) is not Composite:
        return f"'{strategy.name}' is a subclass of Composite, whose own methods it would skip"
    if strategy.learner.stacked_sgd() is None:
        return f"its learner is '{strategy.learner.name}', whose step does not stack over seeds"
    if strategy.head is not None and not strategy.head.model_forward:
        return f"its head is '{strategy.head.name}', which is not the model's own forward"
    if strategy.init is not None and strategy.init.gives_rates():
        return f"its init '{strategy.init.name}' gives per-parameter rates, which do not stack"
    memory = strategy.memory
    if memory is not None and not memory.stackable:
        return f"its memory '{memory.name}', as configured, offers no stacked form"
    return ""


def augments(stream: Stream) -> str:
    """Why ``stream`` cannot run vectorized ("" when it can): its training batches are
    augmented at random, which the stacked batches do not do (yet)."""
    if stream.inputs is not None and stream.inputs.augments:
        return f"{stream.name} augments its training images (add --set augment=false)"
    return ""


def run_vectorized(
    specs: Sequence[RunSpec],
    streams: Sequence[Stream],
    device: torch.device,
    data_dir: str | None = None,
    *,
    progress: bool = False,
    checkpoint: Path | None = None,
) -> list[RunResult]:
    """Train ``specs`` (one strategy, several seeds) together; one result per seed.

    The runner's loop trains them (:func:`lifelong.execution.runner.train`): the same schedule,
    evaluation, divergence handling, checkpoints (``checkpoint``: the whole group's) and
    results as a run of one seed. With ``progress``, a bar on a terminal counts the batches.

    Raises:
        UserError: a strategy that cannot be vectorized, or specs that differ in more
            than the seed.
    """
    reasons = {vectorizable(spec) for spec in specs} | {augments(s) for s in streams}
    reasons -= {""}
    if reasons:
        raise UserError(f"--vectorize: {reasons.pop()}; run without --vectorize")
    if len({repr({**spec.config(), "seed": None}) for spec in specs}) > 1:
        raise UserError(
            "--vectorize: the runs differ in more than their seed; group them by "
            "configuration (lifelong run and sweep do)"
        )
    on_device = [s.to(device) for s in streams]
    seeds = ",".join(str(spec.seed) for spec in specs)
    return train(
        specs,
        on_device,
        lambda: _Seeds(specs, on_device, device, data_dir),
        progress=progress,
        checkpoint=checkpoint,
        label=f"{specs[0].strategy.name} seeds {seeds} vectorized",
    )


class _Seeds:
    """The per-seed strategies and the stacked weights they train."""

    def __init__(
        self,
        specs: Sequence[RunSpec],
        streams: list[Stream],
        device: torch.device,
        data_dir: str | None,
    ):
        self.streams, self.n_tasks = streams, streams[0].n_tasks
        self.device = f"{device} (vectorized x{len(specs)})"
        self.batch_size = specs[0].protocol.batch_size
        sizes = {tuple((len(t.y_train), len(t.y_test)) for t in s.tasks) for s in streams}
        if len(sizes) > 1:
            raise UserError(
                "--vectorize: the seeds' streams have tasks of different sizes, so their "
                "batches cannot be stacked; run without --vectorize"
            )
        self.strategies: list[Composite] = []
        models = []
        for spec, stream in zip(specs, streams, strict=True):
            torch.manual_seed(spec.seed)
            model = build_model(spec.protocol, stream, device)
            why = vectorizable(spec, model)
            if why:
                raise UserError(f"--vectorize: {why}; run without --vectorize")
            strategy = dataclasses.replace(_as_composite(spec.strategy))
            protocol = spec.protocol
            info = StreamInfo.of(
                stream, spec.scenario, spec.seed, data_dir, protocol.fast, protocol.batch_size
            )
            strategy.setup(model, info, generator(device, spec.seed, 1))
            if len(strategy.params) != len(list(model.parameters())):
                raise UserError(
                    f"--vectorize: '{strategy.name}' trains only part of the network "
                    "(its init freezes the rest); run without --vectorize"
                )
            self.strategies.append(strategy)
            models.append(model)
        self.orders = [generator(device, spec.seed, 2) for spec in specs]
        self.tests = StackedTests(streams, specs[0].protocol.eval_batch_size)
        self.scratch = Scratch()
        self.model = models[0]
        self.stack = {
            name: torch.stack(
                [dict(m.named_parameters())[name].detach() for m in models]
            ).requires_grad_()
            for name, _ in models[0].named_parameters()
        }
        self.stack_list = list(self.stack.values())
        learner = self.strategies[0].learner
        lr, momentum = learner.stacked_sgd() or (0.0, 0.0)  # not None: vectorizable
        # As the sgd learner: bare one-head MLPs (and quadratic penalties) by hand.
        self.closed_form = all(c.plain_mlp(quadratic_penalties=True) for c in self.strategies)
        self.optimizer = SGD(self.stack.values(), lr=lr, momentum=momentum)
        # As the sgd learner's plain step: no gradient formed, the same arithmetic per seed.
        self.descends = momentum == 0 and all(c.descends() for c in self.strategies)
        self._stack_penalties()
        memories: list[Any] = [c.memory for c in self.strategies]
        first = memories[0]
        self.reservoirs = type(first).stacked(memories) if first is not None else None
        # Each seed's own Batch is built only for the parts that read one (penalties).
        self.per_seed_batches = not self.closed_form
        self.forward = vmap(lambda p, x, t: functional_call(self.model, p, (x, t)))
        self.evaluations = Evaluations(self.tests, background=spare_core(device))

    def views(self, s: int) -> dict[str, Tensor]:
        return {name: p[s] for name, p in self.stack.items()}

    def batches(self, task_id: int) -> Iterator[Batch]:
        data = [training_data(stream.tasks[task_id]) for stream in self.streams]
        return _stacked_batches(data, self.batch_size, self.orders)

    def online(self) -> list[dict[str, Any]]:
        """Nothing recorded: stream options run one seed at a time (:func:`vectorizable`)."""
        return [{} for _ in self.streams]

    def before_task(self, task_id: int) -> None:
        """Every seed's regularizers' ``before_task``, as :meth:`Composite.before_task`,
        then their penalties stacked for the task (a penalty changes only at a task's
        end; stacked here, a consolidation left for the next task, as EWC's Fisher, is
        never made after the stream's last one)."""
        for s, c in enumerate(self.strategies):
            data = training_data(self.streams[s].tasks[task_id])
            for reg in c.regularizers:
                reg.before_task(self.views(s), data)
        self._stack_penalties()

    def step(self, batch: Batch) -> Tensor:
        """One SGD step of every seed, with its own replay and penalties; each seed's loss.

        ``batch`` holds every seed's incoming batch stacked (:func:`_stacked_batches`)."""
        glance = batch.glance
        batches = _per_seed(batch) if self.per_seed_batches else []
        x, y, task_ids, replays = self._with_replay(batch)
        kept = None  # the logits stored with the batch: before the update, as in train_step
        if glance == 0 and self.reservoirs is not None and self.strategies[0].keep_logits:
            with torch.no_grad():
                kept = self.forward(self.stack, batch.x, batch.task_ids)
        grads: list[Tensor] | None = None
        if self.descends:  # bare one-head MLPs, plain SGD: each seed's step by hand, in place
            lr = self.optimizer.lr
            penalty, pulls = self._quadratic_slopes()  # at the weights before the step
            loss = stacked_mlp_cross_entropy_descent(self.stack_list, x, y, lr) + penalty
            with torch.no_grad():  # as ClosedForm.descend: the penalties' steps after
                for i, slope, rate in pulls:
                    self.stack_list[i].add_(slope, alpha=-lr * rate)
        elif self.closed_form:  # bare one-head MLPs: the gradients by hand, batched over seeds
            loss, grads = stacked_mlp_cross_entropy_grads(list(self.stack.values()), x, y)
            penalty, pulls = self._quadratic_slopes()
            loss = loss + penalty
            for i, slope, rate in pulls:
                grads[i].add_(slope, alpha=rate)
        else:
            logits = self.forward(self.stack, x, task_ids)
            ce = (
                F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
                .view(len(self.strategies), -1)
                .mean(1)
            )
            penalties = [
                c.penalties(self.views(s), batches[s], replays[s])
                for s, c in enumerate(self.strategies)
            ]
            loss = ce + torch.stack(penalties)
            grads = list(torch.autograd.grad(loss.sum(), list(self.stack.values())))
            loss = loss.detach()
        if grads is not None:
            self.optimizer.descend(grads)
        with torch.no_grad():
            for name, pull, norm in self.proximal:
                self.stack[name].add_(pull).div_(norm)
        if glance == 0 and self.reservoirs is not None:  # a repeated glance: no new sample
            self.reservoirs.add(batch, kept)
        named = dict(zip(self.stack, grads, strict=True)) if grads is not None else None
        for s, c in enumerate(self.strategies):
            for reg in c.regularizers:
                if type(reg).observe is not Regularizer.observe:
                    own = (
                        UnformedGradients()
                        if named is None
                        else {n: g[s] for n, g in named.items()}
                    )
                    reg.observe(self.views(s), own)
        return loss

    def _with_replay(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor, list[Replay | None]]:
        """The step's inputs, targets and task ids ``[S, B + R, ...]`` (incoming rows, then
        replayed ones) and each seed's :class:`Replay` when the penalties read it (None:
        no memory or still empty)."""
        x, y, task_ids = batch.x, batch.y, batch.task_ids
        drawn = self.reservoirs.sample() if self.reservoirs is not None else None
        if drawn is None:
            return x, y, task_ids, [None] * len(self.strategies)
        stored, logits = drawn  # every seed's own draw, the rows gathered at once
        replays: list[Replay | None] = [
            Replay(Batch(stored.x[s], stored.y[s], stored.task_ids[s], stored.task), logits[s])
            for s in range(len(self.strategies) if self.per_seed_batches else 0)
        ]
        x, y = torch.cat([x, stored.x], 1), torch.cat([y, stored.y], 1)
        return x, y, torch.cat([task_ids, stored.task_ids], 1), replays

    def _quadratic_slopes(self) -> tuple[Tensor | float, list[tuple[int, Tensor, float]]]:
        """The seeds' ``sum(lam * penalty)`` over the objective's quadratic penalties
        (``[S]``, or 0 without any) and each penalty's share of the gradient on each
        stacked weight, ``(index, slopes w (theta - c), 2 scale lam)``, as
        :class:`lifelong.fast.ClosedForm` takes them."""
        total: Tensor | float = 0.0
        pulls = []
        for lam, scale, offset, terms in self.quadratics:
            value = offset
            for i, weights, center in terms:
                diff = self.stack_list[i].detach() - center
                slope = diff * weights
                value = value + scale * (slope * diff).flatten(1).sum(1)
                pulls.append((i, slope, 2 * scale * lam))
            total = total + lam * value
        return total, pulls

    def after_task(self, task_id: int, alive: list[bool]) -> None:
        """Consolidate every seed still training (a diverged run stops before this)."""
        for s, c in enumerate(self.strategies):
            if not alive[s]:
                continue
            data = training_data(self.streams[s].tasks[task_id])
            if c.memory is not None:  # as Composite.after_task: the memory, then penalties
                c.memory.after_task(data)
            for reg in c.regularizers:
                reg.after_task(self.views(s), data)

    def _stack_penalties(self) -> None:
        self.proximal = self._proximal_terms()
        self.quadratics = self._quadratic_terms() if self.closed_form else []

    def state(self) -> dict[str, Any]:
        """The stacked weights and optimiser, and every seed's parts (its memory's rows
        are views of the stacked memory, restored in place) and generators."""
        return {
            "torch_rng": torch.get_rng_state(),
            "stack": capture(self.stack),
            "optimizer": capture(self.optimizer),
            "strategies": capture(self.strategies),
            "orders": [order.get_state() for order in self.orders],
        }

    def load_state(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch_rng"])
        restore(self.stack, state["stack"])
        restore(self.optimizer, state["optimizer"])
        restore(self.strategies, state["strategies"])
        for order, saved in zip(self.orders, state["orders"], strict=True):
            order.set_state(saved)
        self._stack_penalties()

    def _quadratic_terms(
        self,
    ) -> list[tuple[float, float, Tensor, list[tuple[int, Tensor, Tensor]]]]:
        """The quadratic penalties in the seeds' objectives, stacked: for each one
        ``(lam, scale, offsets [S], [(parameter index, weights, center), ...])``.

        A seed whose penalty is not consolidated yet gets zero weights (no value, no
        gradient). Penalties change only at the end of a task, so this is rebuilt when the
        next one begins.
        """
        terms = []
        names = list(self.stack)
        for i in range(len(self.strategies[0].explicit)):
            regs = [c.explicit[i] for c in self.strategies]
            quadratics = [reg.quadratic() for reg in regs]
            if all(q is None for q in quadratics):
                continue
            known = next(q for q in quadratics if q is not None)
            device = self.stack_list[0].device
            offsets = torch.stack(
                [
                    torch.as_tensor(0.0 if q is None else q.offset, dtype=torch.float32).to(device)
                    for q in quadratics
                ]
            )
            per_parameter = []
            for name in known.weights:
                stacked = self.stack[name]
                weights = torch.stack(
                    [
                        torch.zeros_like(stacked[0]) if q is None else q.weights[name]
                        for q in quadratics
                    ]
                )
                centers = torch.stack(
                    [
                        torch.zeros_like(stacked[0]) if q is None else q.center[name]
                        for q in quadratics
                    ]
                )
                per_parameter.append((names.index(name), weights, centers))
            terms.append((regs[0].lam, known.scale, offsets, per_parameter))
        return terms

    def _proximal_terms(self) -> list[tuple[str, Tensor, Tensor]]:
        """The seeds' proximal steps on their quadratic penalties, stacked.

        Each entry ``(name, pull, norm)`` is one penalty's step on one parameter,
        ``theta <- (theta + pull) / norm`` (:meth:`lifelong.Quadratic.proximal_terms`),
        in the order the composites apply them; a seed whose penalty is not consolidated
        yet gets ``pull = 0, norm = 1``, which leaves its weights bit for bit. Penalties
        change only at the end of a task, so this is rebuilt when the next one begins, not at
        every step.
        """
        terms = []
        for i in range(len(self.strategies[0].proximal)):
            rates = [c.learner.proximal_rate() for c in self.strategies]
            regs = [c.proximal[i] for c in self.strategies]
            quadratics = [reg.quadratic() for reg in regs]
            if all(q is None for q in quadratics):
                continue
            for name, stacked in self.stack.items():
                pulls, norms = [], []
                for s, (q, reg, rate) in enumerate(zip(quadratics, regs, rates, strict=True)):
                    if q is None or rate is None or name not in q.weights:
                        pulls.append(torch.zeros_like(stacked[s]))
                        norms.append(torch.ones_like(stacked[s]))
                        continue
                    own = rate[name] if isinstance(rate, dict) else rate
                    pull, norm = q.proximal_terms(name, own * reg.lam)
                    pulls.append(pull)
                    norms.append(norm)
                terms.append((name, torch.stack(pulls), torch.stack(norms)))
        return terms

    @torch.inference_mode()
    def evaluate(self) -> Tensor:
        """Accuracy ``[S, T]`` of every seed on every task of its own stream.

        All tasks' test sets go through together (:class:`StackedTests`), in chunks of the
        protocol's evaluation batch per seed, one batched product per layer. Bare one-head
        MLPs are evaluated by :class:`Evaluations`, on a spare core when there is one (the
        numbers are ready after :meth:`settle`)."""
        if self.closed_form:  # bare one-head MLPs: the batched forward itself, no vmap
            return self.evaluations.submit(self.stack_list)
        return self.tests.accuracy(lambda x, ids: self.forward(self.stack, x, ids), self.scratch)

    def settle(self) -> None:
        """Wait for the evaluation still running on the spare core, if any."""
        self.evaluations.settle()


FLOAT_TESTS_BYTES = 1 << 30
"""Test inputs are kept as float up to this size (else turned to float chunk by chunk)."""


class Scratch:
    """Buffers kept from one evaluation to the next, by name (one set per thread that
    evaluates): an evaluation allocates nothing once the first has run."""

    def __init__(self) -> None:
        self.held: dict[str, Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], like: Tensor, dtype: torch.dtype) -> Tensor:
        """A ``shape`` tensor of ``dtype`` on ``like``'s device (contents undefined)."""
        size = math.prod(shape)
        data = self.held.get(name)
        if data is None or data.numel() < size or data.dtype != dtype or data.device != like.device:
            data = self.held[name] = torch.empty(size, dtype=dtype, device=like.device)
        return data[:size].view(shape)


class StackedTests:
    """Every seed's test sets of all tasks, concatenated once: ``x [S, N, D]``, ``y [S, N]``.

    The inputs are turned from uint8 to float once and kept when they fit in
    :data:`FLOAT_TESTS_BYTES`; otherwise each chunk is turned in a reused buffer. Each
    evaluation is then one pass over the rows, whichever task they belong to."""

    def __init__(self, streams: Sequence[Stream], chunk: int) -> None:
        tasks = streams[0].tasks
        device = tasks[0].y_test.device
        # flat rows ``[S, N, D]`` whatever the tasks' layout (images ``[N, C, H, W]``)
        raw = torch.stack([torch.cat([t.x_test.flatten(1) for t in s.tasks]) for s in streams])
        self.y = torch.stack([torch.cat([t.y_test for t in s.tasks]) for s in streams])
        self.task_ids = torch.cat(
            [torch.full((len(t.y_test),), t.id, dtype=torch.long, device=device) for t in tasks]
        )
        self.sizes = torch.tensor([len(t.y_test) for t in tasks], device=device).clamp(min=1)
        self.floats = raw.numel() * 4 <= FLOAT_TESTS_BYTES
        self.inputs = streams[0].inputs
        self.x = to_floats(raw, self.inputs) if self.floats else raw
        self.chunk = chunk

    def accuracy(
        self,
        logits: Callable[[Tensor, Tensor], Tensor],
        scratch: Scratch,
        out: Tensor | None = None,
    ) -> Tensor:
        """Accuracy ``[S, T]`` (in ``out`` when given) of ``logits(x [S, n, D], task_ids
        [S, n]) -> [S, n, C]``; the hits and counts go through ``scratch``."""
        stacks, n = self.y.shape
        hits = scratch.get("hits", (stacks, n), self.y, torch.long)
        for start in range(0, n, self.chunk):
            rows = slice(start, start + self.chunk)
            x = self.x[:, rows] if self.floats else self._floats(self.x[:, rows], scratch)
            scores = logits(x, self.task_ids[rows].expand(stacks, -1))
            guess = scratch.get("guess", tuple(scores.shape[:2]), self.y, torch.long)
            torch.eq(torch.argmax(scores, -1, out=guess), self.y[:, rows], out=hits[:, rows])
        correct = scratch.get("correct", (stacks, len(self.sizes)), self.y, torch.long)
        correct.zero_().index_add_(1, self.task_ids, hits)
        if out is None:
            out = torch.empty(correct.shape, dtype=torch.float64, device=correct.device)
        return out.copy_(correct).div_(self.sizes)  # in float64, as correct.double() / sizes

    def _floats(self, raw: Tensor, scratch: Scratch) -> Tensor:
        """The stream's test-time floats of ``raw`` (as :func:`lifelong.to_floats`), in a
        reused buffer."""
        x = scratch.get("inputs", tuple(raw.shape), raw, torch.float32).copy_(raw)
        return x.div_(255) if self.inputs is None else self.inputs.normalise_(x)


def mlp_logits(weights: Sequence[Tensor], x: Tensor, scratch: Scratch) -> Tensor:
    """The logits of ``S`` one-head MLPs at once, ``x [S, n, D]`` -> ``[S, n, C]``, into
    ``scratch``'s buffers: one batched product per layer (``weights`` stacked over the
    first dimension, ``W_l`` ``[S, out, in]``)."""
    out = x
    for layer in range(len(weights) // 2):
        w, b = weights[2 * layer].detach(), weights[2 * layer + 1].detach()
        if layer:
            out = out.relu_()
        shape = (len(w), x.shape[1], w.shape[1])
        into = scratch.get(f"layer {layer}", shape, x, x.dtype)
        out = torch.baddbmm(b[:, None, :], out, w.transpose(1, 2), out=into)
    return out


class Evaluations:
    """The evaluations of ``S`` stacked one-head MLPs, on a spare core while the seeds
    train on (``background``; else where they are asked for).

    An evaluation in the background reads a copy of the weights taken when it was asked
    for, so its numbers are those it would have had in place, and writes them into the
    tensor :meth:`submit` returned. One runs in the background at a time; one asked for
    while it runs is done at once in the calling thread, so that both cores work when
    evaluation is most of the run (curves over many tasks). Reading a result before
    :meth:`settle` reads an unfinished tensor.
    """

    def __init__(self, tests: StackedTests, *, background: bool) -> None:
        self.tests, self.background = tests, background
        self.here, self.there = Scratch(), Scratch()  # one set of buffers per thread
        self.pool: ThreadPoolExecutor | None = None
        self.running: Future[Tensor] | None = None
        self.copies: list[Tensor] = []

    def submit(self, weights: Sequence[Tensor]) -> Tensor:
        """Accuracy ``[S, T]`` of the stacked MLP ``weights`` as they are now."""
        stacks, tasks = len(self.tests.y), len(self.tests.sizes)
        out = torch.empty(stacks, tasks, dtype=torch.float64, device=self.tests.y.device)
        if not self.background or (self.running is not None and not self.running.done()):
            return self._evaluate(weights, self.here, out)
        if self.running is not None:
            self.running.result()  # its error, if it failed
        if not self.copies:
            self.copies = [torch.empty_like(w, requires_grad=False) for w in weights]
        for copy, w in zip(self.copies, weights, strict=True):
            copy.copy_(w.detach())
        if self.pool is None:
            self.pool = ThreadPoolExecutor(1, thread_name_prefix="lifelong-evaluation")
        self.running = self.pool.submit(self._evaluate, self.copies, self.there, out)
        return out

    def settle(self) -> None:
        """Wait for the evaluation running in the background (raising its error) and
        stop its thread."""
        running, pool, self.running, self.pool = self.running, self.pool, None, None
        try:
            if running is not None:
                running.result()
        finally:
            if pool is not None:
                pool.shutdown()

    def _evaluate(self, weights: Sequence[Tensor], scratch: Scratch, out: Tensor) -> Tensor:
        with torch.inference_mode():  # per thread
            forward = lambda x, _ids: mlp_logits(weights, x, scratch)  # noqa: E731
            return self.tests.accuracy(forward, scratch, out)


def spare_core(device: torch.device) -> bool:
    """Whether evaluations can run beside training on a core of their own: on a CPU with
    more usable cores than torch's threads (a GPU queues its work asynchronously anyway)."""
    if device.type != "cpu":
        return False
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (cores or 1) > torch.get_num_threads()


def _per_seed(stacked: Batch) -> list[Batch]:
    """Seed ``s``'s :class:`Batch` of a stacked one (views of row ``s``)."""
    return [
        Batch(stacked.x[s], stacked.y[s], stacked.task_ids[s], stacked.task, stacked.glance)
        for s in range(len(stacked.y))
    ]


def _stacked_batches(
    data: list[TrainingData],
    batch_size: int,
    generators: list[torch.Generator],
    rows_at_once: int = 4096,
) -> Iterator[Batch]:
    """Every seed's shuffled batches, drawn as ``runner._batches`` draws them, stacked:
    ``x [S, B, D]``, ``y`` and ``task_ids`` ``[S, B]``.

    The seeds' rows are gathered ``rows_at_once`` per seed at a time (a whole small task
    at once, as uint8), so that a step only slices them and turns its ``[S, B, D]``
    inputs to float in one operation."""
    orders = [
        torch.randperm(len(d.y), generator=g, device=d.y.device)
        for d, g in zip(data, generators, strict=True)
    ]
    n = len(orders[0])  # equal sizes: checked by _Seeds
    span = max(rows_at_once // batch_size, 1) * batch_size
    for first in range(0, n, span):
        picks = [o[first : first + span] for o in orders]
        x = torch.stack(
            [d.x.index_select(0, i).flatten(1) for d, i in zip(data, picks, strict=True)]
        )
        y = torch.stack([d.y.index_select(0, i) for d, i in zip(data, picks, strict=True)])
        task_ids = torch.stack(
            [d.task_ids.index_select(0, i) for d, i in zip(data, picks, strict=True)]
        )
        for start in range(0, len(picks[0]), batch_size):
            rows = slice(start, start + batch_size)
            floats = to_floats(x[:, rows], data[0].inputs)  # augmenting streams are refused
            yield Batch(floats, y[:, rows], task_ids[:, rows], data[0].id)


def _as_composite(strategy: Strategy) -> Composite:
    composite = strategy.as_composite()
    assert composite is not None  # checked by vectorizable
    return composite
