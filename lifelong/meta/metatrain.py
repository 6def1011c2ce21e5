"""The engine side of a meta-learned init: the part's contract, its seeded start and the
disk cache of meta-trained weights.

A meta-learned init (``maml``, ``reptile``, ``oml`` in ``strategies/``) is a
:class:`MetaInit`: its dataclass fields are its meta-training config, and its
:meth:`MetaInit.meta_train` is the algorithm. The engine draws the pool of tasks
(:func:`lifelong.meta.meta_tasks.meta_tasks`), the starting weights and the generator from the
run seed, shows a bar on a terminal, caches the result on disk (``$LIFELONG_CACHE/inits``,
else ``~/.cache/lifelong/inits``) under a key made of the config, the task pool, the
model's shapes and the seed, so that a sweep meta-trains once per config and seed, whatever
strategy the init is combined with, and writes the weights into the run's model.

References: Finn et al. 2017 (MAML); Nichol et al. 2018 (Reptile); Javed & White 2019 (OML).
"""

from __future__ import annotations

import abc
import hashlib
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from lifelong.cache_dir import cache_home
from lifelong.contracts.init_axis import Init
from lifelong.contracts.params import as_config, param
from lifelong.contracts.scenario import ClassSplitImages, ImageScenario, ScenarioFamily
from lifelong.contracts.strategy import StreamInfo
from lifelong.errors import UserError
from lifelong.meta.meta_tasks import (
    META_SOURCES,
    MetaTaskSource,
    check_meta_source,
    meta_tasks,
)
from lifelong.training.functional import Params, load_params

__all__ = ["MetaInit", "MetaStart", "cache_root", "cached_init", "model_shape"]

EXTRA = "rates/"  # meta-trained values that are not the model's weights (Meta-SGD's rates)
TRAIN_SEED_OFFSET = 2_000_000  # sampling and initial weights of meta-training
_CACHE_VERSION = 3  # bump when an algorithm or the key changes, so stale inits are not reused
SOURCE_DOC = (
    "where the disjoint meta-training tasks come from (auto: by scenario; uci-digits: "
    "scikit-learn's held-out UCI handwritten digits in MNIST's format; colour streams: rest, "
    "the classes the stream leaves out, or cifar10 / cifar100, the other CIFAR)"
)


@dataclass(frozen=True)
class MetaStart:
    """Where meta-training starts, drawn by the engine from the run seed.

    Attributes:
        theta: the starting weights by name (leaves that require grad; an algorithm may
            update them in place).
        generator: the only randomness meta-training may use.
        steps: ``0, 1, ..., meta_steps - 1``, one per outer update (a bar on a terminal).
    """

    theta: Params
    generator: torch.Generator
    steps: Iterator[int]


@dataclass
class MetaInit(Init):
    """An init meta-trained before the stream on tasks disjoint from it.

    A concrete init adds its hyperparameters as fields (they are its meta-training config
    and its cache key, all but :attr:`stream_fields`) and implements :meth:`meta_train`;
    an init that freezes part of the network overrides ``prepare`` and calls
    :meth:`load_meta_trained` there.
    """

    stream_fields: ClassVar[tuple[str, ...]] = ("source",)
    """Fields that do not change meta-training (left out of the cache key)."""

    source: str = param("auto", SOURCE_DOC, choices=META_SOURCES)
    meta_steps: int = param(500, "outer (meta) updates", ge=1)

    @abc.abstractmethod
    def meta_train(self, model: nn.Module, tasks: MetaTaskSource, start: MetaStart) -> Params:
        """The meta-training algorithm: from ``start.theta`` to meta-trained weights.

        Args:
            model: the network, used only through ``functional_call``.
            tasks: the pool, on the model's device.
            start: the starting weights, the generator and the outer steps.

        Returns:
            The meta-trained weights by name.
        """

    def prepare(
        self, model: nn.Module, info: StreamInfo, generator: torch.Generator
    ) -> set[str] | None:
        """Start from the meta-trained weights; every weight learns."""
        self.load_meta_trained(model, info)
        return None

    def meta_trained_weights(
        self, model: nn.Module, tasks: MetaTaskSource, *, seed: int, progress: bool = False
    ) -> Params:
        """Run :meth:`meta_train` from weights and a generator drawn from ``seed``.

        The model's own weights are ignored (the start is a function of the cache key), and
        its buffers (batch norm's running statistics, which meta-training's forwards move)
        are as before after it, so a run starts alike whether it meta-trains or loads the
        cached weights.

        Returns:
            Detached weights by name, on the model's device.
        """
        generator, theta = _start(model, seed)
        start = MetaStart(theta, generator, _steps(self.meta_steps, self.name, progress))
        buffers = {n: b.clone() for n, b in model.named_buffers()}
        try:
            trained = self.meta_train(model, tasks.to(next(model.parameters()).device), start)
        finally:
            with torch.no_grad():
                for n, b in model.named_buffers():
                    b.copy_(buffers[n])
        return {n: p.detach().clone() for n, p in trained.items()}

    def load_meta_trained(self, model: nn.Module, info: StreamInfo) -> Params:
        """Meta-train (or load from the cache) for the run's stream; copy into ``model``.

        Returns:
            The weights by name, as loaded into ``model`` (on the CPU), and whatever else
            :meth:`meta_train` returned under names that start with ``rates/`` (Meta-SGD's
            learned rates: cached with the weights, not loaded into the model).
        """
        scenario = self._scenario(info)
        tasks = meta_tasks(scenario, info, info.seed, info.data_dir, source=self.source)
        config = as_config(self)
        params = cached_init(
            self.name,
            {k: v for k, v in config.items() if k not in self.stream_fields},
            tasks.key,
            model_shape(model),
            lambda: self.meta_trained_weights(model, tasks, seed=info.seed, progress=True),
            seed=info.seed,
            device=next(model.parameters()).device.type,
        )
        load_params(model, {n: p for n, p in params.items() if not n.startswith(EXTRA)})
        return params

    def check(self, model: nn.Module, info: StreamInfo) -> None:
        check_meta_source(self._scenario(info), self.source, info.data_dir)

    def _scenario(self, info: StreamInfo) -> ScenarioFamily:
        if isinstance(info.scenario, ClassSplitImages):  # split-cifar10 and kin
            return info.scenario
        if info.input_dim != META_INPUT_DIM:  # the grey pools hold 28x28 images
            raise UserError(
                f"the '{self.name}' init meta-trains on 28x28 grey images or a colour "
                f"scenario's (its sources: {', '.join(META_SOURCES)}), and this stream's "
                f"inputs hold {info.input_dim} values; use it on a 28x28 stream, a "
                "split-cifar10/cifar100/tinyimagenet one, or an init that is not meta-learned"
            )
        if not isinstance(info.scenario, ImageScenario):
            raise UserError(
                f"the '{self.name}' init is meta-learned and needs a scenario to draw disjoint "
                "meta-training tasks from; run it on a registered scenario such as "
                "split-mnist, not on a hand-built stream"
            )
        return info.scenario


