"""The ``ncm`` head: predict the class whose mean feature (prototype) is nearest."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, final

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from lifelong import Batch, Head, StreamInfo, class_means, feature_dim, features, param


@final
@dataclass
class NearestMean(Head):
    """Nearest class mean: the class whose prototype is closest to the sample's features.

    A class's prototype is the mean of the model's ``body`` features over the memory's
    samples of that class when a memory holds some (iCaRL's nearest-mean-of-exemplars),
    else the running mean over every sample of it seen in the stream (ProtoNets'
    prototype, kept online; always with ``from_memory=false``, for a body that does not
    change). Features are L2-normalised before averaging and the mean
    again after, as iCaRL does (``normalize=false``: raw features and squared Euclidean
    distance, as ProtoNets). The score of class c is ``-||f(x) - mu_c||^2``; a class with
    no prototype yet scores the lowest float (before any sample, the model's own logits).
    Training is left to the other parts (the model's linear head trains the features);
    only the prediction changes. A prototype is kept per task and target: with several
    heads the sample's task picks its set; with one head a class's score is that of its
    nearest prototype, so a target that several tasks share (domain-incremental streams:
    Split-MNIST's "first digit of the pair" is 0, 2, 4, 6 and 8) keeps a prototype for each
    task rather than one mean of unlike digits. Where each class belongs to one task
    (class-incremental) this is iCaRL's rule unchanged. (One mean per target left the last
    domain-IL task at chance with OML's frozen representation: ncm+oml on Split-MNIST,
    0.52-0.55 over seeds 0-2.)

    References: Rebuffi et al. 2017, "iCaRL: Incremental Classifier and Representation
    Learning" (CVPR), Algorithm 1; Snell et al. 2017, "Prototypical Networks for Few-shot
    Learning" (NeurIPS).
    """

    name: ClassVar[str] = "ncm"
    reads_stored: ClassVar[bool] = True
    memory_settings: ClassVar[frozenset[str]] = frozenset({"from_memory"})
    normalize: bool = param(True, "L2-normalise features and means (iCaRL); false: ProtoNets")
    from_memory: bool = param(
        True, "prototypes from the memory where it holds the class (false: running means)"
    )

    sums: Tensor = field(init=False, repr=False, compare=False)
    counts: Tensor = field(init=False, repr=False, compare=False)
    n_outputs: int = field(init=False, repr=False, compare=False)
    n_heads: int = field(init=False, repr=False, compare=False)
    n_tasks: int = field(init=False, repr=False, compare=False)

    def prepare(self, model: nn.Module, info: StreamInfo, generator: torch.Generator) -> set[str]:
        width = feature_dim(model, "the 'ncm' head")
        device = next(model.parameters()).device
        self.n_outputs, self.n_heads = info.n_outputs, info.n_heads
        self.n_tasks = max(info.n_tasks, info.n_heads)
        self.sums = torch.zeros(self.n_tasks * info.n_outputs, width, device=device)
        self.counts = torch.zeros(self.n_tasks * info.n_outputs, device=device)
        return set()

    def observe(self, model: nn.Module, batch: Batch) -> None:
        with torch.no_grad():
            f = self._embed(model, batch.x)
        keys = self._keys(batch.y, batch.task_ids)
        self.sums.index_add_(0, keys, f)
        self.counts.index_add_(0, keys, torch.ones_like(keys, dtype=f.dtype))

    @torch.no_grad()
    def predict(
        self, model: nn.Module, x: Tensor, task_ids: Tensor, stored: Batch | None
    ) -> Tensor:
        means, known = self.prototypes(model, stored)
        if not bool(known.any()):  # nothing seen yet (the init row): the model's own guess
            return model(x, task_ids)
        scores = -torch.cdist(self._embed(model, x), means).pow(2)
        scores = scores.masked_fill(~known, torch.finfo(scores.dtype).min)
        per_task = scores.view(len(x), self.n_tasks, self.n_outputs)
        if self.n_heads == 1:  # each class's nearest prototype, whichever task it came from
            return per_task.amax(1)
        return per_task[torch.arange(len(x), device=x.device), task_ids]

    @torch.no_grad()
    def few_shot_scores(
        self, model: nn.Module, params: dict[str, Tensor], support: Batch, x: Tensor
    ) -> Tensor | None:
        """The nearest of the support set's class means (ProtoNets' few-shot rule), in the
        features of the body at ``params``; one task's labels are its classes."""
        body = {n.removeprefix("body."): p for n, p in params.items() if n.startswith("body.")}

        def embed(inputs: Tensor) -> Tensor:
            body_module: nn.Module = model.body  # type: ignore[assignment]
            f = functional_call(body_module, body, (inputs,)).flatten(1)
            return F.normalize(f, dim=1) if self.normalize else f

        means, held = class_means(embed(support.x), support.y, self.n_outputs)
        means = F.normalize(means, dim=1) if self.normalize else means
        scores = -torch.cdist(embed(x), means).pow(2)
        return scores.masked_fill(~held, torch.finfo(scores.dtype).min)

    def prototypes(self, model: nn.Module, stored: Batch | None) -> tuple[Tensor, Tensor]:
        """Each prototype ``[K, F]`` (K = tasks x outputs) and whether it has one ``[K]``:
        the memory's class means where the memory holds the class, else the running means."""
        means, known = self.sums / self.counts.clamp(min=1)[:, None], self.counts > 0
        if stored is not None and self.from_memory:
            kept, held = class_means(
                self._embed(model, stored.x), self._keys(stored.y, stored.task_ids), len(means)
            )
            means, known = torch.where(held[:, None], kept, means), known | held
        return (F.normalize(means, dim=1) if self.normalize else means), known

    def _embed(self, model: nn.Module, x: Tensor) -> Tensor:
        f = features(model, x)
        return F.normalize(f, dim=1) if self.normalize else f

    def _keys(self, y: Tensor, task_ids: Tensor) -> Tensor:
        """The prototype of each (task, target); a detected task past the stream's count
        shares the last task's."""
        return task_ids.clamp(max=self.n_tasks - 1) * self.n_outputs + y
