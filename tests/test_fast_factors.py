"""The acceleration ``lifelong.fast.sample_factors`` (per-sample gradients of the MLP kept as
layer factors) against its references: GEM's per-task gradients, GSS's cosine scores, MIR's
interference and ER-ACE's step, each equal to autograd's within 1e-10 in float64; the
forward passes MIR's scoring hands to the step; and ``fast=false`` takes none of them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from helpers import run_one
from lifelong.strategies import gss, mir
from lifelong.strategies.er_ace import ErAce
from lifelong.strategies.gem import Gem

from lifelong import (
    Batch,
    Objective,
    Replay,
    StreamInfo,
    UnformedGradients,
    fisher_diagonal,
    fisher_labels,
)
from lifelong.composition.compose import configure
from lifelong.fast import (
    Activations,
    ClosedForm,
    GemGradients,
    Interference,
    MlpCosines,
    ace_gradients,
    fisher_by_hand,
    gem_gradients,
    interference,
    sample_factors,
)
from lifelong.fast.sample_factors import _GemLayout
from lifelong.models.mlp import MLP

TOL = {"rtol": 1e-10, "atol": 1e-10}


def grouped_gradients(
    weights: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, sizes: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """GEM's pass on rows ``x``, ``y`` grouped by ``sizes`` (fresh buffers): each row's loss
    ``[N]`` and each group's mean gradient ``[G, P]``."""
    layout = _GemLayout(weights, sizes, x)
    layout.x.copy_(x)
    layout.y.copy_(y)
    losses, out = layout.run()
    return losses.squeeze(1), out


def model(hidden: tuple[int, ...] = (5, 4)) -> MLP:
    torch.manual_seed(0)
    return MLP(6, hidden, 3).to(torch.float64)


def batch(n: int, seed: int, tasks: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=g)
    return Batch(x, y, torch.randint(0, tasks, (n,), generator=g), tasks - 1)


