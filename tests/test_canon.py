"""The replay and gradient canon of issue 19 (GEM, MIR, GSS, ER-ACE, X-DER, herding as
the memory's selection) and Meta-SGD:
each algorithm's distinctive rule on a case built by hand, and each against naive on a
small Split-MNIST class-incremental run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F
from helpers import finite_differences, run_one, tiny_mlp
from lifelong.strategies import gem, gss, meta_sgd, mir
from lifelong.strategies.er_ace import ace_mask, asymmetric_loss
from lifelong.strategies.herding import herding
from lifelong.strategies.replay import Reservoir
from lifelong.strategies.sgd import Sgd
from lifelong.strategies.xder import rewrite
from torch import Tensor, nn

from lifelong import (
    Batch,
    Composite,
    Init,
    Replay,
    StreamInfo,
    TrainingData,
    UserError,
    compose,
)
from lifelong.composition.compose import configure
from lifelong.contracts.parts import Objective
from lifelong.models.mlp import MLP
from lifelong.training.functional import Params, loss_fn, params_of

EPS = 1e-6
CPU = torch.device("cpu")


def batch(x: list[list[float]], y: list[int], task: int = 0) -> Batch:
    xs = torch.tensor(x, dtype=torch.float32)
    return Batch(xs, torch.tensor(y), torch.full((len(y),), task), task)


# GEM ---------------------------------------------------------------------------------


def conflicting(seed: int, t: int = 4, p: int = 12) -> tuple[Tensor, Tensor]:
    """Past-task gradients ``[t, p]`` and an incoming gradient that violates some of them."""
    g = torch.Generator().manual_seed(seed)
    memories = torch.randn(t, p, generator=g, dtype=torch.float64)
    incoming = -memories[0] - 0.5 * memories[1] + 0.3 * torch.randn(p, generator=g)
    return memories, incoming.double()


@pytest.mark.parametrize("solver", ["quadprog", "torch"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gem_projection_satisfies_every_past_task_constraint(seed: int, solver: str) -> None:
    memories, g = conflicting(seed)
    assert (memories @ g).min() < -0.5  # the case violates a constraint before projecting
    z = gem.project(g, memories, margin=0.0, solver=solver)
    v = gem.solve_dual(memories @ memories.T, memories @ g, 0.0, solver)
    # KKT: G z = lambda - eps v with lambda >= 0, so only the ridge eps may leave it short.
    assert (memories @ z).min() >= -gem.EPS * float(v.max()) - 1e-9
    assert torch.linalg.vector_norm(z - g) < torch.linalg.vector_norm(g)  # the closest, not 0


def test_gem_solvers_agree() -> None:
    memories, g = conflicting(3)
    for margin in (0.0, 0.5):
        a = gem.solve_dual(memories @ memories.T, memories @ g, margin, "quadprog")
        b = gem.solve_dual(memories @ memories.T, memories @ g, margin, "torch")
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
        assert float(a.min()) >= margin - 1e-9


def test_gem_learner_steps_along_the_plain_gradient_without_conflict() -> None:
    model = MLP(2, (), 2)
    params = dict(model.named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}
    learner = gem.Gem(lr=0.5)
    learner.setup(params, _info(2, 2), torch.Generator())

    def objective(p: Params, b: Batch, replay: object) -> Tensor:
        return F.cross_entropy(torch.func.functional_call(model, p, (b.x, b.task_ids)), b.y)

    incoming = batch([[1.0, 0.0]], [0], task=1)
    past = batch([[1.0, 0.0]], [0], task=0)  # the same sample: gradients agree
    grads = {n: g.clone() for n, g in _grads(objective, params, incoming).items()}
    learner.step(params, incoming, Replay(past, torch.zeros(1, 2)), Objective(objective))
    for n, p in params.items():
        torch.testing.assert_close(p.detach(), before[n] - 0.5 * grads[n])


def _grads(objective: Callable[..., Tensor], params: Params, b: Batch) -> Params:
    value = objective(params, b, None)
    return dict(zip(params, torch.autograd.grad(value, list(params.values())), strict=True))


def zero_linear() -> MLP:
    """A linear model 2 -> 2 with zero weights: every prediction is (0.5, 0.5)."""
    model = MLP(2, (), 2)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model


def _info(n_outputs: int, input_dim: int, n_tasks: int = 2) -> StreamInfo:
    return StreamInfo(n_tasks, "class", n_outputs, 1, input_dim)


# MIR ---------------------------------------------------------------------------------


def test_mir_retrieves_the_samples_whose_loss_rises_most() -> None:
    """An incoming batch of class 0 along x1: a virtual step lifts class 0 wherever x1 is
    large, so the stored class-1 samples with the largest x1 interfere most; those along
    x2 not at all."""
    model = zero_linear()
    params = dict(model.named_parameters())
    incoming = batch([[1.0, 0.0], [1.0, 0.0]], [0, 0], task=1)
    stored = batch([[0.0, 1.0], [3.0, 0.0], [0.0, 2.0], [2.0, 0.0], [1.0, 0.0]], [1] * 5)
    scores = mir.interference(model, params, incoming, stored, lr=0.1)
    # By hand: theta_v = theta - lr * grad; the candidates' loss there minus now.
    loss = F.cross_entropy(model(incoming.x, None), incoming.y)
    grads = torch.autograd.grad(loss, list(params.values()))
    virtual = {n: p - 0.1 * g for (n, p), g in zip(params.items(), grads, strict=True)}
    after = F.cross_entropy(
        torch.func.functional_call(model, virtual, (stored.x, None)), stored.y, reduction="none"
    )
    before = F.cross_entropy(model(stored.x, None), stored.y, reduction="none")
    torch.testing.assert_close(scores, (after - before).detach())
    assert mir.most_interfered(scores, 2).tolist() == [1, 3]

    memory = Reservoir(size=5, batch=2, retrieve="mir", candidates=5)
    memory.setup(_info(2, 2), torch.device("cpu"), torch.Generator().manual_seed(0))
    memory.bind(model, params)
    memory.add(stored, None)
    replay = memory.sample_for(incoming)
    assert replay is not None
    assert sorted(replay.batch.x[:, 0].tolist()) == [2.0, 3.0]  # x1 = 3 and 2: rows 1 and 3
    # on the MLP, the scoring's forward passes travel with the replay, for the step to take
    assert replay.activations is not None
    assert replay.activations.hold(incoming, replay, list(params.values()))


def test_mir_and_gss_memories_do_not_stack_over_seeds() -> None:
    assert Reservoir().stackable
    assert not Reservoir(retrieve="mir").stackable and not Reservoir(select="gss").stackable
    assert not Reservoir(per_task=True).stackable


# GSS ---------------------------------------------------------------------------------


def test_gss_keeps_the_most_gradient_diverse_samples() -> None:
    """A full memory of one sample's copies: a sample whose gradient opposes theirs
    (score 0) always takes a slot; one whose gradient is theirs (score 2) never does."""
    model = zero_linear()
    params = dict(model.named_parameters())
    memory = Reservoir(size=4, batch=4, select="gss", candidates=4)
    memory.setup(_info(2, 2), torch.device("cpu"), torch.Generator().manual_seed(0))
    memory.bind(model, params)
    memory.add(batch([[1.0, 0.0]] * 4, [0] * 4), None)
    same, opposite = batch([[1.0, 0.0]], [0]), batch([[1.0, 0.0]], [1])
    grads = gss.sample_gradients(model, params, batch([[1.0, 0.0], [1.0, 0.0]], [0, 1]))
    assert F.cosine_similarity(grads[0], grads[1], dim=0) == pytest.approx(-1.0)
    for _ in range(5):
        memory.add(same, None)
    assert memory.y[:4].tolist() == [0, 0, 0, 0]  # aligned with the memory: never stored
    memory.add(opposite, None)
    assert memory.y[:4].tolist().count(1) == 1  # opposed to every stored gradient: stored
    assert memory.scores[:4].min() == 0.0  # with its score, max cos + 1 = 0


def test_gss_scores_are_max_cosine_plus_one() -> None:
    g = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    stored = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    expected = torch.tensor([2.0, 1 + 2**-0.5, 1 - 2**-0.5])
    torch.testing.assert_close(gss.similarity_scores(g, stored), expected)


def test_gss_and_a_balanced_memory_are_refused_together() -> None:
    with pytest.raises(UserError, match="balanced=true and select=gss"):
        configure("gss", {"replay.balanced": "true"})


# Herding as the memory's selection ---------------------------------------------------


def test_herding_memory_keeps_icarls_exemplars_chosen_at_each_tasks_end() -> None:
    """``replay.select=herding``: nothing stored while a task trains; at its end each class
    seen keeps ``size // classes`` samples, the task's classes herding's picks over their
    features and the old ones their first picks, with the model's logits at that end."""
    torch.manual_seed(0)
    model = MLP(4, (3,), 4)
    params = dict(model.named_parameters())
    memory = Reservoir(size=6, batch=6, select="herding")
    memory.setup(StreamInfo(2, "class", 4, 1, 4), CPU, torch.Generator().manual_seed(0))
    memory.bind(model, params)
    x = torch.randint(0, 255, (20, 4), dtype=torch.uint8)

    def task(t: int, rows: slice, labels: list[int]) -> TrainingData:
        y = torch.tensor(labels * 5)
        return TrainingData(t, f"t{t}", x[rows], y, torch.full_like(y, t))

    first = task(0, slice(0, 10), [0, 1])
    memory.add(Batch(x[:10].float() / 255, first.y, first.task_ids, 0), None)
    assert len(memory) == 0 and memory.sample() is None  # chosen at the task's end only
    memory.after_task(first)
    assert len(memory) == 6 and sorted(memory.y[:6].tolist()) == [0, 0, 0, 1, 1, 1]
    floats = x[:10].float() / 255
    for c in (0, 1):
        rows = torch.nonzero(first.y == c).flatten()
        with torch.no_grad():
            feats = F.normalize(model.body(floats[rows]), dim=1)
        picked = floats[rows[herding(feats, 3)]]
        torch.testing.assert_close(memory.x[:6][memory.y[:6] == c], picked)  # herding's order
    with torch.no_grad():
        torch.testing.assert_close(memory.logits[:6], model(memory.x[:6], None))
    kept = memory.x[:6][memory.y[:6] == 0][:1].clone()

    memory.after_task(task(1, slice(10, 20), [2, 3]))
    assert len(memory) == 4 and sorted(memory.y[:4].tolist()) == [0, 1, 2, 3]  # 6 // 4 each
    torch.testing.assert_close(memory.x[:4][memory.y[:4] == 0], kept)  # the first pick stays
    replay = memory.sample()
    assert replay is not None and sorted(replay.batch.y.tolist()) == [0, 1, 2, 3]