META_INPUT_DIM = 28 * 28
"""The input size of every grey meta-training pool (:mod:`lifelong.meta.meta_tasks`)."""


def _start(model: nn.Module, seed: int) -> tuple[torch.Generator, Params]:
    """The meta-training generator and starting weights drawn from it: nn.Linear's and
    nn.Conv2d's default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), for a layer's weight and bias
    (``fan_in``: the inputs of one output unit); a norm layer's (1-D) weight 1, bias 0."""
    g = torch.Generator().manual_seed(seed + TRAIN_SEED_OFFSET)
    params: Params = {}
    named = dict(model.named_parameters())
    for name, p in named.items():
        weight = named.get(f"{name.rsplit('.', 1)[0]}.weight")
        if weight is not None and weight.dim() == 1:  # batch norm and the like
            value = torch.ones_like(p) if p is weight else torch.zeros_like(p)
            params[name] = value.detach().requires_grad_(True)
            continue
        fan_in = weight[0].numel() if weight is not None else p.shape[-1]
        bound = 1.0 / math.sqrt(fan_in)
        value = (torch.rand(p.shape, generator=g, dtype=p.dtype) * 2 - 1) * bound
        params[name] = value.to(p.device).requires_grad_(True)
    return g, params


def _steps(total: int, kind: str, enabled: bool) -> Iterator[int]:
    """``range(total)``, with a bar on stderr when ``enabled`` and stderr is a terminal."""
    if not (enabled and sys.stderr.isatty()):
        yield from range(total)
        return
    from tqdm import tqdm  # lazy: only for terminals

    with tqdm(total=total, desc=f"meta-train {kind}", unit="step", file=sys.stderr) as bar:
        for step in range(total):
            yield step
            bar.update(1)


def cache_root() -> Path:
    """Where meta-trained initializations are kept: ``$LIFELONG_CACHE/inits`` when the
    variable is set, else ``~/.cache/lifelong/inits``."""
    return cache_home() / "inits"


def model_shape(model: nn.Module) -> dict[str, str]:
    """``{name: "float32[100, 784]"}`` for every parameter: the model part of a cache key."""
    return {
        n: f"{str(p.dtype).removeprefix('torch.')}{list(p.shape)}"
        for n, p in model.named_parameters()
    }


def cached_init(
    kind: str,
    config: Mapping[str, object],
    source_key: str,
    shape: Mapping[str, str],
    compute: Callable[[], Params],
    *,
    seed: int,
    device: str = "cpu",
    cache_dir: str | os.PathLike[str] | None = None,
) -> Params:
    """Load an initialization from the disk cache, or compute and store it.

    The key is the digest of everything that determines the result: ``kind``, the
    meta-training ``config``, the task source's key, the model's parameter shapes and dtypes,
    ``seed``, the device type and a format version. Files are written atomically (temporary
    file then ``os.replace``) and read with ``torch.load(weights_only=True)``.

    Args:
        config: the init's meta-training fields, JSON-ready.
        compute: called only on a miss; returns weights by name.
        cache_dir: overrides :func:`cache_root`.

    Returns:
        Weights by name, on the CPU, not requiring grad.
    """
    key = json.dumps(
        {
            "version": _CACHE_VERSION,
            "kind": kind,
            "config": dict(config),
            "source": source_key,
            "model": dict(shape),
            "seed": seed,
            "device": torch.device(device).type,
        },
        sort_keys=True,
    )
    folder = Path(cache_dir) if cache_dir is not None else cache_root()
    path = folder / f"{hashlib.sha256(key.encode()).hexdigest()}.pt"
    if path.is_file():
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a file we cannot read must not be silently replaced
            raise UserError(f"cached initialization {path} is unreadable ({e}); delete it") from e
        if stored.get("key") == key:
            return dict(stored["params"])
    params = {n: t.detach().cpu().clone() for n, t in compute().items()}
    _save(folder, path, {"key": key, "params": params})
    return params


def _save(folder: Path, path: Path, payload: object) -> None:
    """Write ``payload`` to ``path`` atomically (nothing half-written on failure)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
