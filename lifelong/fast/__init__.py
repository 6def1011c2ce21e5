"""Accelerations: faster ways to compute what a reference path in ``strategies/`` computes.

Each module says what it accelerates and the capability that must hold; the code a reader
opens in ``strategies/`` is the reference (autograd, the paper's formulation) and runs
wherever no acceleration applies. Every acceleration is switched off by the protocol's
``fast=false`` (``--set fast=false``, :attr:`lifelong.StreamInfo.fast`), and a test checks
each one against its reference (``tests/test_closed_form.py``, ``tests/test_meta_learners.py``,
``tests/test_fast_factors.py``, ``tests/test_mer_kernel.py``, ``tests/test_penalty_kernel.py``).

- :mod:`lifelong.fast.closed_form`: the cross-entropy gradients of a model that declares
  them (:class:`lifelong.ClosedFormModel`, the one-head :class:`lifelong.MLP`), for the
  ``sgd`` learner, :func:`lifelong.supervised_step` and MER's single-sample steps, when the
  objective declares a :class:`ClosedForm`; and the ``sgd`` learner's plain step taken
  in place without forming the gradient (:func:`cross_entropy_descent`), from the forward
  pass MIR's scoring took already when the replay batch carries it (:class:`Activations`);
  and such a model's logits on weights other than its own (:func:`mlp_logits`: iCaRL's
  and BiC's old network).
- :mod:`lifelong.fast.sample_factors`: per-sample gradients of such a model kept as each
  layer's factors: GEM's per-task memory gradients, GSS's cosine scores, MIR's
  interference (keeping its forward passes for the step), ER-ACE's step and EWC's Fisher
  diagonal, with no per-sample gradient or autograd graph formed.
- :mod:`lifelong.fast.lookahead_inplace`: La-MAML's first-order look-ahead on any objective,
  the fast weights stepped in place and the meta-gradients kept as running sums, and its
  ``foreach`` update.
- :mod:`lifelong.fast.lookahead_mlp`: La-MAML's first-order look-ahead on such a model,
  with CPU kernels in :mod:`lifelong.fast.lookahead_kernel` (numba, when installed).
- :mod:`lifelong.fast.mer_kernel`: MER's whole update on such a model, compiled (numba,
  when installed).
- :mod:`lifelong.fast.penalty_kernel`: a quadratic penalty's slopes and value in one
  compiled pass (numba, when installed), for the closed form's penalties.
- :mod:`lifelong.fast.stacked_mlp`: ``--vectorize``'s step, the closed form batched over
  the seeds' stacked weights.
"""

from lifelong.fast.closed_form import (
    Activations,
    ClosedForm,
    cross_entropy_descent,
    cross_entropy_grads,
    has_closed_form,
    mlp_logits,
    sample_step,
)
from lifelong.fast.lookahead_inplace import in_place_look_ahead, in_place_update
from lifelong.fast.lookahead_mlp import mlp_look_ahead
from lifelong.fast.mer_kernel import compiled_mer_update
from lifelong.fast.sample_factors import (
    GemGradients,
    Interference,
    MlpCosines,
    ace_gradients,
    fisher_by_hand,
    gem_gradients,
    interference,
    sample_factors,
)

__all__ = [
    "Activations",
    "ClosedForm",
    "GemGradients",
    "Interference",
    "MlpCosines",
    "ace_gradients",
    "compiled_mer_update",
    "cross_entropy_descent",
    "cross_entropy_grads",
    "fisher_by_hand",
    "gem_gradients",
    "has_closed_form",
    "in_place_look_ahead",
    "in_place_update",
    "interference",
    "mlp_logits",
    "mlp_look_ahead",
    "sample_factors",
    "sample_step",
]