class NormedNet(nn.Module):
    """A model with batch norm in its body: features and logits depend on its mode."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU())
        self.head = nn.Linear(3, 4)
        self.feature_dim = 3

    def forward(self, x: Tensor, task_ids: Tensor | None = None) -> Tensor:
        return self.head(self.body(x))


def test_herding_memory_reads_the_model_as_it_predicts_and_leaves_it_training() -> None:
    torch.manual_seed(0)
    model = NormedNet()
    memory = Reservoir(size=4, batch=4, select="herding")
    memory.setup(StreamInfo(1, "class", 4, 1, 4), CPU, torch.Generator().manual_seed(0))
    memory.bind(model, dict(model.named_parameters()))
    norm = model.body[1]
    assert isinstance(norm, nn.BatchNorm1d)
    norm.running_mean.fill_(0.3)  # statistics a training mode pass would move
    y = torch.tensor([0, 1] * 5)
    x = torch.randint(0, 255, (10, 4), dtype=torch.uint8)
    memory.after_task(TrainingData(0, "t0", x, y, torch.zeros_like(y)))
    assert model.training and torch.equal(norm.running_mean, torch.full((3,), 0.3))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(memory.logits[:4], model(memory.x[:4]))  # eval-mode answers


def test_herding_memory_composes_and_is_refused_where_it_cannot_work(make_stream) -> None:
    la_maml, _ = configure("la-maml", {"replay.select": "herding"})  # one line
    assert isinstance(la_maml.memory, Reservoir) and la_maml.memory.needs_boundaries
    with pytest.raises(UserError, match="balanced=true and select=herding"):
        configure("er", {"replay.select": "herding", "replay.balanced": "true"})
    memory = Reservoir(select="herding")
    memory.setup(_info(2, 4), CPU, torch.Generator())
    with pytest.raises(UserError, match="select=herding needs the model's features") as caught:
        memory.bind(nn.Linear(4, 2), dict(nn.Linear(4, 2).named_parameters()))
    assert "\n" not in str(caught.value)
    stream = make_stream("class")
    small = {"batch_size": "8", "hidden": "16", "replay.select": "herding"}
    result = run_one("er", small, stream=stream)
    assert len(result.matrix) == len(stream.tasks) and result.metrics["acc"] > 0.5


# ER-ACE and X-DER ---------------------------------------------------------------------


def test_er_ace_masks_the_old_classes_absent_from_the_batch() -> None:
    """Seen 0-3, batch of 2 and 3: the logits of 0 and 1 are masked, the batch's classes
    and the unseen 4-9 are kept; no gradient reaches a masked logit."""
    present = torch.zeros(10, dtype=torch.bool)
    present[[2, 3]] = True
    seen = present.clone()
    seen[[0, 1]] = True
    keep = ace_mask(present, seen)
    assert torch.nonzero(~keep).flatten().tolist() == [0, 1]
    logits = torch.randn(4, 10, requires_grad=True)
    y = torch.tensor([2, 3, 2, 3])
    (grad,) = torch.autograd.grad(asymmetric_loss(logits, y, keep), logits)
    assert (grad[:, :2] == 0).all() and (grad[:, 2:].abs().sum(0) > 0).all()
    (plain,) = torch.autograd.grad(F.cross_entropy(logits, y), logits)
    assert (plain[:, :2] != 0).all()  # the plain cross-entropy would push them down


def test_x_der_rewrites_heads_below_the_true_logit() -> None:
    old = torch.tensor([[2.0, 0.0, 9.0, 9.0], [2.0, 0.0, 9.0, 9.0]])
    new = torch.tensor([[0.0, 0.0, 4.0, 1.0], [0.0, 0.0, 1.0, 0.5]])
    out = rewrite(old, new, torch.tensor([0, 0]), slice(2, 4), gamma=0.5)
    # Row 0's transplant (max 4 > true logit 2) is scaled by 0.5 * 2 / 4; row 1's is kept.
    torch.testing.assert_close(out, torch.tensor([[2.0, 0.0, 1.0, 0.25], [2.0, 0.0, 1.0, 0.5]]))


# Meta-SGD ----------------------------------------------------------------------------


class FixedTasks:
    """A task source that always gives the same batches (for finite differences)."""

    def __init__(self, support: Batch, query: Batch) -> None:
        self.support, self.query = support, query

    def sample_task(self, g: torch.Generator) -> int:
        return 0

    def sample(self, task: int, n: int, g: torch.Generator) -> Batch:
        return self.support if n == 4 else self.query


def _data(n: int, seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return Batch(x, torch.randint(0, 2, (n,), generator=g), torch.zeros(n, dtype=torch.long), 0)


def test_meta_sgd_meta_gradient_matches_finite_differences() -> None:
    model = tiny_mlp()
    theta = params_of(model)
    g = torch.Generator().manual_seed(1)
    alpha = {
        n: (0.05 + 0.3 * torch.rand(p.shape, generator=g, dtype=p.dtype)).requires_grad_()
        for n, p in theta.items()
    }
    support, query = _data(4, 2), _data(6, 3)
    init = meta_sgd.MetaSgdInit(inner_steps=2, inner_batch=4, query_size=6)
    loss = loss_fn(model)
    grads = init.task_gradient(loss, theta, alpha, FixedTasks(support, query), g)

    def f() -> Tensor:
        return meta_sgd.adapted_loss(loss, theta, alpha, [support, support], query)

    for tensors, prefix in ((theta, ""), (alpha, meta_sgd.RATES)):
        for name, expected in finite_differences(f, tensors, EPS).items():
            actual = grads[prefix + name]
            assert actual.flatten().tolist() == pytest.approx(
                expected.flatten().tolist(), rel=1e-5, abs=1e-8
            ), name


@dataclass
class Rates(Init):
    """An init that gives fixed per-parameter rates (as meta-sgd does after meta-training)."""

    name = "fixed-rates"
    rates: Params = field(default_factory=dict)

    def prepare(self, model: nn.Module, info: StreamInfo, generator: torch.Generator) -> None:
        return None

    def gives_rates(self) -> bool:
        return True

    def learning_rates(self) -> Params:
        return self.rates


@pytest.mark.parametrize("shift", [0.0, 0.5])
def test_sgd_steps_each_weight_at_the_rate_the_init_learned(shift: float) -> None:
    """``theta -= relu(alpha) * grad``. Was (shift 0.5, some rates negative): a negative
    rate stepped up the gradient, and over a stream's hundreds of steps meta-sgd diverged
    (Rotated-MNIST class-IL, Split-MNIST domain-IL, batch 10)."""
    model = MLP(3, (4,), 2)
    rates = {n: torch.rand(p.shape) - shift for n, p in model.named_parameters()}
    composite = Composite(learner=Sgd(lr=0.1), init=Rates(rates))
    composite.setup(model, _info(2, 3), torch.Generator().manual_seed(0))
    b = Batch(torch.rand(5, 3), torch.tensor([0, 1, 0, 1, 1]), torch.zeros(5, dtype=torch.long), 0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = composite.learner.step(composite.params, b, None, composite.minimised).grads
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), before[n] - rates[n].clamp_min(0) * grads[n])
        assert bool((p.detach()[rates[n] < 0] == before[n][rates[n] < 0]).all())


def test_a_head_that_replaces_the_output_layer_steps_at_the_learners_own_rate() -> None:
    """Rates an init learnt for the model's own output layer stay with it: the cosine head
    that replaces it steps at ``sgd.lr``; the body keeps its rates. Was: the cosine head's
    normalised weights took the linear layer's rates (cosine+meta-sgd left every
    permutation of the small Permuted-MNIST check below its floor, task-IL [0.341, 0.316,
    0.331])."""
    from lifelong.strategies.cosine import CosineHead
    from lifelong.strategies.lamaml import LaMaml

    model = MLP(3, (4,), 2)
    rates = {n: torch.full_like(p, 0.01) for n, p in model.named_parameters()}
    composite = Composite(learner=Sgd(lr=0.1), init=Rates(rates), head=CosineHead())
    composite.setup(model, _info(2, 3), torch.Generator().manual_seed(0))
    stepped = composite.learner.rates
    assert stepped is not None
    assert {n for n in stepped if n.startswith("head.")} == {"head.weight", "head.sigma"}
    for name, rate in stepped.items():
        expected = 0.1 if name.startswith("head.") else 0.01
        assert bool((rate == expected).all()), name
    # La-MAML starts its rates alpha at the init's, the head's at its own alpha_init
    look_ahead = Composite(learner=LaMaml(), init=Rates(rates), head=CosineHead())
    look_ahead.memory = Reservoir()
    look_ahead.setup(MLP(3, (4,), 2), _info(2, 3), torch.Generator().manual_seed(0))
    learner = look_ahead.learner
    assert isinstance(learner, LaMaml)
    for name, alpha in learner.alpha.items():
        expected = learner.alpha_init if name.startswith("head.") else 0.01
        assert bool((alpha == expected).all()), name


@pytest.mark.slow  # meta-trains Meta-SGD at its defaults
def test_meta_sgd_learns_rotated_mnist_class_incremental() -> None:
    from test_learning import real_diagonal, real_floor

    status, diagonal, chance = real_diagonal("meta-sgd", "rotated-mnist", "class")
    assert status == "ok"
    assert min(diagonal) >= real_floor(chance), diagonal


def test_an_init_with_rates_needs_a_learner_that_takes_them() -> None:
    with pytest.raises(UserError, match="does not take; use sgd or la-maml") as error:
        compose("meta-sgd+agem")
    assert "\n" not in str(error.value)
    composite = compose("meta-sgd+la-maml")
    assert composite.learner.takes_rates


# Against naive -----------------------------------------------------------------------

SMALL = {"samples_per_task": "200", "hidden": "64"}


@pytest.mark.parametrize(
    "strategy", ["er-ace", "x-der", "gem", "mir", pytest.param("gss", marks=pytest.mark.slow)]
)
def test_each_beats_naive_on_small_split_mnist_class_il(strategy: str) -> None:
    naive = run_one("naive", SMALL)
    other = run_one(strategy, SMALL)
    assert other.metrics["acc"] > naive.metrics["acc"] + 0.1, (other.metrics, naive.metrics)


def test_shortcuts_carry_their_memory_settings_and_a_set_wins() -> None:
    mir_memory = compose("mir").memory
    assert isinstance(mir_memory, Reservoir)
    assert (mir_memory.retrieve, mir_memory.batch, mir_memory.select) == ("mir", 10, "reservoir")
    both = compose("mir+gss").memory
    assert isinstance(both, Reservoir) and (both.retrieve, both.select) == ("mir", "gss")
    configured, _ = configure("mir", {"replay.batch": "32"})
    assert isinstance(configured.memory, Reservoir)
    assert (configured.memory.retrieve, configured.memory.batch) == ("mir", 32)
    la_maml, _ = configure("la-maml", {"replay.retrieve": "mir"})  # one line
    assert isinstance(la_maml.memory, Reservoir) and la_maml.memory.retrieve == "mir"
    assert la_maml.memory.batch == 10  # La-MAML's declared replay batch
