"""The acceleration ``lifelong.fast.closed_form`` (the MLP's hand-written cross-entropy
gradient) against its reference, autograd: for the ``sgd`` learner and ``supervised_step``,
equal within 1e-12 in float64; and ``fast=false`` takes no acceleration anywhere."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import run_one
from lifelong.strategies.sgd import Sgd

from lifelong import Batch, Objective, Replay, StreamInfo
from lifelong.composition.compose import configure
from lifelong.fast import cross_entropy_grads
from lifelong.models.mlp import MLP


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
    got_loss, got = cross_entropy_grads(list(net.parameters()), data.x, data.y)
    torch.testing.assert_close(got_loss, loss.detach(), rtol=1e-13, atol=1e-13)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spec", ["sgd", "er", "sgd+ewc", "sgd+si"])
def test_sgd_steps_by_hand_match_autograd(spec: str) -> None:
    """Three steps of the ``sgd`` learner on a bare MLP (ewc, si: applied as a proximal
    step, so the objective stays bare) move the weights as the autograd path does. The
    plain step forms no gradient (``cross_entropy_descent``), except for SI, which reads
    it: there the hand-written gradient equals autograd's."""
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
        # The reference: the same loss, declaring no closed form, so autograd.
        objective = composite.minimised if by_hand else Objective(composite.objective)
        for seed in range(3):
            assert (objective.closed_form is not None) is by_hand
            step = learner.step(composite.params, batch(5, seed), replay, objective)
        moved.append(({n: p.detach().clone() for n, p in composite.params.items()}, step))
    (a, step_a), (b, step_b) = moved
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(step_a.loss, step_b.loss, rtol=1e-12, atol=1e-12)
    assert (step_a.grads == {}) is (spec != "sgd+si")  # formed only where a part reads it
    for name, grad in step_a.grads.items():
        torch.testing.assert_close(grad, step_b.grads[name], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_descent_in_place_equals_the_step_along_the_hand_written_gradient(dtype) -> None:
    """``cross_entropy_descent`` moves the weights to ``theta - lr * grad`` of
    ``cross_entropy_grads`` (within 1e-12 in float64, 1e-6 in float32, where BLAS may round
    the scaled product differently) and returns the loss before the step."""
    from lifelong.fast import cross_entropy_descent

    torch.manual_seed(0)
    net = MLP(784, (100, 100), 10).to(dtype)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(64, 784, generator=g, dtype=dtype)
    y = torch.randint(0, 10, (64,), generator=g)
    weights = [p.detach().clone() for p in net.parameters()]
    loss, grads = cross_entropy_grads(weights, x, y)
    want = [w - 0.1 * grad for w, grad in zip(weights, grads, strict=True)]
    got_loss = cross_entropy_descent(weights, x, y, 0.1)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    assert torch.equal(got_loss, loss)
    for got, w in zip(weights, want, strict=True):
        torch.testing.assert_close(got, w, rtol=tol, atol=tol)


class Subclassed(MLP):
    """Same layers, another forward: it declares no closed form, so autograd is used."""

    def closed_form_grads(self) -> bool:
        return False


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
    closed = composite.minimised.closed_form
    assert closed is None or not closed.covers(composite.params, penalties=False)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_supervised_step_by_hand_matches_autograd(momentum: float) -> None:
    """``naive``'s step on the default MLP equals the same step through autograd (a
    subclass that declares no closed form, and ``fast=False``) from the same weights."""
    from lifelong import SGD, supervised_step

    plain, slow = model((5, 4)), model((5, 4))
    other = Subclassed(6, (5, 4), 3).double()
    other.load_state_dict(plain.state_dict())
    for net, fast in ((plain, True), (other, True), (slow, False)):
        optimizer = SGD(net.parameters(), lr=0.2, momentum=momentum)
        losses = [supervised_step(net, optimizer, batch(7, s), fast=fast) for s in range(3)]
        net.losses = torch.stack(losses)  # type: ignore[assignment]
    for reference in (other, slow):
        torch.testing.assert_close(plain.losses, reference.losses, rtol=1e-12, atol=1e-12)
        for a, b in zip(plain.parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_stacked_gradients_equal_each_networks_own() -> None:
    """``--vectorize``'s batched form gives every stacked MLP its own loss and gradient."""
    from lifelong.fast.stacked_mlp import stacked_mlp_cross_entropy_grads

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
        loss, own = cross_entropy_grads(list(net.parameters()), d.x, d.y)
        torch.testing.assert_close(losses[k], loss, rtol=1e-12, atol=1e-12)
        for g, w in zip(grads, own, strict=True):
            torch.testing.assert_close(g[k], w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fast", [True, False])
def test_fast_false_takes_no_acceleration(fast: bool, make_stream, monkeypatch) -> None:
    """``--set fast=false`` runs the reference everywhere: no function of lifelong.fast is
    called by naive, er, ewc (penalty in the loss), si (which reads the gradients), mer,
    la-maml or la-maml+lwf; with ``fast`` on (the default) each of them is."""
    import lifelong.strategies.lookahead as lookahead
    import lifelong.strategies.mer as mer

    import lifelong.fast.closed_form as closed_form

    taken: set[str] = set()
    for module, name in [
        (closed_form, "cross_entropy_grads"),
        (closed_form, "cross_entropy_descent"),
        (closed_form, "compiled_value_and_slopes"),
        (mer, "sample_step"),
        (mer, "compiled_mer_update"),
        (lookahead, "mlp_look_ahead"),
        (lookahead, "in_place_look_ahead"),
        (lookahead, "in_place_update"),
    ]:
        real = getattr(module, name)

        def recorded(*args, _real=real, _name=name, **kwargs):  # type: ignore[no-untyped-def]
            taken.add(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, name, recorded)
    stream = make_stream("domain", n_tasks=2)
    small = {"batch_size": "8", "hidden": "16", "fast": str(fast).lower()}
    for spec, settings in [
        ("naive", {}),
        ("er", {}),
        ("ewc", {"proximal": "false"}),
        ("si", {"proximal": "false"}),
        ("mer", {"batches_per_example": "1"}),
        ("la-maml", {}),
        ("la-maml+lwf", {}),  # a penalty: no closed form, the look-ahead in place
    ]:
        run_one(spec, {**small, **settings}, stream=stream)
    from lifelong.fast.mer_kernel import kernel

    # the compiled kernels are asked first (they decline where numba is missing); MER's
    # single-sample steps by hand run where its kernel declined
    everything = {"cross_entropy_grads", "cross_entropy_descent", "mlp_look_ahead"}
    everything |= {"in_place_look_ahead", "in_place_update"}
    everything |= {"compiled_mer_update", "compiled_value_and_slopes"}
    if kernel().compiled is None:
        everything.add("sample_step")
    assert taken == (everything if fast else set())


@pytest.mark.parametrize("reads", [False, None])
def test_a_regularizer_reading_gradients_gets_them_unless_it_declares_it_does_not(reads) -> None:
    """A plug-in regularizer whose ``observe`` reads the step's gradients: by default
    (``reads_gradients`` not declared: True) the step forms them (autograd's, up to
    rounding); declared False, the plain step forms none and reading one is refused in one
    line naming the declaration."""
    from dataclasses import dataclass
    from typing import ClassVar

    from lifelong import ContractError, QuadraticRegularizer
    from lifelong.composition.compose import Composite

    @dataclass
    class Reading(QuadraticRegularizer):  # quadratic (none yet), so the loss stays bare
        name: ClassVar[str] = "reading"

        def setup(self, model, info, generator):  # type: ignore[no-untyped-def]
            self.seen = []

        def quadratic(self):  # type: ignore[no-untyped-def]
            return None

        def observe(self, params, grads):  # type: ignore[no-untyped-def]
            self.seen.append(grads["head.weight"].clone())

    if reads is not None:
        Reading.reads_gradients = reads  # type: ignore[misc]
    composite = Composite(learner=Sgd(lr=0.3), regularizers=(Reading(),))
    composite.setup(model((5,)), StreamInfo(3, "domain", 3, 1, 2), torch.Generator())
    (reading,) = composite.regularizers
    assert composite.minimised.closed_form is not None  # the default MLP: in closed form
    assert composite.descends() is (reads is False)
    if reads is False:
        with pytest.raises(ContractError, match="reads_gradients = True"):
            composite.train_step(batch(5, 0))
        return
    composite.train_step(batch(5, 0))
    net = model((5,))
    loss = F.cross_entropy(net(batch(5, 0).x), batch(5, 0).y)
    want = torch.autograd.grad(loss, net.head.weight)[0]
    torch.testing.assert_close(reading.seen[0], want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spec", ["mir+cosine", "ewc+cosine"])
def test_a_head_that_replaces_the_output_layer_ends_the_closed_form(spec: str, make_stream) -> None:
    """The cosine head swaps the MLP's output layer for its own: the model no longer
    declares closed-form gradients, so MIR's scoring and EWC's Fisher take their
    references (the accelerations once read the cosine layer as a Linear one), and the
    run with ``fast`` on is the run with it off."""
    from lifelong.strategies.cosine import CosineHead

    from lifelong.fast import has_closed_form

    model = MLP(6, [5], 3)
    assert has_closed_form(model)
    CosineHead().prepare(model, StreamInfo(2, "class", 3, 1, 6), torch.Generator().manual_seed(0))
    assert not has_closed_form(model)
    stream = make_stream("class", n_tasks=2)
    small = {"batch_size": "8", "hidden": "16", **({"replay.size": "20"} if "mir" in spec else {})}
    runs = [
        run_one(spec, {**small, "fast": fast}, stream=stream).matrix for fast in ("true", "false")
    ]
    assert runs[0] == runs[1]


@pytest.mark.parametrize("hidden", [(100, 100), (16,), (32, 8, 8)])
def test_mlp_logits_are_the_models_on_other_weights_bit_for_bit(hidden) -> None:
    """``mlp_logits`` (iCaRL's and BiC's old network) equals ``functional_call`` of the
    model on the same weights exactly: the same operators."""
    from torch.func import functional_call

    from lifelong.fast import mlp_logits

    torch.manual_seed(0)
    model = MLP(784, hidden, 10)
    weights = {n: torch.randn_like(p) * 0.1 for n, p in model.named_parameters()}
    for rows in (1, 40, 64):
        x = torch.rand(rows, 1, 28, 28)
        with torch.no_grad():
            expected = functional_call(model, weights, (x,))
        assert torch.equal(mlp_logits(list(weights.values()), x), expected)
