"""The MLP's hand-written cross-entropy gradient and the ``sgd`` learner's use of it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lifelong.strategies.sgd import Sgd

from lifelong import Batch, Replay, StreamInfo
from lifelong.compose import configure, plain_mlp_objective
from lifelong.model import MLP, mlp_cross_entropy_grads


def model(hidden: tuple[int, ...], heads: int = 1) -> MLP:
    torch.manual_seed(0)
    return MLP(6, hidden, 3, n_heads=heads).to(torch.float64)


def batch(n: int, seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g, dtype=torch.float64)
    return Batch(x, torch.randint(0, 3, (n,), generator=g), torch.zeros(n, dtype=torch.long), 0)


@pytest.mark.parametrize("hidden", [(), (5,), (5, 4, 7)])
@pytest.mark.parametrize("n", [1, 9])
def test_mlp_gradients_match_autograd(hidden: tuple[int, ...], n: int) -> None:
    net, data = model(hidden), batch(n, 1)
    loss = F.cross_entropy(net(data.x), data.y)
    want = torch.autograd.grad(loss, list(net.parameters()))
    got_loss, got = mlp_cross_entropy_grads(list(net.parameters()), data.x, data.y)
    torch.testing.assert_close(got_loss, loss.detach(), rtol=1e-13, atol=1e-13)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spec", ["sgd", "er", "sgd+ewc"])
def test_sgd_steps_by_hand_match_autograd(spec: str) -> None:
    """Three steps of the ``sgd`` learner on a bare MLP (ewc: applied as a proximal step,
    so the objective stays bare) move the weights as the autograd path does."""
    moved = []
    for by_hand in (True, False):
        composite, _ = configure(spec, {"lr": 0.3})
        composite.setup(
            model((5,)), StreamInfo(3, "domain", 3, 1, 2), torch.Generator().manual_seed(1)
        )
        assert composite.plain_mlp()
        learner = composite.learner
        assert isinstance(learner, Sgd)
        replay = Replay(batch(4, 9), torch.zeros(4, 3)) if spec == "er" else None
        bare = composite.objective
        objective = bare if by_hand else (lambda p, b, r, f=bare: f(p, b, r))  # autograd
        for seed in range(3):
            assert (plain_mlp_objective(objective, composite.params) is composite) is by_hand
            step = learner.step(composite.params, batch(5, seed), replay, objective)
        moved.append(({n: p.detach().clone() for n, p in composite.params.items()}, step))
    (a, step_a), (b, step_b) = moved
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(step_a.grads[name], step_b.grads[name], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(step_a.loss, step_b.loss, rtol=1e-12, atol=1e-12)


class Subclassed(MLP):
    """Same layers, another class: its forward may differ, so autograd is used."""


@pytest.mark.parametrize(
    ("spec", "net", "setting", "heads"),
    [
        ("adam+ewc", model((5,)), "domain", 1),  # a penalty in the objective
        ("sgd", model((5,), heads=2), "task", 2),  # several heads
        ("er", Subclassed(6, (5,), 3).double(), "domain", 1),
    ],
)
def test_only_a_bare_one_head_mlp_objective_takes_the_closed_form(
    spec: str, net: torch.nn.Module, setting: str, heads: int
) -> None:
    composite, _ = configure(spec, {})
    composite.setup(net, StreamInfo(3, setting, 3, heads, 2), torch.Generator().manual_seed(1))
    assert not composite.plain_mlp()
    assert plain_mlp_objective(composite.objective, composite.params) is None


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_supervised_step_by_hand_matches_autograd(momentum: float) -> None:
    """``naive``'s step on the default MLP equals the same step through autograd (a
    subclass, which takes autograd) from the same weights."""
    from lifelong import SGD, supervised_step

    plain = model((5, 4))
    other = Subclassed(6, (5, 4), 3).double()
    other.load_state_dict(plain.state_dict())
    for net in (plain, other):
        optimizer = SGD(net.parameters(), lr=0.2, momentum=momentum)
        losses = [supervised_step(net, optimizer, batch(7, seed)) for seed in range(3)]
        net.losses = torch.stack(losses)  # type: ignore[assignment]
    torch.testing.assert_close(plain.losses, other.losses, rtol=1e-12, atol=1e-12)
    for a, b in zip(plain.parameters(), other.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_stacked_gradients_equal_each_networks_own() -> None:
    """``--vectorize``'s batched form gives every stacked MLP its own loss and gradient."""
    from lifelong.model import stacked_mlp_cross_entropy_grads

    nets = [model((5, 4)) for _ in range(3)]
    for k, net in enumerate(nets):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.1 * k)
    data = [batch(7, 20 + k) for k in range(3)]
    stacked = [torch.stack(ws) for ws in zip(*(list(n.parameters()) for n in nets), strict=True)]
    x, y = torch.stack([d.x for d in data]), torch.stack([d.y for d in data])
    losses, grads = stacked_mlp_cross_entropy_grads(stacked, x, y)
    for k, (net, d) in enumerate(zip(nets, data, strict=True)):
        loss, own = mlp_cross_entropy_grads(list(net.parameters()), d.x, d.y)
        torch.testing.assert_close(losses[k], loss, rtol=1e-12, atol=1e-12)
        for g, w in zip(grads, own, strict=True):
            torch.testing.assert_close(g[k], w, rtol=1e-12, atol=1e-12)
