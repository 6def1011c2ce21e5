"""MER's compiled update (lifelong.fast.mer_kernel) against the reference, autograd's
single-sample steps in ``strategies/mer.py``."""

from __future__ import annotations

import pytest
import torch
from lifelong.strategies.mer import mer_update

from lifelong import Batch, Composite, StreamInfo
from lifelong.composition.compose import configure
from lifelong.fast.mer_kernel import compiled_mer_update, kernel
from lifelong.models.mlp import MLP
from lifelong.training.functional import load_params

pytest.importorskip("numba")

Params = dict[str, torch.Tensor]


def composite(widths: tuple[int, ...], dtype: torch.dtype) -> Composite:
    """``mer+replay`` on a one-head MLP ``widths`` (N(0, 1/fan-in) weights, biases 0.1)."""
    built, _ = configure("mer+replay", {})
    model = MLP(widths[0], widths[1:-1], widths[-1]).to(dtype)
    g = torch.Generator().manual_seed(5)
    load_params(
        model,
        {
            n: torch.randn(p.shape, generator=g, dtype=dtype) / p.shape[-1] ** 0.5
            if p.ndim == 2
            else p.detach() * 0 + 0.1
            for n, p in model.named_parameters()
        },
    )
    built.setup(model, StreamInfo(1, "class", widths[-1], 1, widths[0]), torch.Generator())
    return built


def sparse(n: int, width: int, classes: int, seed: int, dtype: torch.dtype) -> Batch:
    """Inputs in [0, 1] with four fifths of them zero (as MNIST's background)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, width, generator=g, dtype=dtype)
    x = x * (torch.rand(n, width, generator=g) < 0.2)
    y = torch.randint(0, classes, (n,), generator=g)
    return Batch(x, y, torch.zeros(n, dtype=torch.long), 0)


def update(built: Composite, start: Params, batch: Batch, pool: Batch, closed: bool, **rates):
    load_params(built.model, start)
    loss = mer_update(
        built.params,
        batch,
        pool,
        built.minimised,
        torch.Generator().manual_seed(4),
        batches_per_example=rates.pop("k", 3),
        memory_batch=rates.pop("memory_batch", 4),
        closed_form=closed,
        **rates,
    )
    return loss, {n: p.detach().clone() for n, p in built.params.items()}


@pytest.mark.parametrize("widths", [(12, 3), (12, 4, 3), (12, 6, 5, 3)])
@pytest.mark.parametrize(("beta", "gamma"), [(0.3, 1.0), (0.5, 0.7), (1.0, 0.2)])
def test_compiled_update_equals_autograd_in_float64(widths, beta: float, gamma: float) -> None:
    built = composite(widths, torch.float64)
    start = {n: p.detach().clone() for n, p in built.params.items()}
    batch, pool = (
        sparse(3, 12, widths[-1], 1, torch.float64),
        sparse(8, 12, widths[-1], 2, torch.float64),
    )
    rates = {"lr": 0.3, "beta": beta, "gamma": gamma}
    fast_loss, fast = update(built, start, batch, pool, True, **rates)
    slow_loss, slow = update(built, start, batch, pool, False, **rates)
    torch.testing.assert_close(fast_loss, slow_loss, rtol=1e-12, atol=1e-12)
    for name in slow:
        torch.testing.assert_close(fast[name], slow[name], rtol=1e-12, atol=1e-12)
    first = next(iter(start))
    assert not fast[first].equal(start[first])


def test_compiled_update_equals_autograd_on_the_suites_mlp_in_float32() -> None:
    """784-100-100-10, 20 examples of 10 batches of 11 (2,200 steps), MER's defaults."""
    built = composite((784, 100, 100, 10), torch.float32)
    start = {n: p.detach().clone() for n, p in built.params.items()}
    batch, pool = sparse(20, 784, 10, 1, torch.float32), sparse(200, 784, 10, 2, torch.float32)
    rates = {"lr": 0.03, "beta": 0.03, "gamma": 1.0, "k": 10, "memory_batch": 10}
    fast_loss, fast = update(built, start, batch, pool, True, **dict(rates))
    slow_loss, slow = update(built, start, batch, pool, False, **dict(rates))
    torch.testing.assert_close(fast_loss, slow_loss, rtol=1e-4, atol=1e-6)
    for name in slow:
        moved = (slow[name] - start[name]).abs().max()
        assert moved > 1e-4  # the weights moved, by far more than the tolerance
        torch.testing.assert_close(fast[name], slow[name], rtol=1e-4, atol=1e-6)


def test_the_kernel_declines_what_it_cannot_run() -> None:
    weights = [torch.zeros(3, 4), torch.zeros(3)]
    x, y = torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 2, dtype=torch.long)
    assert kernel().compiled is not None
    assert compiled_mer_update(weights, x.half(), y, lr=0.1, beta=0.5, gamma=1.0) is None
    assert compiled_mer_update(weights, x, y.int(), lr=0.1, beta=0.5, gamma=1.0) is None
    strided = [torch.zeros(4, 3).t(), torch.zeros(3)]
    assert compiled_mer_update(strided, x, y, lr=0.1, beta=0.5, gamma=1.0) is None
    assert compiled_mer_update(weights, x, y, lr=0.1, beta=0.5, gamma=1.0) is not None
