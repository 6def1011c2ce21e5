"""The ``la-maml``, ``sync-la-maml`` and ``c-maml`` learners: online look-ahead meta-learning.

Each glance reshuffles the incoming batch, looks ahead with one inner SGD step per sample
(rates ``relu(alpha) / B`` for a batch of ``B``, the default ``look_ahead=mean``, or the
paper's ``relu(alpha)`` with ``look_ahead=sum``),
takes the meta-loss on the memory batch plus the incoming batch at
every look-ahead step, and updates (``lookahead.py`` writes the step out):

| learner | rates alpha | weights |
|---|---|---|
| ``la-maml`` | learned (``opt_lr``) | ``theta -= relu(alpha) * clip(dL/dtheta)`` |
| ``sync-la-maml`` | learned (``opt_lr``) | ``theta -= opt_wt * clip(dL/dtheta)`` |
| ``c-maml`` | fixed at ``alpha_init`` | ``theta -= opt_wt * clip(dL/dtheta)`` |

They need a memory (``la-maml`` alone composes with ``replay``) and combine with any
regularizer. A quadratic penalty (``la-maml+ewc``) is applied after each update as an
exact proximal step at the rate each weight moved at (``relu(alpha)``, or ``opt_wt``), as
under ``sgd``; as a term of the meta-loss it diverged at its defaults. Other penalties
(``lwf``, ``der``) enter the objective, so the inner steps and the meta-loss see them.
``lookahead.py`` is the reference (``torch.func``). At first order the look-ahead runs
in place (``lifelong/fast/lookahead_inplace.py``), and on a one-head ``lifelong.MLP`` with
no penalty in closed form (``lifelong/fast/lookahead_mlp.py``, about twice as fast), both
equal to the reference up to float rounding; ``--set fast=false`` runs the reference.

References: Gupta, Yadav & Paull 2020, "La-MAML: Look-ahead meta learning for continual
learning" (NeurIPS); official code montrealrobotics/La-MAML (``model/lamaml.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, final

import torch
from torch import Tensor

from lifelong import Batch, Learner, Objective, Replay, Step, StreamInfo, param

from .lookahead import glance_order, la_maml_update

__all__ = ["CMaml", "LaMaml", "SyncLaMaml"]

Params = dict[str, Tensor]


LOOK_AHEADS = ("mean", "sum")


def _rates(params: Params, value: float) -> Params:
    return {n: torch.full_like(p.detach(), value) for n, p in params.items()}


@dataclass
class _LookAheadLearner(Learner):
    """What the three learners share: the rates alpha, a reshuffle per glance, the update.

    Their shared fields (the clip, the order, the look-ahead's scale) are declared here;
    each learner declares its rates and the official code's two switches: ``learns_rates``
    (``--learn_lr``: the rates alpha learn at its ``opt_lr``) and ``sync_update``
    (``--sync_update``: the weights move by SGD at its ``opt_wt``, else by ``relu(alpha)``).
    """

    needs_memory: ClassVar[bool] = True
    # The official MNIST runs replay 10 samples with every incoming batch (replay_batch_size).
    partner_defaults: ClassVar[Mapping[str, Mapping[str, Any]]] = {"replay": {"batch": 10}}
    learns_rates: ClassVar[bool]
    sync_update: ClassVar[bool]
    if TYPE_CHECKING:  # declared, with their defaults, by each learner

        @property
        def opt_lr(self) -> float: ...  # the learners with learns_rates

        @property
        def opt_wt(self) -> float: ...  # the learners with sync_update

        alpha_init: float

    clip: float = param(2.0, "joint-norm clip of each meta-gradient (0: none)", ge=0)
    second_order: bool = param(False, "differentiate through the inner-loop gradients")
    look_ahead: str = param(
        "mean",
        "inner step per sample: relu(alpha)/B (mean) or relu(alpha) (sum, the paper's)",
        choices=LOOK_AHEADS,
    )

    alpha: Params = field(init=False, repr=False, compare=False)
    generator: torch.Generator = field(init=False, repr=False, compare=False)
    fast: bool = field(init=False, repr=False, compare=False, default=True)  # the run's

    takes_rates: ClassVar[bool] = True

    def setup(self, params: Params, info: StreamInfo, generator: torch.Generator) -> None:
        self.alpha, self.generator = _rates(params, self.alpha_init), generator
        self.fast = info.fast

    def use_rates(self, rates: Params) -> None:
        """Start the rates alpha at an init's learned ones (``meta-sgd``) instead of
        ``alpha_init``."""
        self.alpha = {  # a weight without a learned rate (a head's own) keeps alpha_init
            n: rates.get(n, a).detach().clone() for n, a in self.alpha.items()
        }

    def proximal_rate(self) -> float | Params:
        """The rate each weight just moved at: ``opt_wt``, or La-MAML's ``relu(alpha)``."""
        if self.sync_update:
            return self.opt_wt
        return {n: a.clamp_min(0.0) for n, a in self.alpha.items()}

    def step(
        self, params: Params, batch: Batch, replay: Replay | None, objective: Objective
    ) -> Step:
        batch = glance_order(batch, self.generator)
        return la_maml_update(
            params,
            self.alpha,
            batch,
            replay,
            objective,
            opt_lr=self.opt_lr if self.learns_rates else None,
            opt_wt=self.opt_wt if self.sync_update else None,
            clip=self.clip,
            second_order=self.second_order,
            look_ahead_scale=self.look_ahead,
            fast=self.fast,
        )


@final
@dataclass
class LaMaml(_LookAheadLearner):
    """La-MAML: learned per-parameter rates; weights moved by ``relu(alpha) * meta-grad``.

    Every glance reshuffles the incoming batch (the run's generator), takes the look-ahead
    of :func:`look_ahead` and updates as :func:`la_maml_update` says. First order by
    default, as the official MNIST runs. Defaults: the official permutations row.

    Deliberate differences from the official MNIST code (``model/lamaml.py``), shared by
    ``sync-la-maml`` and ``c-maml``:

    - The memory batch is drawn without replacement by the memory part; the official
      ``getBatch`` draws with replacement.
    - Its ``--use_old_task_memory`` flag does nothing on MNIST (the "old-task" memory is an
      alias of the live buffer); there is no such switch here.
    - Its inner loop computes a clamp of the inner gradients and discards the result;
      nothing is clamped here: the same behaviour, stated.
    - The inner steps and the meta-loss minimise the composite's objective, so a
      non-quadratic regularizer (``la-maml+lwf``) enters both, and a quadratic one
      (``la-maml+ewc``) is a proximal step after the update; the official code has none.
    - The network is lifelong's MLP (PyTorch's default Linear init); the official Learner
      draws Kaiming-normal weights and zero biases.
    - ``Step.loss`` is the meta-loss and ``Step.grads`` its gradient w.r.t. the weights.
    - The inner steps take ``relu(alpha) / B`` each (``look_ahead=mean``), so the
      look-ahead moves about as far as one SGD step at ``alpha`` on the batch, whatever
      its size ``B``; the official code's ``relu(alpha)`` per sample is ``look_ahead=sum``.
      Its look-ahead grows with ``B``, and in class-incremental streams (one head over
      every class, which the paper does not run) the meta-gradient, taken where the inner
      steps on the new classes have already lifted them, leaves the weights themselves
      under-predicting those classes, and the learned rates of their output rows fall
      below zero, where ``relu`` stops them for good: Split-MNIST class-IL at the default
      protocol (batch 32, one glance) learns no task after the first (LA 0.199), with
      ``mean`` every task (reports/meta-learners.md). In domain-IL too ``sum`` learns the
      later tasks only partly on short streams (small Split-MNIST domain-IL,
      sync-la-maml: 0.995, 0.78, 0.67, 0.64, 0.66; ``mean``: 0.905-0.995) and Permuted-MNIST
      5 x 500, batch 10, 3 glances gave ACC 0.783 (``sum``) against 0.831 (``mean``), so
      ``mean`` is the default everywhere; the paper-protocol suites pin ``sum``.

    References: Gupta, Yadav & Paull 2020, "La-MAML" (NeurIPS), algorithm 1.
    """

    name: ClassVar[str] = "la-maml"
    shortcuts: ClassVar[Mapping[str, tuple[str, ...]]] = {"la-maml": ("la-maml", "replay")}
    learns_rates: ClassVar[bool] = True
    sync_update: ClassVar[bool] = False
    opt_lr: float = param(0.3, "learning rate of the learned rates alpha", gt=0)
    alpha_init: float = param(0.15, "initial value of every learned rate")


@final
@dataclass
class SyncLaMaml(_LookAheadLearner):
    """Sync-La-MAML: learned inner-loop rates; weights updated by SGD at ``opt_wt``.

    The official ``--learn_lr --sync_update`` switches; defaults: its permutations row,
    except ``alpha_init`` 0.1 (the row's 0.15 is in the paper-protocol suites): the
    learned rates start no higher than the weights' own step ``opt_wt``. Started above
    it, the look-ahead runs further than the update will, so the meta-gradient is taken
    where the inner steps have already lifted the new classes and the weights keep
    under-predicting them: on small class-incremental Split-MNIST (300 samples a task,
    batch 10) the last task ended at 0.28 and 0.27 (seeds 1, 2; floor 0.37), at 0.1 at
    0.59-0.63; the domain-incremental streams end equal or higher (Permuted-MNIST 3 x
    1,000, ACC 0.783-0.837 against 0.743-0.833). The rates it learns barely move from
    their start on these streams (0.14-0.21 after five tasks from 0.15).
    Deliberate differences from the official code: those listed for :class:`LaMaml`.

    References: Gupta, Yadav & Paull 2020, "La-MAML" (NeurIPS), section 5 ("Sync").
    """

    name: ClassVar[str] = "sync-la-maml"
    shortcuts: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "sync-la-maml": ("sync-la-maml", "replay")
    }
    learns_rates: ClassVar[bool] = True
    sync_update: ClassVar[bool] = True
    opt_lr: float = param(0.1, "learning rate of the learned rates alpha", gt=0)
    opt_wt: float = param(0.1, "SGD learning rate of the weights", gt=0)
    alpha_init: float = param(0.1, "initial value of every learned rate (paper suites: 0.15)")


@final
@dataclass
class CMaml(_LookAheadLearner):
    """C-MAML: fixed inner-loop rates ``alpha_init``; weights updated by SGD at ``opt_wt``.

    The official ``--sync_update`` switch alone; defaults: its permutations row.
    Deliberate differences from the official code: those listed for :class:`LaMaml`, and
    the gradient w.r.t. the fixed rates, which the official code computes and never uses,
    is not computed.

    References: Gupta, Yadav & Paull 2020, "La-MAML" (NeurIPS), section 4 (C-MAML).
    """

    name: ClassVar[str] = "c-maml"
    shortcuts: ClassVar[Mapping[str, tuple[str, ...]]] = {"c-maml": ("c-maml", "replay")}
    learns_rates: ClassVar[bool] = False
    sync_update: ClassVar[bool] = True
    opt_wt: float = param(0.1, "SGD learning rate of the weights", gt=0)
    alpha_init: float = param(0.03, "the fixed inner-loop learning rate")
