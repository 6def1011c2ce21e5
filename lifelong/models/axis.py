"""The model axis: which network a run trains (``--set model=NAME``, ``model.KEY=V``).

A model is built by a factory ``factory(input_shape, n_outputs, n_heads, **fields)`` that
returns an ``nn.Module`` keeping the model contract (docs/models.md). The factory's fields
are its parameters after those three, with their defaults and annotations (a class's
``__init__`` likewise); a field's one-line doc is its line under ``Args:`` in the docstring.
The built-ins are ``mlp``, ``cnn``, ``resnet18-reduced`` and ``lamaml-conv``; a user's
factory is named ``path/to/file.py:factory`` or ``package.module:factory``.

Every run's model is made by :func:`build_model`, which also checks, before any training,
that the model's forward takes the stream's inputs and gives ``[B, n_outputs]`` logits.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import re
import sys
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lifelong.contracts.params import ParamSpec, check_range, parse_value
from lifelong.contracts.parts import eval_mode
from lifelong.contracts.stream import Stream
from lifelong.errors import UserError, check_path, closest, failure
from lifelong.execution.protocol import Protocol
from lifelong.models.convnets import CNN, LaMAMLConv, ResNet18Reduced
from lifelong.models.mlp import MLP

__all__ = [
    "ModelEntry",
    "activation_bytes",
    "build_model",
    "configure_model",
    "default_model",
    "find_model",
    "mlp",
    "model_code",
    "models",
]

FIELD_TYPES = (int, float, bool, str)


def mlp(
    input_shape: tuple[int, ...],
    n_outputs: int,
    n_heads: int = 1,
    *,
    hidden: tuple[int, ...] = (100, 100),
) -> MLP:
    """A ReLU MLP on the flattened input (lifelong.MLP); the default for 28x28 digits.

    Args:
        hidden: widths of the hidden layers: the protocol's ``hidden`` (``--set hidden=...``)
    """
    return MLP(math.prod(input_shape), hidden, n_outputs, n_heads)


@dataclass(frozen=True)
class ModelEntry:
    """A model the axis can build: its name, factory and typed fields.

    Attributes:
        name: the short name, or the ``file.py:factory`` / ``module:factory`` given.
        factory: ``factory(input_shape, n_outputs, n_heads, **fields) -> nn.Module``.
        fields: the settings ``model.KEY=V`` takes, by name.
        from_protocol: factory parameters filled from the protocol's setting of that name
            (``mlp``'s ``hidden``), not set as ``model.KEY``.
        code: a hash of a plug-in factory's source file (None for lifelong's own).
    """

    name: str
    factory: Callable[..., Any]
    fields: Mapping[str, ParamSpec]
    from_protocol: tuple[str, ...] = ()
    code: str | None = None

    @property
    def summary(self) -> str:
        """The first paragraph of the factory's docstring, on one line."""
        doc = (inspect.getdoc(self.factory) or "").strip()
        return " ".join(doc.split("\n\n")[0].split())

    def build(
        self, shape: tuple[int, ...], n_outputs: int, n_heads: int, fields: Mapping[str, Any]
    ) -> nn.Module:
        """The factory's module; one line (UserError) for an exception or a non-module."""
        try:
            model = self.factory(shape, n_outputs, n_heads, **fields)
        except (Exception, SystemExit) as error:
            raise UserError(failure(f"model {self.name}: cannot build it", error)) from None
        if not isinstance(model, nn.Module):
            raise UserError(
                f"model {self.name} returned {type(model).__name__}, not a torch.nn.Module; "
                "a model factory returns the network (see docs/models.md)"
            )
        return model


@functools.cache
def models() -> dict[str, ModelEntry]:
    """The built-in models by name."""
    return {
        "mlp": _entry("mlp", mlp, from_protocol=("hidden",)),
        "cnn": _entry("cnn", CNN),
        "resnet18-reduced": _entry("resnet18-reduced", ResNet18Reduced),
        "lamaml-conv": _entry("lamaml-conv", LaMAMLConv),
    }


def default_model(shape: tuple[int, ...]) -> str:
    """The model a stream gets when none is named: the reduced ResNet-18 for colour images
    (``[3, H, W]``: CIFAR, TinyImageNet), else the MLP (28x28 digits, flat inputs)."""
    return "resnet18-reduced" if len(shape) == 3 and shape[0] == 3 else "mlp"