def per_sample(net: MLP, data: Batch, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Autograd, one sample at a time: ``[N, P]``."""
    rows = []
    for i in range(len(data.y)):
        logits = net(data.x[i : i + 1])
        if keep is not None:
            logits = logits.masked_fill(~keep[i], torch.finfo(logits.dtype).min)
        loss = F.cross_entropy(logits, data.y[i : i + 1])
        rows.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, net.parameters())]))
    return torch.stack(rows)


@pytest.fixture
def float64_default() -> Iterator[None]:
    """Float64 by default (the memory's buffers too) for the whole test."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


@pytest.mark.parametrize("hidden", [(), (5,), (5, 4)])
@pytest.mark.parametrize("masked", [False, True])
def test_factors_give_each_samples_gradient_and_their_inner_products(
    hidden: tuple[int, ...], masked: bool
) -> None:
    net, data = model(hidden), batch(7, 1)
    keep = None
    if masked:  # ER-ACE's mask: each sample keeps its own class and one other
        keep = F.one_hot(data.y, 3).bool() | F.one_hot((data.y + 1) % 3, 3).bool()
    want = per_sample(net, data, keep)
    factors = sample_factors(list(net.parameters()), data.x, data.y, keep)
    layers = zip(factors.inputs, factors.errors, strict=True)
    got = torch.cat(
        [torch.cat([(d[:, :, None] * a[:, None]).flatten(1), d], 1) for a, d in layers], 1
    )
    torch.testing.assert_close(got, want, **TOL)
    shares = torch.linspace(0.1, 1.0, 7, dtype=torch.float64)
    weighted = sample_factors(list(net.parameters()), data.x, data.y, keep, shares)
    summed = torch.cat([g.flatten() for g in weighted.summed()])
    torch.testing.assert_close(summed, shares @ want, **TOL)
    other = sample_factors(list(net.parameters()), batch(4, 2).x, batch(4, 2).y)
    want_other = per_sample(net, batch(4, 2))
    torch.testing.assert_close(factors.dots(other), want @ want_other.T, **TOL)
    torch.testing.assert_close(factors.norms(), want.norm(dim=1), **TOL)


def gem_steps(by_hand: bool, batches: list[Batch], replay: Replay) -> dict[str, torch.Tensor]:
    """GEM's weights after a step on each of ``batches`` with ``replay``, by hand (the
    composite's closed-form objective) or by the reference (autograd)."""
    composite, _ = configure("gem", {"lr": 0.3})
    composite.setup(model(), StreamInfo(3, "class", 3, 1, 6), torch.Generator().manual_seed(1))
    learner = composite.learner
    assert isinstance(learner, Gem)
    objective = composite.minimised if by_hand else Objective(composite.objective)
    assert (objective.closed_form is not None) is by_hand
    for data in batches:
        learner.step(composite.params, data, replay, objective)
    return {n: p.detach().clone() for n, p in composite.params.items()}


def test_gem_per_task_gradients_match_one_backward_per_task() -> None:
    """GEM's incoming and past-task gradients by hand (one pass) equal the reference's
    (the objective with no closed form), and so do three steps."""
    batches = [batch(5, seed, tasks=3) for seed in range(3)]
    replay = Replay(batch(30, 5, tasks=3), torch.zeros(30, 3))  # the whole memory
    moved = [gem_steps(by_hand, batches, replay) for by_hand in (True, False)]
    for name in moved[0]:
        torch.testing.assert_close(moved[0][name], moved[1][name], **TOL)

    net, memory = model(), batch(30, 5, tasks=3)
    arriving = batch(5, 7, tasks=3)
    incoming = Batch(arriving.x, arriving.y, torch.full_like(arriving.y, 1), 1)  # task 1's
    weights = [p.detach() for p in net.parameters()]
    loss = F.cross_entropy(net(incoming.x), incoming.y)
    rows = [torch.cat([g.flatten() for g in torch.autograd.grad(loss, net.parameters())])]
    for t in (0, 2):  # the memory's tasks other than the batch's, in increasing order
        mine = memory.task_ids == t
        past = F.cross_entropy(net(memory.x[mine]), memory.y[mine])
        rows.append(torch.cat([g.flatten() for g in torch.autograd.grad(past, net.parameters())]))
    found = gem_gradients(weights, incoming, memory)
    assert found is not None
    got_loss, got, tasks = found
    assert tasks == [0, 2]
    torch.testing.assert_close(got_loss, loss.detach(), **TOL)
    torch.testing.assert_close(got, torch.stack(rows), **TOL)
    only_own = Batch(memory.x, memory.y, torch.full_like(memory.y, 1), 1)
    assert gem_gradients(weights, incoming, only_own) is None  # no past task: no rows


def test_gem_takes_a_drawn_replays_rows_from_the_memory_as_its_gathered_batch() -> None:
    """GEM's pass on a replay drawn from a memory (its rows, gathered once, grouped by
    task) equals, bit for bit, the pass on the replay batch those rows gather; the drawn
    replay's batch is that gather; a task id below 0 is refused in one line."""
    net, memory = model(), batch(30, 5, tasks=3)
    weights = [p.detach() for p in net.parameters()]
    incoming = batch(5, 7, tasks=3)
    rows = torch.randperm(30, generator=torch.Generator().manual_seed(3))[:24]
    drawn = Replay.drawn(memory, torch.zeros(30, 3), rows)
    gathered = Batch(memory.x[rows], memory.y[rows], memory.task_ids[rows], memory.task)
    assert torch.equal(drawn.batch.x, gathered.x) and torch.equal(drawn.batch.y, gathered.y)
    assert torch.equal(drawn.batch.task_ids, gathered.task_ids)
    assert drawn.batch is drawn.batch  # gathered once
    from_rows = gem_gradients(weights, incoming, memory, rows)
    from_batch = gem_gradients(weights, incoming, gathered)
    assert from_rows is not None and from_batch is not None
    assert torch.equal(from_rows[0], from_batch[0]) and torch.equal(from_rows[1], from_batch[1])
    assert from_rows[2] == from_batch[2] == [0, 1]
    wrong = Batch(memory.x, memory.y, memory.task_ids - 1, memory.task)
    with pytest.raises(ValueError, match="task ids are non-negative; the memory holds -1"):
        gem_gradients(weights, incoming, wrong)


def test_gem_steps_on_a_drawn_replay_as_on_the_batch_it_gathers() -> None:
    """GEM's step on a drawn replay (its rows, read through ``Replay.source``) moves the
    weights exactly as on the gathered replay batch, and with rows of the current task
    only (no past task) as the plain gradient step."""
    memory, incoming = batch(30, 5, tasks=3), [batch(5, seed, tasks=3) for seed in range(2)]
    rows = torch.randperm(30, generator=torch.Generator().manual_seed(3))[:24]
    gathered = Batch(memory.x[rows], memory.y[rows], memory.task_ids[rows], memory.task)
    drawn = gem_steps(True, incoming, Replay.drawn(memory, torch.zeros(30, 3), rows))
    plain = gem_steps(True, incoming, Replay(gathered, torch.zeros(24, 3)))
    assert all(torch.equal(drawn[n], plain[n]) for n in drawn)
    own = Batch(memory.x, memory.y, torch.full_like(memory.y, 2), 2)  # the batches' task
    alone = gem_steps(True, incoming, Replay.drawn(own, torch.zeros(30, 3), rows))
    unconstrained = gem_steps(True, incoming, Replay(own, torch.zeros(30, 3)))
    assert all(torch.equal(alone[n], unconstrained[n]) for n in alone)


def test_gem_gradients_kept_buffers_equal_a_fresh_pass_and_follow_the_layout() -> None:
    """A run's GemGradients reuses its buffers while the layout holds (the same weights,
    batch size and past tasks' counts) and rebuilds them when it changes; every call
    gives what a fresh gem_gradients gives, bit for bit, also after the weights moved in
    place (its views follow them)."""
    torch.manual_seed(0)
    net = MLP(6, (5, 4), 3)
    weights = [p.detach() for p in net.parameters()]
    kept = GemGradients()

    def memory(counts: list[int], seed: int) -> Batch:
        g = torch.Generator().manual_seed(seed)
        ids = torch.cat([torch.full((c,), t) for t, c in enumerate(counts)])
        ids = ids[torch.randperm(len(ids), generator=g)]
        x, y = torch.randn(len(ids), 6, generator=g), torch.randint(0, 3, (len(ids),), generator=g)
        return Batch(x, y, ids, len(counts))

    def incoming(n: int, seed: int, task: int) -> Batch:
        g = torch.Generator().manual_seed(100 + seed)
        x, y = torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)
        return Batch(x, y, torch.full((n,), task), task)

    cases = [
        ((4, [5, 5, 5, 2]), 3),
        ((4, [5, 5, 5, 2]), 3),
        ((4, [5, 5, 5, 2]), 3),
        ((6, [5, 5, 5]), 3),
        ((4, [5, 3, 5, 0]), 3),
        ((4, [5, 5]), 1),
    ]
    layouts = []
    for step, ((n, counts), task) in enumerate(cases):
        batch, stored = incoming(n, step, task), memory(counts, step)
        got = kept(weights, batch, stored)
        fresh = gem_gradients(weights, batch, stored)
        assert got is not None and fresh is not None
        assert torch.equal(got[0], fresh[0]) and torch.equal(got[1], fresh[1])
        assert got[2] == fresh[2]
        layouts.append(kept.layout)
        with torch.no_grad():  # the weights move in place, as a step moves them
            for w in weights:
                w.add_(0.01)
    assert layouts[0] is layouts[1] is layouts[2]  # one layout through a task
    assert len({id(layout) for layout in layouts}) == 4  # then one per change
    assert kept(weights, incoming(4, 9, 0), memory([3], 9)) is None  # no past task
    others = [w.clone() for w in weights]  # other weights: a layout of their own
    batch, stored = incoming(4, 10, 1), memory([5, 0], 10)
    before = kept.layout
    got, fresh = kept(others, batch, stored), gem_gradients(others, batch, stored)
    assert kept.layout is not before and got is not None and fresh is not None
    assert torch.equal(got[1], fresh[1])
    wide = Batch(stored.x.double(), stored.y, stored.task_ids, stored.task)  # float64 rows
    got = kept(others, batch, wide)
    assert got is not None and torch.equal(got[1], fresh[1])


@pytest.mark.parametrize(
    ("sizes", "shape"),
    [
        ([4, 6, 6, 6], (6, (5, 4), 3)),
        ([4, 6], (6, (5, 4), 3)),
        ([4, 6, 3, 5], (6, (5, 4), 3)),
        ([3, 1, 1], (6, (5, 4), 3)),
        ([32, 40, 40, 40, 40], (784, (100, 100), 10)),  # the bench's GEM at 4 past tasks
    ],
)
def test_gem_grouped_products_equal_each_groups_own_product(
    sizes: list[int], shape: tuple[int, tuple[int, ...], int]
) -> None:
    """Each group's gradient (batched in one ``bmm`` per layer where the groups after the
    first are of one size) is the product of its own rows' factors, bit for bit on the
    CPU in float32 (what keeps GEM's runs the same from commit to commit; the default
    MLP's sizes take the library's blocked products, the small ones its plain loop), and
    within 1e-6 the mean gradient of the group's samples by autograd."""
    net = MLP(*shape)
    weights = [p.detach() for p in net.parameters()]
    g = torch.Generator().manual_seed(3)
    x = torch.randn(sum(sizes), shape[0], generator=g)
    y = torch.randint(0, shape[2], (sum(sizes),), generator=g)
    losses, out = grouped_gradients(weights, x, y, sizes)
    shares = torch.cat([torch.full((size,), 1.0 / size) for size in sizes])
    every = sample_factors(weights, x, y, shares=shares)
    assert torch.equal(losses, every.losses)
    start = 0
    for group, size in enumerate(sizes):
        rows = slice(start, start + size)
        layers = zip(every.inputs, every.errors, strict=True)
        own = torch.cat(
            [t.flatten() for a, d in layers for t in (d[rows].t() @ a[rows], d[rows].sum(0))]
        )
        assert torch.equal(out[group], own), group
        mean = F.cross_entropy(net(x[rows]), y[rows])
        by_autograd = torch.cat([t.flatten() for t in torch.autograd.grad(mean, net.parameters())])
        torch.testing.assert_close(out[group], by_autograd, rtol=1e-6, atol=1e-6)
        start += size


@pytest.mark.parametrize("spec", ["gem", "gem+replay+si"])
def test_gem_hands_its_gradient_to_a_part_that_reads_it(spec: str) -> None:
    """With SI in the composite (it reads each step's gradient) GEM's step hands over the
    incoming batch's gradient before the projection; with nothing that reads it, the
    by-hand step forms none for the caller (an empty UnformedGradients)."""
    composite, _ = configure(spec, {"lr": 0.3})
    composite.setup(model(), StreamInfo(3, "class", 3, 1, 6), torch.Generator().manual_seed(1))
    learner = composite.learner
    assert isinstance(learner, Gem)
    incoming = batch(5, 7, tasks=3)
    replay = Replay(batch(30, 5, tasks=3), torch.zeros(30, 3))
    net = composite.model
    loss = F.cross_entropy(net(incoming.x), incoming.y)
    want = torch.autograd.grad(loss, net.parameters())
    step = learner.step(composite.params, incoming, replay, composite.minimised)
    if spec == "gem":
        assert isinstance(step.grads, UnformedGradients) and not step.grads
        return
    assert list(step.grads) == list(composite.params)
    kept = {name: grad.clone() for name, grad in step.grads.items()}
    for got, expected in zip(step.grads.values(), want, strict=True):
        torch.testing.assert_close(got, expected, **TOL)
    learner.step(composite.params, batch(5, 8, tasks=3), replay, composite.minimised)
    for name, grad in step.grads.items():  # not a view of buffers the next step rewrites
        assert torch.equal(grad, kept[name])


def test_gem_follows_weights_given_new_storage() -> None:
    """Weights given new storage after setup (``p.data = ...``) are the ones GEM's by-hand
    step reads and moves: its steps equal a fresh learner's on the same weights."""
    replay = Replay(batch(30, 5, tasks=3), torch.zeros(30, 3))
    moved = []
    for swap in (False, True):
        composite, _ = configure("gem", {"lr": 0.3})
        composite.setup(model(), StreamInfo(3, "class", 3, 1, 6), torch.Generator().manual_seed(1))
        learner = composite.learner
        learner.step(composite.params, batch(5, 7, tasks=3), replay, composite.minimised)
        if swap:
            for p in composite.model.parameters():
                p.data = p.data.clone()
        learner.step(composite.params, batch(5, 8, tasks=3), replay, composite.minimised)
        moved.append([p.detach().clone() for p in composite.model.parameters()])
    for a, b in zip(*moved, strict=True):
        assert torch.equal(a, b)


def test_gem_projected_steps_by_hand_match_the_reference(monkeypatch) -> None:
    """Where the memory's gradients conflict with the batch's (the memory holds the batch's
    inputs with other labels), every step is projected, by hand as by the reference."""
    import lifelong.strategies.gem as gem

    projected: list[int] = []

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        projected.append(1)
        return real(*args, **kwargs)

    real = gem.project
    monkeypatch.setattr(gem, "project", counted)
    incoming = batch(6, 3, tasks=3)
    incoming = Batch(incoming.x, incoming.y, torch.full((6,), 2), 2)
    memory = Batch(incoming.x, (incoming.y + 1) % 3, torch.tensor([0, 1] * 3), 2)
    replay = Replay(memory, torch.zeros(6, 3))
    moved = [gem_steps(by_hand, [incoming] * 3, replay) for by_hand in (True, False)]
    assert len(projected) == 6  # three steps each way, every one projected
    for name in moved[0]:
        torch.testing.assert_close(moved[0][name], moved[1][name], **TOL)


def test_gss_cosines_by_hand_match_the_per_sample_gradients() -> None:
    net = model()
    params = dict(net.named_parameters())
    stored, incoming = batch(10, 3), batch(9, 4)
    reference = gss.Cosines(net, params, stored)
    fast = MlpCosines(list(params.values()), stored)
    torch.testing.assert_close(fast.batch_score(incoming), reference.batch_score(incoming), **TOL)
    torch.testing.assert_close(
        fast.sample_scores(incoming), reference.sample_scores(incoming), **TOL
    )


def test_mir_interference_by_hand_matches_the_virtual_step() -> None:
    net = model()
    params = dict(net.named_parameters())
    incoming, candidates = batch(8, 6), batch(12, 7)
    want = mir.interference(net, params, incoming, candidates, lr=0.5)
    got = interference(list(params.values()), incoming, candidates, lr=0.5)
    torch.testing.assert_close(got.scores, want, **TOL)


def test_mir_scoring_hands_the_step_its_forward_pass_while_the_weights_are_unchanged() -> None:
    """The forward passes MIR's scoring keeps are the step's own (its rows joined with the
    chosen candidates), so the step from them moves the weights as the step that runs its
    own; they are used while no weight has changed in place, and ignored after or for other
    rows."""
    incoming, candidates = batch(8, 6), batch(12, 7)

    def scored() -> tuple[MLP, dict[str, torch.Tensor], Interference]:
        net = model()
        params = dict(net.named_parameters())
        return net, params, interference(list(params.values()), incoming, candidates, lr=0.5)

    net, params, first = scored()
    chosen = first.scores.topk(4).indices
    rows = Batch(*(t[chosen] for t in (candidates.x, candidates.y, candidates.task_ids)), 0)
    ahead = first.activations(chosen, rows)
    x = torch.cat([incoming.x, rows.x])
    with torch.no_grad():
        torch.testing.assert_close(ahead.hidden[0], torch.relu(net.body[0](x)), **TOL)
        torch.testing.assert_close(ahead.logits, net(x), **TOL)

    closed = ClosedForm(tuple(params))
    zeros = torch.zeros(len(chosen), 3, dtype=torch.float64)
    own_loss = closed.descend(params, incoming, Replay(rows, zeros), lr=0.3)  # runs its own
    own = {n: p.detach().clone() for n, p in params.items()}

    _, params, again = scored()
    loss = closed.descend(
        params, incoming, Replay(rows, zeros, again.activations(chosen, rows)), 0.3
    )
    torch.testing.assert_close(loss, own_loss, **TOL)
    for n, p in params.items():
        torch.testing.assert_close(p.detach(), own[n], **TOL)

    def wrong(run: Interference) -> Activations:
        taken = run.activations(chosen, rows)
        hidden, logits = tuple(h + 1 for h in taken.hidden), taken.logits + 1
        return Activations(hidden, logits, taken.rows, taken.versions)

    _, params, used = scored()
    closed.descend(params, incoming, Replay(rows, zeros, wrong(used)), lr=0.3)
    assert not torch.equal(params["head.weight"].detach(), own["head.weight"])  # taken

    _, params, elsewhere = scored()
    other = Batch(rows.x.clone(), rows.y, rows.task_ids, 0)  # equal rows, another tensor
    closed.descend(params, incoming, Replay(other, zeros, wrong(elsewhere)), lr=0.3)
    for n, p in params.items():
        torch.testing.assert_close(p.detach(), own[n], **TOL)  # not the step's rows: ignored

    _, params, stale = scored()
    with torch.no_grad():
        for p in params.values():
            p.add_(0.0)  # no value changes, but every weight is written in place
    closed.descend(params, incoming, Replay(rows, zeros, wrong(stale)), lr=0.3)
    for n, p in params.items():
        torch.testing.assert_close(p.detach(), own[n], **TOL)  # ignored: its own pass


@pytest.mark.parametrize("replayed", [False, True])
def test_er_ace_gradients_by_hand_match_autograd(replayed: bool) -> None:
    net, data, stored = model(), batch(8, 8), batch(5, 9)
    keep = torch.tensor([True, False, True])  # the batch shows classes 0 and 2
    data = Batch(data.x, data.y.masked_fill(data.y == 1, 2), data.task_ids, data.task)
    loss = F.cross_entropy(net(data.x).masked_fill(~keep, torch.finfo(torch.float64).min), data.y)
    if replayed:
        loss = loss + F.cross_entropy(net(stored.x), stored.y)
    want = torch.autograd.grad(loss, list(net.parameters()))
    got_loss, got = ace_gradients(list(net.parameters()), data, keep, stored if replayed else None)
    torch.testing.assert_close(got_loss, loss.detach(), **TOL)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, **TOL)


