"""The functional core: forward parity, and meta-gradients against finite differences and
against a first-order value derived by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import finite_differences, tiny_mlp
from torch import Tensor

from lifelong import Batch
from lifelong.models.mlp import MLP
from lifelong.training.functional import (
    Params,
    forward,
    load_params,
    loss_fn,
    meta_gradient,
    params_of,
    sgd_inner_loop,
    sgd_step,
)

EPS = 1e-6


def tiny(hidden: tuple[int, ...] = (4,), n_heads: int = 1) -> MLP:
    """A float64 MLP 3-hidden-2 (weights N(0, 1), biases 0.5)."""
    return tiny_mlp(hidden, n_heads)


def data(n: int, seed: int, n_heads: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (n,), generator=g)
    return Batch(x, y, torch.randint(0, n_heads, (n,), generator=g), 0)


INNER = [data(4, 1), data(4, 2), data(4, 3)]
OUTER = data(6, 4)


def outer_loss(
    model: MLP,
    params: Params,
    lr: float | Params,
    *,
    create_graph: bool,
    only: set[str] | None = None,
) -> Tensor:
    loss = loss_fn(model)
    fast = sgd_inner_loop(loss, params, INNER, lr, only=only, create_graph=create_graph)[-1]
    return loss(fast, OUTER)


def assert_close(actual: Params, expected: Params, rtol: float = 1e-5) -> None:
    assert actual.keys() == expected.keys()
    for name in actual:
        torch.testing.assert_close(actual[name], expected[name], rtol=rtol, atol=1e-8, msg=name)


@pytest.mark.parametrize("n_heads", [1, 3])
def test_functional_forward_equals_module_forward(n_heads: int) -> None:
    model = tiny(n_heads=n_heads)
    batch = data(5, 0, n_heads)
    ids = batch.task_ids if n_heads > 1 else None
    expected = model(batch.x, ids)
    torch.testing.assert_close(forward(model, params_of(model), batch.x, ids), expected)
    shifted = {n: p + 1.0 for n, p in params_of(model).items()}
    assert not torch.allclose(forward(model, shifted, batch.x, ids), expected)
    torch.testing.assert_close(model(batch.x, ids), expected)  # the module is untouched


def test_params_of_detached_and_live() -> None:
    model = tiny()
    copies, live = params_of(model), params_of(model, detach=False)
    assert all(c.requires_grad and c.is_leaf for c in copies.values())
    for name, p in model.named_parameters():
        assert live[name] is p
        assert copies[name] is not p and torch.equal(copies[name], p)


def test_second_order_meta_gradient_matches_finite_differences() -> None:
    model = tiny()
    params = params_of(model)
    grads, lr_grads = meta_gradient(outer_loss(model, params, 0.5, create_graph=True), params)
    assert lr_grads == {}
    expected = finite_differences(lambda: outer_loss(model, params, 0.5, create_graph=True), params)
    assert_close(grads, expected)
    first, _ = meta_gradient(outer_loss(model, params, 0.5, create_graph=False), params)
    assert not all(torch.allclose(first[n], grads[n]) for n in grads)  # the test can tell


def test_meta_gradient_of_per_parameter_learning_rates_matches_finite_differences() -> None:
    model = tiny()
    params = params_of(model)
    g = torch.Generator().manual_seed(9)
    alpha = {
        n: (0.1 + 0.4 * torch.rand(p.shape, generator=g, dtype=p.dtype)).requires_grad_()
        for n, p in params.items()
    }

    def f() -> Tensor:  # La-MAML's form: rates relu(alpha)
        return outer_loss(
            model, params, {n: F.relu(a) for n, a in alpha.items()}, create_graph=True
        )

    grads, alpha_grads = meta_gradient(f(), params, alpha)
    assert_close(alpha_grads, finite_differences(f, alpha))
    assert_close(grads, finite_differences(f, params))


def test_only_adapts_named_parameters_and_gradient_reaches_the_rest() -> None:
    model = tiny(hidden=(4, 3))
    params = params_of(model)
    head = {"head.weight", "head.bias"}
    fast = sgd_step(loss_fn(model), params, INNER[0], 0.5, only=head)
    for name in params:
        assert (fast[name] is params[name]) == (name not in head)
    assert not torch.equal(fast["head.weight"], params["head.weight"])

    def f() -> Tensor:  # OML's form: inner steps on the head, outer gradient on everything
        return outer_loss(model, params, 0.5, create_graph=True, only=head)

    grads, _ = meta_gradient(f(), params)
    assert_close(grads, finite_differences(f, params))
    assert grads["body.0.weight"].abs().sum() > 0


def test_first_order_meta_gradient_equals_hand_derived_value() -> None:
    """A softmax-regression model (no hidden layer), every gradient written out by hand:
    d CE / d W = (softmax(W x + b) - onehot(y))^T x / n.  First order, theta_K is
    theta_0 - sum_k lr * g_k with g_k constants, so d outer / d theta_0 is the outer
    gradient at theta_K, and d outer / d lr_i = -sum_k g_k,i * (outer gradient at theta_K)_i.
    """
    model = tiny(hidden=())
    params = params_of(model)
    lrs = {n: torch.full_like(p, 0.7).requires_grad_() for n, p in params.items()}

    def hand_grad(w: Tensor, b: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
        err = torch.softmax(batch.x @ w.T + b, dim=1) - F.one_hot(batch.y, 2).double()
        return err.T @ batch.x / len(batch.y), err.mean(0)

    w, b = params["head.weight"].detach(), params["head.bias"].detach()
    sum_w, sum_b = torch.zeros_like(w), torch.zeros_like(b)
    for batch in INNER:
        gw, gb = hand_grad(w, b, batch)
        w, b = w - 0.7 * gw, b - 0.7 * gb
        sum_w, sum_b = sum_w + gw, sum_b + gb
    outer_w, outer_b = hand_grad(w, b, OUTER)

    grads, lr_grads = meta_gradient(outer_loss(model, params, lrs, create_graph=False), params, lrs)
    assert_close(grads, {"head.weight": outer_w, "head.bias": outer_b}, rtol=1e-10)
    assert_close(
        lr_grads, {"head.weight": -sum_w * outer_w, "head.bias": -sum_b * outer_b}, rtol=1e-10
    )


def test_inner_loop_returns_trajectory_and_leaves_inputs_alone() -> None:
    model = tiny()
    params = params_of(model)
    before = {n: p.detach().clone() for n, p in params.items()}
    trajectory = sgd_inner_loop(loss_fn(model), params, INNER, 0.5)
    assert len(trajectory) == len(INNER)
    again = sgd_step(loss_fn(model), trajectory[0], INNER[1], 0.5)
    assert_close(
        {n: t.detach() for n, t in again.items()},
        {n: t.detach() for n, t in trajectory[1].items()},
        rtol=1e-12,
    )
    assert all(torch.equal(params[n], before[n]) for n in params)
    assert sgd_inner_loop(loss_fn(model), params, [], 0.5) == []


def test_bad_names_fail_early() -> None:
    model = tiny()
    with pytest.raises(ValueError, match=r"head\.wieght"):
        sgd_inner_loop(loss_fn(model), params_of(model), INNER, 0.1, only={"head.wieght"})
    with pytest.raises(ValueError, match="no rate for"):
        sgd_step(loss_fn(model), params_of(model), INNER[0], {"head.weight": torch.ones(2, 4)})
    with pytest.raises(ValueError, match="missing"):
        load_params(model, {"head.weight": torch.zeros(2, 4)})


def test_load_params_copies_into_the_module() -> None:
    model = tiny()
    new = {n: torch.full_like(p, 0.25) for n, p in params_of(model).items()}
    load_params(model, new)
    assert all(torch.equal(p, new[n]) for n, p in model.named_parameters())