def find_model(name: str) -> ModelEntry:
    """The model named ``name``: a built-in, ``path/to/file.py:factory`` or
    ``package.module:factory``.

    Raises:
        UserError: an unknown name, a file or module that cannot be imported, no such
            factory in it, or one whose fields cannot be read.
    """
    if ":" not in name:
        found = models()
        if name not in found:
            raise UserError(
                f"unknown model '{name}'{closest(name, found)}; known: {', '.join(found)}, "
                "or give path/to/file.py:factory (see `lifelong list models`)"
            )
        return found[name]
    return _plugin(name)


@functools.cache
def _plugin_at(name: str, mtime_ns: int) -> ModelEntry:
    """A plug-in factory's entry, once per file version (so its fields are read once)."""
    from lifelong.composition.registry import import_plugin
    from lifelong.evaluation.result import code_hash

    where, _, attr = name.rpartition(":")
    module = import_plugin(where, "model file")
    factory = getattr(module, attr, None)
    if factory is None:
        names = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
        raise UserError(f"{where} defines no '{attr}'{closest(attr, names)}")
    if not callable(factory):
        raise UserError(f"model {name}: {attr} is a {type(factory).__name__}, not a factory")
    return _entry(name, factory, code=code_hash(factory))


def _plugin(name: str) -> ModelEntry:
    where, _, attr = name.rpartition(":")
    module = where.split(".")
    ok = attr.isidentifier() and (
        where.endswith(".py") or all(part.isidentifier() for part in module)
    )
    if not ok:
        raise UserError(
            f"model '{name}' is neither a built-in name, path/to/file.py:factory nor "
            "package.module:factory (see `lifelong list models`)"
        )
    if not where.endswith(".py") and module[0] in sys.stdlib_module_names:
        raise UserError(f"model '{name}': {where} is part of Python's standard library")
    mtime = 0
    if where.endswith(".py"):
        path = check_path(where, "model file")
        if not path.is_file():
            raise UserError(f"model file {where} does not exist")
        mtime = path.stat().st_mtime_ns
    return _plugin_at(name, mtime)


def _entry(
    name: str,
    factory: Callable[..., Any],
    *,
    from_protocol: tuple[str, ...] = (),
    code: str | None = None,
) -> ModelEntry:
    fields = {k: v for k, v in _fields(name, factory).items() if k not in from_protocol}
    return ModelEntry(name, factory, fields, from_protocol, code)


def _fields(name: str, factory: Callable[..., Any]) -> dict[str, ParamSpec]:
    """The typed fields of ``factory``: its parameters after the first three."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        signature = inspect.signature(factory)
        hints = typing.get_type_hints(target)
    except (TypeError, ValueError, NameError) as error:
        raise UserError(f"model {name}: cannot read its parameters ({error})") from None
    given = [
        p for p in signature.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if len(given) < 3:
        raise UserError(
            f"model {name}: a factory takes (input_shape, n_outputs, n_heads, **fields); "
            f"this one takes ({', '.join(p.name for p in given)})"
        )
    docs = _arg_docs(inspect.getdoc(target) or "") | _arg_docs(inspect.getdoc(factory) or "")
    specs = {}
    for p in given[3:]:
        kind = hints.get(p.name, type(p.default) if p.default is not p.empty else None)
        if p.default is p.empty:
            raise UserError(f"model {name}: its field '{p.name}' has no default; give it one")
        specs[p.name] = ParamSpec(p.name, kind, p.default, docs.get(p.name, ""))
    return specs


def _arg_docs(doc: str) -> dict[str, str]:
    """``{name: text}`` from the ``name: text`` lines of a docstring."""
    found = {}
    for line in doc.splitlines():
        match = re.match(r"\s*(\w+)(?: \([^)]*\))?: (.+)", line)
        if match:
            found[match.group(1)] = match.group(2).strip()
    return found


def configure_model(protocol: Protocol, settings: Mapping[str, Any], used: set[str]) -> Protocol:
    """``protocol`` with the ``model.KEY`` settings parsed into its model's fields.

    Raises:
        UserError: an unknown model, a field it does not have, a value of the wrong type,
            or fields given without naming the model.
    """
    given = {k.removeprefix("model."): v for k, v in settings.items() if k.startswith("model.")}
    entry = find_model(protocol.model) if protocol.model else None
    if entry is None:
        if given:
            key = next(iter(given))
            raise UserError(
                f"--set model.{key}: name the model too (--set model=NAME): the default "
                "depends on the scenario's input shape"
            )
        return protocol
    values = {}
    for key, raw in given.items():
        if key not in entry.fields:
            hint = closest(key, entry.fields)
            extra = f"; set it with --set {key}=..." if key in entry.from_protocol else ""
            known = ", ".join(entry.fields) or "none"
            raise UserError(
                f"model {entry.name} has no field '{key}'{hint}{extra} (its fields: {known})"
            )
        spec = entry.fields[key]
        if spec.type not in FIELD_TYPES and typing.get_origin(spec.type) is None:
            raise UserError(f"model {entry.name}: its field '{key}' has a type --set cannot give")
        value = parse_value(spec, raw, owner=f"model {entry.name}")
        check_range(spec, value, owner=f"model {entry.name}")
        values[key] = value
        used.add(f"model.{key}")
    return dataclasses.replace(protocol, model_fields=tuple(sorted(values.items())))


def model_code(protocol: Protocol) -> str | None:
    """The hash of the plug-in model's source file (None for a built-in or the default)."""
    return find_model(protocol.model).code if ":" in protocol.model else None


