"""The head axis of a strategy: how features become a prediction (DESIGN.md, "The axes").

A :class:`Head` part decides how a :class:`lifelong.Composite` classifies. ``linear``
(the default) is the model's own output layer; ``cosine`` replaces that layer by one of
normalised weights and features with a learned scale (LUCIR), which every other part then
trains as the model's head; ``ncm`` leaves training alone and predicts the class whose
mean feature (its prototype) is nearest (ProtoNets, iCaRL).

A head that reads features uses the model's ``body`` (``body(x) -> [B, F]``) and
``feature_dim`` (F), the model contract of README's "Models" section; :meth:`Head.check`
refuses a model that lacks them before any run.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from lifelong.contracts.composable import Composable
from lifelong.contracts.strategy import Batch, StreamInfo
from lifelong.errors import UserError

__all__ = ["Head", "class_means", "feature_dim", "features"]


@dataclass
class Head(Composable, abc.ABC):
    """How the model's features become a prediction.

    Attributes:
        needs_features: the head reads the model's ``body`` features (so the model must
            expose ``body`` and ``feature_dim``).
        model_forward: the model's own forward gives the head's logits in training and
            prediction (``linear``), so accelerations that rely on the model's forward
            (closed-form gradients, ``--vectorize``) still apply.
        reads_stored: prediction reads the memory's stored samples (:meth:`lifelong.Memory.stored`).
    """

    needs_features: ClassVar[bool] = True
    model_forward: ClassVar[bool] = False
    reads_stored: ClassVar[bool] = False

    def few_shot_scores(
        self, model: nn.Module, params: dict[str, Tensor], support: Batch, x: Tensor
    ) -> Tensor | None:
        """Scores ``[B, n_outputs]`` for ``x`` from a support set alone, at the weights
        ``params`` (a copy of the model's, by name): how this head classifies a task it
        has seen only ``support`` of (few-shot adaptation, lifelong.evaluation.anytime).
        None (the default): the model's own output at ``params`` is the prediction."""
        return None

    def check(self, model: nn.Module, info: StreamInfo) -> None:
        """Raise :class:`lifelong.UserError` when the model cannot serve this head (no
        ``body``/``feature_dim`` for a head that reads features); called before any run."""
        if self.needs_features:
            feature_dim(model, f"the '{self.name}' head")

    def prepare(self, model: nn.Module, info: StreamInfo, generator: torch.Generator) -> set[str]:
        """Change the model's output layer in place, if this head has its own; return the
        names of parameters it adds (they learn, at the learner's own rate: an init's learned
        per-weight rates do not apply to them). Called after the init, before the other
        parts are set up. The default changes nothing."""
        return set()

    def observe(self, model: nn.Module, batch: Batch) -> None:
        """Called after every update with the incoming batch (running class means)."""

    @abc.abstractmethod
    def predict(
        self, model: nn.Module, x: Tensor, task_ids: Tensor, stored: Batch | None
    ) -> Tensor:
        """Scores ``[B, n_outputs]`` (argmax is the prediction) for inputs ``x``.

        Args:
            stored: every sample the composite's memory holds (None: no memory, or one
                that does not expose its samples).
        """


def feature_dim(model: nn.Module, what: str) -> int:
    """The model's ``feature_dim``, or a one-line :class:`UserError` naming ``what`` needs it."""
    body, dim = getattr(model, "body", None), getattr(model, "feature_dim", None)
    if not isinstance(body, nn.Module):
        raise UserError(
            f"{what} needs the model's features, and {type(model).__name__} has no 'body' "
            "module (body(x) -> [B, F]); use a model that follows README's model contract"
        )
    if isinstance(dim, int):
        return dim
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):  # models built before the contract named feature_dim
        return head.in_features
    raise UserError(
        f"{what} needs the model's feature_dim (the width of body(x)), which "
        f"{type(model).__name__} does not declare; add it as an int attribute"
    )


def features(model: nn.Module, x: Tensor) -> Tensor:
    """``model.body(x)`` flattened to ``[B, F]``."""
    body: nn.Module = model.body  # type: ignore[assignment]
    return body(x).flatten(1)


def class_means(feats: Tensor, keys: Tensor, n_classes: int) -> tuple[Tensor, Tensor]:
    """Mean of ``feats [N, F]`` per class ``keys [N]`` (int64 in ``[0, n_classes)``).

    Returns:
        ``(means [n_classes, F], held [n_classes])``: a class with no sample has a zero
        mean and ``held`` False.
    """
    sums = feats.new_zeros(n_classes, feats.shape[1]).index_add_(0, keys, feats)
    counts = feats.new_zeros(n_classes).index_add_(
        0, keys, torch.ones_like(keys, dtype=feats.dtype)
    )
    return sums / counts.clamp(min=1)[:, None], counts > 0