def test_er_ace_steps_by_hand_match_its_reference(float64_default: None) -> None:
    """Steps across a task switch (the mask on) move the weights as autograd's do."""
    nets = []
    for fast in (True, False):
        strategy, net = ErAce(lr=0.3, size=6, batch=3), model()
        info = StreamInfo(2, "class", 3, 1, 6, fast=fast)
        strategy.setup(net, info, torch.Generator().manual_seed(2))
        assert strategy.closed_form is fast
        for seed in range(4):
            data = batch(5, seed)
            task = int(seed >= 2)
            strategy.train_step(Batch(data.x, data.y, torch.full_like(data.y, task), task))
        nets.append(net)
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("kind", ["empirical", "true"])
@pytest.mark.parametrize("hidden", [(), (5, 4)])
def test_fisher_by_hand_is_the_reference_bit_for_bit(kind: str, hidden: tuple[int, ...]) -> None:
    """EWC's Fisher diagonal by hand equals :func:`lifelong.fisher_diagonal`'s (forward
    hooks and autograd) exactly, in float32, for the empirical and the sampled labels."""
    torch.manual_seed(0)
    net = MLP(6, hidden, 3)
    params = dict(net.named_parameters())
    data = batch(200, 3)
    data = Batch(data.x.float() * 4, data.y, data.task_ids, 0)  # confident and wrong alike
    reference = fisher_diagonal(net, params, data, kind, torch.Generator().manual_seed(1))
    labelled = fisher_labels(net, params, data, kind, torch.Generator().manual_seed(1))
    by_hand = fisher_by_hand(list(params.values()), labelled.x, labelled.y)
    for (name, want), got in zip(reference.items(), by_hand, strict=True):
        assert torch.equal(want, got), name