def build_model(
    protocol: Protocol, stream: Stream, device: torch.device | None = None
) -> nn.Module:
    """The run's network for ``stream``, checked to fit it, on ``device``.

    The model is drawn from torch's global generator (seed it before), checked on two of
    the stream's test inputs (in eval mode, so that nothing in it changes), moved to
    ``device`` and, with ``channels_last``, its 4-D weights to that memory format.

    Raises:
        UserError: the model cannot be built, or its forward fails on the stream's
            inputs, or it gives other than ``[B, n_outputs]`` logits.
    """
    entry = find_model(protocol.model or default_model(stream.shape))
    fields = {**dict(protocol.model_fields)}
    fields |= {name: getattr(protocol, name) for name in entry.from_protocol}
    model = entry.build(stream.shape, stream.n_outputs, stream.n_heads, fields)
    check_fit(model, stream, entry.name)
    if device is not None:
        model = model.to(device)
    if protocol.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


def activation_bytes(model: nn.Module, stream: Stream) -> int:
    """Bytes of the largest tensor a module of ``model`` outputs for one of the stream's
    inputs, the input itself included (measured on one test input, in eval mode, without
    gradients): 3,136 for the default MLP on 28x28 digits (its input), 100,352 for
    ``cnn``. What one sample of a batch allocates at once, at least, in a forward or
    backward pass."""
    task = stream.tasks[0]
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = task.x_test[:1].to(device).float().div(255)
    ids = torch.full((1,), task.id, dtype=torch.long, device=device)
    largest = x.numel() * x.element_size()

    def measure(module: nn.Module, inputs: Any, output: Any) -> None:
        nonlocal largest
        if isinstance(output, torch.Tensor):
            largest = max(largest, output.numel() * output.element_size())

    hooks = [m.register_forward_hook(measure) for m in model.modules() if m is not model]
    try:
        with eval_mode(model), torch.no_grad():
            model(x, ids)
    finally:
        for hook in hooks:
            hook.remove()
    return largest


def check_fit(model: nn.Module, stream: Stream, name: str) -> None:
    """Refuse, in one line, a model whose forward fails on the stream's inputs or whose
    logits are not ``[B, n_outputs]``."""
    task = stream.tasks[0]
    x = task.x_test[:2].to("cpu").float().div(255)
    ids = torch.full((len(x),), task.id, dtype=torch.long)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x, ids)
    except (Exception, SystemExit) as error:
        shape = list(stream.shape)
        raise UserError(
            failure(f"model {name}: its forward fails on this stream's inputs {shape}", error)
        ) from None
    finally:
        model.train(was_training)
    want = (len(x), stream.n_outputs)
    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if got != want:
        heads = f"{stream.n_heads} heads of " if stream.n_heads > 1 else ""
        raise UserError(
            f"model {name} gives outputs {got} for {len(x)} inputs; {stream.name} needs "
            f"[B, {stream.n_outputs}] logits ({heads}{stream.n_outputs} outputs): build it "
            "with the n_outputs and n_heads its factory is given"
        )