def test_ewc_takes_each_fisher_when_the_next_task_begins_and_none_for_the_last(
    make_stream, monkeypatch
) -> None:
    """The Fisher of a task that ended is taken when the next one begins, at the weights
    it ended with: a run makes one fewer than it has tasks, and its numbers are those
    of taking each at once (the penalty read right after the task)."""
    import lifelong.strategies.ewc as ewc

    made: list[int] = []
    real = ewc.fisher_by_hand

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(ewc, "fisher_by_hand", counted)
    stream = make_stream("class", n_tasks=3)
    small = {"batch_size": "8", "hidden": "16", "proximal": "false"}
    lazy = run_one("ewc", small, stream=stream)
    assert len(made) == 2

    eager = ewc.Ewc.after_task

    def at_once(self, params, data):  # type: ignore[no-untyped-def]
        eager(self, params, data)
        self.quadratic()  # reading the penalty consolidates now

    monkeypatch.setattr(ewc.Ewc, "after_task", at_once)
    made.clear()
    assert run_one("ewc", small, stream=stream).matrix == lazy.matrix
    assert len(made) == 3


@pytest.mark.parametrize("fast", [True, False])
def test_fast_false_takes_none_of_them(fast: bool, make_stream, monkeypatch) -> None:
    """``--set fast=false`` runs gem, er-ace, mir, gss and ewc's Fisher on their
    references; with ``fast`` on each takes its acceleration."""
    import lifelong.strategies.er_ace as er_ace
    import lifelong.strategies.ewc as ewc
    import lifelong.strategies.gem as gem
    import lifelong.strategies.replay as replay

    taken: set[str] = set()
    gem_pass = gem.GemGradients.__call__

    def gem_recorded(*args, **kwargs):  # type: ignore[no-untyped-def]
        taken.add("gem_gradients")
        return gem_pass(*args, **kwargs)

    monkeypatch.setattr(gem.GemGradients, "__call__", gem_recorded)
    for module, name in [
        (er_ace, "ace_gradients"),
        (replay, "fast_interference"),
        (replay, "MlpCosines"),
        (ewc, "fisher_by_hand"),
    ]:
        real = getattr(module, name)

        def recorded(*args, _real=real, _name=name, **kwargs):  # type: ignore[no-untyped-def]
            taken.add(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, name, recorded)
    stream = make_stream("class", n_tasks=2)
    small = {"batch_size": "8", "hidden": "16", "fast": str(fast).lower()}
    for spec in ("gem", "er-ace", "mir", "gss", "ewc"):
        memory = spec in ("gem", "mir", "gss")
        run_one(spec, {**small, "replay.size": "20"} if memory else small, stream=stream)
    everything = {
        "gem_gradients",
        "ace_gradients",
        "fast_interference",
        "MlpCosines",
        "fisher_by_hand",
    }
    assert taken == (everything if fast else set())
