"""The head axis (linear, ncm, cosine) and the class-incremental methods built on features:
each one's distinctive rule on a hand-built case, the compositions, the refusals, and
(slow) each method against naive on Split-MNIST class-IL."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from helpers import crashing_at_task, plan_one, run_one
from lifelong.strategies.bic import bias_corrected
from lifelong.strategies.cosine import CosineHead
from lifelong.strategies.herding import Exemplars, herding
from lifelong.strategies.ncm import NearestMean
from lifelong.strategies.protonet import prototypical_loss
from lifelong.strategies.scr import supcon_loss
from torch import nn

from lifelong import Batch, Composite, StreamInfo, TrainingData, UserError, compose
from lifelong.composition.compose import configure
from lifelong.contracts.stream import training_data
from lifelong.execution.runner import execute
from lifelong.execution.vectorized import vectorizable
from lifelong.models.mlp import MLP

CPU = torch.device("cpu")
SMALL = {"batch_size": "8", "eval_every": "0", "hidden": "16"}


def info(n_outputs: int = 3, n_heads: int = 1, input_dim: int = 2) -> StreamInfo:
    return StreamInfo(3, "class", n_outputs, n_heads, input_dim)


class Identity(nn.Module):
    """A model whose features are its inputs (``feature_dim`` 2) and whose logits are zero."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Identity()
        self.head = nn.Linear(2, 3)
        self.feature_dim = 2
        self.n_outputs, self.n_heads = 3, 1

    def forward(self, x: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.body(x))


class NoBody(nn.Module):
    def __init__(self, input_dim: int, n_outputs: int) -> None:
        super().__init__()
        self.net = nn.Linear(input_dim, n_outputs)

    def forward(self, x: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x)


def batch(x: list[list[float]], y: list[int], task: int = 0) -> Batch:
    ys = torch.tensor(y)
    return Batch(torch.tensor(x, dtype=torch.float32), ys, torch.full_like(ys, task), task)


# herding


def test_herding_picks_the_samples_whose_mean_is_closest_to_the_class_mean() -> None:
    feats = torch.tensor([[0.0], [10.0], [4.0], [6.0], [5.5]])  # mean 5.1
    assert herding(feats, 1).tolist() == [4]  # 5.5 is nearest the mean
    # then the one that brings the mean of two closest to 5.1: (5.5 + 4) / 2 = 4.75 vs
    # (5.5 + 6) / 2 = 5.75: 4 is picked; then 6 ((5.5 + 4 + 6) / 3 = 5.17)
    assert herding(feats, 3).tolist() == [4, 2, 3]
    assert herding(feats, 9).tolist()[:3] == [4, 2, 3] and len(herding(feats, 9)) == 5


def test_herding_beats_a_random_choice_at_matching_the_mean() -> None:
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(200, 8, generator=g) + torch.linspace(0, 3, 200)[:, None]
    chosen = feats[herding(feats, 10)].mean(0)
    random = feats[torch.randperm(200, generator=g)[:10]].mean(0)
    target = feats.mean(0)
    assert (chosen - target).norm() < 0.5 * (random - target).norm()


def test_exemplars_keep_an_equal_share_per_class_in_herding_order() -> None:
    model = MLP(4, (3,), 4)
    memory = Exemplars(6)
    memory.setup(4, CPU)
    x = torch.randint(0, 255, (20, 4), dtype=torch.uint8)

    def first(x, y, task_ids):
        return TrainingData(int(task_ids[0]), "t", x, y, task_ids)

    memory.update(model, first(x[:10], torch.tensor([0, 1] * 5), torch.zeros(10, dtype=torch.long)))
    assert sorted(memory.y.tolist()) == [0, 0, 0, 1, 1, 1]
    before = memory.x[memory.y == 0][:2].clone()
    memory.update(model, first(x[10:], torch.tensor([2, 3] * 5), torch.ones(10, dtype=torch.long)))
    assert sorted(memory.y.tolist()) == [0, 1, 2, 3]  # 6 // 4 classes = 1 each
    assert torch.equal(memory.x[memory.y == 0], before[:1])  # the first exemplar stays


# ncm


def test_the_ncm_head_predicts_the_nearest_prototype() -> None:
    model, head = Identity(), NearestMean(normalize=False)
    head.prepare(model, info(), torch.Generator())
    head.observe(
        model, batch([[0, 0], [0, 2], [10, 0], [10, 2]], [0, 0, 1, 1])
    )  # means (0,1), (10,1)
    scores = head.predict(model, torch.tensor([[1.0, 1.0], [8.0, 0.0]]), torch.zeros(2), None)
    assert scores.argmax(1).tolist() == [0, 1]
    assert scores[0, 0].item() == pytest.approx(-1.0)  # -||(1,1) - (0,1)||^2
    assert scores[0, 2].item() == torch.finfo(scores.dtype).min  # class 2: no prototype


def test_a_target_shared_by_tasks_keeps_a_prototype_per_task() -> None:
    """Domain-incremental: targets 0 and 1 at (0, 0) and (0, 2) in task 0, at (0, 10) and
    (0, 12) in task 1. One mean per target, (0, 5) and (0, 7), would give (0, 1.8) target 0
    and (0, 10.2) target 1; each target's nearest prototype gives 1 and 0."""
    model, head = Identity(), NearestMean(normalize=False)
    head.prepare(model, StreamInfo(2, "domain", 2, 1, 2), torch.Generator())
    head.observe(model, batch([[0, 0], [0, 2]], [0, 1], task=0))
    head.observe(model, batch([[0, 10], [0, 12]], [0, 1], task=1))
    x = torch.tensor([[0.0, 1.8], [0.0, 10.2]])
    scores = head.predict(model, x, torch.zeros(2, dtype=torch.long), None)
    assert scores.argmax(1).tolist() == [1, 0]


def test_the_memory_s_class_means_replace_the_running_means() -> None:
    model, head = Identity(), NearestMean(normalize=False)
    head.prepare(model, info(), torch.Generator())
    head.observe(model, batch([[0, 0], [10, 0]], [0, 1]))
    stored = batch([[9, 0], [11, 0]], [0, 0])  # the memory says class 0 lives at (10, 0)
    scores = head.predict(model, torch.tensor([[9.5, 0.0]]), torch.zeros(1), stored)
    means, known = head.prototypes(model, stored)
    assert means[0].tolist() == [10.0, 0.0]  # task 0's prototypes, then tasks 1 and 2's
    assert known.tolist() == [True, True, False] + [False] * 6
    assert scores[0, 0] == scores[0, 1]  # both prototypes at (10, 0)


def test_ncm_normalises_features_and_means_by_default() -> None:
    model, head = Identity(), NearestMean()
    head.prepare(model, info(), torch.Generator())
    head.observe(model, batch([[1, 0], [100, 0], [0, 3]], [0, 0, 1]))
    means, _ = head.prototypes(model, None)
    assert torch.allclose(means[:2], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    scores = head.predict(model, torch.tensor([[50.0, 1.0]]), torch.zeros(1), None)
    assert scores.argmax(1).item() == 0  # by direction, not by distance


def test_ncm_reads_only_the_sample_s_own_head_with_several_heads() -> None:
    model, head = Identity(), NearestMean(normalize=False)
    head.prepare(model, StreamInfo(2, "task", 2, 2, 2), torch.Generator())
    ids = torch.tensor([0, 0, 1, 1])
    head.observe(
        model,
        Batch(torch.tensor([[0.0, 0], [5, 0], [1, 0], [6, 0]]), torch.tensor([0, 1, 0, 1]), ids, 0),
    )
    scores = head.predict(model, torch.tensor([[4.0, 0.0], [4.0, 0.0]]), torch.tensor([0, 1]), None)
    assert scores.shape == (2, 2)
    assert scores[0].tolist() == [-16.0, -1.0] and scores[1].tolist() == [-9.0, -4.0]


# cosine


def test_the_cosine_head_s_logits_are_scale_times_cosine() -> None:
    model = MLP(5, (4,), 3)
    CosineHead(scale=3.0).prepare(model, info(input_dim=5), torch.Generator().manual_seed(0))
    x = torch.rand(6, 5)
    f = model.body(x)
    expected = 3.0 * F.normalize(f, dim=1) @ F.normalize(model.head.weight, dim=1).T
    assert torch.allclose(model(x), expected, atol=1e-6)
    names = {n for n, _ in model.named_parameters() if n.startswith("head.")}
    assert names == {"head.weight", "head.sigma"}  # the scale learns


def test_er_cosine_trains_the_scale_and_takes_no_closed_form(make_stream) -> None:
    stream = make_stream("class")
    spec = plan_one("er+cosine", {**SMALL, "cosine.scale": "2.0"})
    strategy = dataclasses.replace(spec.strategy)
    model = MLP(stream.input_dim, (16,), stream.n_outputs, stream.n_heads)
    strategy.setup(model, StreamInfo.of(stream, spec.scenario), torch.Generator().manual_seed(0))
    assert "head.sigma" in strategy.params and strategy.minimised.closed_form is None
    data = training_data(stream.tasks[0])
    strategy.train_step(Batch(data.x[:8].float() / 255, data.y[:8], data.task_ids[:8], 0))
    assert model.head.sigma.item() != 2.0
    assert "cosine" in vectorizable(plan_one("er+cosine", SMALL))


# composition and the default


def test_linear_is_today_s_behaviour_bit_for_bit(make_stream) -> None:
    stream = make_stream("class")
    plain = execute(plan_one("er", SMALL), stream, CPU)
    named = execute(plan_one("er+linear", SMALL), stream, CPU)
    assert named.matrix == plain.matrix and named.curves == plain.curves
    assert vectorizable(plan_one("er+linear", SMALL)) == ""


@pytest.mark.parametrize("spec", ["er+ncm", "oml+er+ncm", "la-maml+ncm", "protonet+er+ncm"])
def test_the_head_composes(spec: str) -> None:
    composite = compose(spec)
    assert isinstance(composite.head, NearestMean) and composite.name == spec


def test_two_heads_are_refused() -> None:
    with pytest.raises(UserError, match="two heads"):
        compose("er+ncm+cosine")


def test_prototypes_from_a_memory_are_refused_where_there_is_none(capsys) -> None:
    from lifelong.cli import main

    with pytest.raises(UserError, match="keeps none") as caught:
        configure("protonet+ncm", {"ncm.from_memory": "true"})
    assert "\n" not in str(caught.value)
    assert configure("protonet+er+ncm", {"ncm.from_memory": "true"})[0].head.from_memory
    assert not configure("protonet+ncm", {"ncm.from_memory": "false"})[0].head.from_memory
    assert configure("ncm", {})[0].memory is None  # the default: running means, no refusal
    argv = ["run", "split-mnist", "-s", "protonet+ncm", "--set", "ncm.from_memory=true"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "ncm.from_memory=true" in err


def test_ncm_without_a_memory_uses_running_means(make_stream) -> None:
    stream = make_stream("class")
    result = execute(plan_one("ncm", SMALL), stream, CPU)
    assert result.matrix[0][0] > 0.9  # the running means classify the first task


@pytest.mark.parametrize("spec", ["er+ncm", "er+cosine", "scr", "protonet+ncm"])
def test_a_head_that_needs_features_refuses_a_model_without_body(spec: str) -> None:
    strategy = plan_one(spec, SMALL).strategy
    model = NoBody(784, 10)
    with pytest.raises(UserError, match="no 'body'") as caught:
        if isinstance(strategy, Composite):
            assert strategy.head is not None
            strategy.head.check(model, info(10, input_dim=784))
        strategy.setup(model, info(10, input_dim=784), torch.Generator())
    assert "\n" not in str(caught.value)


def test_whole_strategies_take_the_replay_memory_s_settings() -> None:
    for name in ("icarl", "lucir", "bic", "scr"):
        strategy = plan_one(name, {"replay.size": "50"}).strategy
        assert strategy.size == 50  # type: ignore[attr-defined]


# the methods' own rules


def test_bic_s_correction_touches_only_the_new_classes_logits() -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    new = torch.tensor([False, False, True, True])
    out = bias_corrected(logits, [(new, torch.tensor(0.5), torch.tensor(-1.0))])
    assert out.tolist() == [[1.0, 2.0, 0.5, 1.0]]


def test_supcon_loss_matches_its_formula_on_a_hand_built_case() -> None:
    z = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.2], [0.0, 1.0]]), dim=1)
    y = torch.tensor([0, 0, 1])
    t = 0.5
    sim = z @ z.T / t
    # anchors 0 and 1 each have one positive; anchor 2 none (left out of the mean)
    a0 = -(sim[0, 1] - torch.logsumexp(sim[0, [1, 2]], 0))
    a1 = -(sim[1, 0] - torch.logsumexp(sim[1, [0, 2]], 0))
    assert supcon_loss(z, y, t).item() == pytest.approx(((a0 + a1) / 2).item(), rel=1e-6)


def test_the_prototypical_loss_is_cross_entropy_over_negative_squared_distances() -> None:
    support = torch.tensor([[0.0, 0.0], [2.0, 0.0], [10.0, 0.0]])
    sy = torch.tensor([0, 0, 1])  # prototypes (1, 0) and (10, 0)
    query, qy = torch.tensor([[1.0, 1.0]]), torch.tensor([0])
    logits = torch.tensor([[-1.0, -82.0]])
    expected = F.cross_entropy(logits, qy)
    assert prototypical_loss(support, sy, query, qy).item() == pytest.approx(expected.item())


def test_icarl_predicts_by_the_nearest_mean_of_exemplars(make_stream) -> None:
    stream = make_stream("class")
    spec = plan_one("icarl", {**SMALL, "replay.size": "6"})
    strategy = dataclasses.replace(spec.strategy)
    model = MLP(stream.input_dim, (16,), stream.n_outputs, stream.n_heads)
    strategy.setup(model, StreamInfo.of(stream, spec.scenario), torch.Generator().manual_seed(0))
    data = training_data(stream.tasks[0])
    strategy.before_task(data)
    strategy.train_step(Batch(data.x[:8].float() / 255, data.y[:8], data.task_ids[:8], 0))
    strategy.after_task(data)
    x = data.x[:5].float() / 255
    expected = strategy.ncm.predict(model, x, data.task_ids[:5], strategy.exemplars.batch())
    assert torch.equal(strategy.predict(x, data.task_ids[:5]), expected)
    assert len(strategy.exemplars) == 6


# each method against naive on real data


@pytest.mark.slow
@pytest.mark.parametrize(
    "spec", ["icarl", "lucir", "bic", "scr", "er+ncm", "er+cosine", "protonet+ncm"]
)
def test_each_method_beats_naive_on_split_mnist_class_il(spec: str) -> None:
    settings = {"protonet.meta_steps": "100"} if "protonet" in spec else {}
    naive = run_one("naive")
    ours = run_one(spec, settings)
    assert _acc(ours) > _acc(naive) + 0.15


def _acc(result) -> float:
    last = result.matrix[-1]
    return sum(last) / len(last)


@pytest.mark.parametrize("spec", ["icarl", "lucir", "bic", "scr", "er+ncm", "er+cosine"])
def test_a_resumed_run_gives_the_uninterrupted_result(tmp_path, monkeypatch, spec: str) -> None:
    """Exemplars, prototypes, bias stages and a replaced output layer all reach the
    checkpoint (taken at task boundaries) and come back."""
    import warnings

    warnings.simplefilter("error")  # a resume that fell back to a fresh start would warn
    plan = plan_one(spec, {"samples_per_task": "64", "eval_every": "0", "hidden": "16"}, seed=3)
    stream = plan.scenario.build(3)
    whole = execute(plan, stream, CPU)
    checkpoint = tmp_path / "run.pt"
    with crashing_at_task(3), pytest.raises(KeyboardInterrupt):
        execute(plan, stream, CPU, checkpoint=checkpoint)
    assert execute(plan, stream, CPU, checkpoint=checkpoint).matrix == whole.matrix


def test_the_command_line_refuses_two_heads_in_one_line(capsys) -> None:
    from lifelong.cli import main

    assert main(["run", "split-mnist", "-s", "er+ncm+cosine"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "two heads (ncm and cosine)" in err


# protonet


def _protonet_setup(**fields):
    from lifelong.scenarios.split import SplitScenario
    from lifelong.strategies.protonet import ProtoNetInit

    scenario = SplitScenario(samples_per_task=40)
    stream = scenario.build(0)
    info = StreamInfo.of(stream, scenario, 0)
    torch.manual_seed(0)
    model = MLP(stream.input_dim, (16,), stream.n_outputs, stream.n_heads)
    return ProtoNetInit(source="permuted", **fields), model, info


def test_protonet_freezes_its_meta_trained_body_and_caches_it_once(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LIFELONG_CACHE", str(tmp_path))
    init, model, info = _protonet_setup(meta_steps=3)
    learns = init.prepare(model, info, torch.Generator())
    assert learns == {"head.weight", "head.bias"}
    assert {n for n, p in model.named_parameters() if p.requires_grad} == learns
    free, other, _ = _protonet_setup(meta_steps=3, freeze=False)
    assert free.prepare(other, info, torch.Generator()) is None  # every weight learns
    pairs = zip(model.parameters(), other.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    assert len(list(tmp_path.rglob("*.pt"))) == 1  # freeze acts on the stream only


def test_protonet_meta_training_lowers_the_prototypical_loss() -> None:
    from lifelong.strategies.protonet import _embed

    from lifelong.meta.meta_tasks import meta_tasks

    init, model, info = _protonet_setup(meta_steps=60)
    tasks = meta_tasks(info.scenario, info, 0, None, source="permuted")

    def loss(params) -> float:
        body = {n: p for n, p in params.items() if n.startswith("body.")}
        g = torch.Generator().manual_seed(5)
        total = 0.0
        for task in range(len(tasks.tasks)):
            s, q = tasks.sample(task, 40, g), tasks.sample(task, 40, g)
            with torch.no_grad():
                total += prototypical_loss(
                    _embed(model, body, s.x), s.y, _embed(model, body, q.x), q.y
                ).item()
        return total

    one_step, _, _ = _protonet_setup(meta_steps=1)  # (nearly) the seeded start
    start = one_step.meta_trained_weights(model, tasks, seed=0)
    trained = init.meta_trained_weights(model, tasks, seed=0)
    assert loss(trained) < 0.8 * loss(start)


def _pool(task_classes, transforms=None):
    """A meta-task pool whose images carry their dataset label in every pixel."""
    from lifelong.meta.meta_tasks import MetaTask, MetaTaskSource

    labels = torch.arange(6).repeat_interleave(5)
    images = (labels * 10).to(torch.uint8)[:, None, None].expand(-1, 28, 28).contiguous()
    tasks, pools = [], {}
    for i, classes in enumerate(task_classes):
        lookup = torch.full((6,), -1)
        lookup[list(classes)] = torch.arange(len(classes))
        transform = transforms[i] if transforms else None
        tasks.append(MetaTask(tuple(classes), tuple(range(len(classes))), 0, lookup, transform))
        for key in [tuple(classes), *((c,) for c in classes)]:
            pools[key] = torch.isin(labels, torch.tensor(key)).nonzero().squeeze(1)
    return MetaTaskSource("test", "test", "", images, labels, tuple(tasks), pools, 2)


def test_a_protonet_episode_gathers_distinct_classes_from_the_pools_tasks() -> None:
    """Was: an episode was one pool task, two classes on Split-MNIST, where the paper
    trains with more classes than it tests (ncm+protonet's last domain-IL task at chance)."""
    from lifelong.strategies.protonet import episode

    pool = _pool([(0, 1), (1, 2), (2, 3), (4, 5), (0, 5)])
    for ways, expected in [(4, 4), (10, 6), (1, 2)]:
        sx, sy, qx, qy = episode(pool, ways, 3, 2, torch.Generator().manual_seed(ways))
        assert (len(sx), len(qx)) == (3 * expected, 2 * expected)
        assert sorted(set(sy.tolist())) == list(range(expected)) == sorted(set(qy.tolist()))
        labels, x = torch.cat([sy, qy]), torch.cat([sx, qx])
        digits = (x[:, 0] * 255 / 10).round().long()
        pairs = set(zip(labels.tolist(), digits.tolist(), strict=True))
        assert len(pairs) == expected == len({d for _, d in pairs})  # one digit per class
    flip = lambda x: 255 - x  # noqa: E731
    twice = _pool([(0, 1), (0, 1)], [None, flip])  # the same digits, transformed apart
    _, sy, _, _ = episode(twice, 10, 3, 2, torch.Generator())
    assert sorted(set(sy.tolist())) == [0, 1, 2, 3]


def test_running_means_are_kept_when_the_memory_is_not_asked_and_protonet_says_so() -> None:
    model, head = Identity(), NearestMean(normalize=False, from_memory=False)
    head.prepare(model, info(), torch.Generator())
    head.observe(model, batch([[0, 0], [10, 0]], [0, 1]))
    means, _ = head.prototypes(model, batch([[9, 0], [11, 0]], [0, 0]))
    assert means[0].tolist() == [0.0, 0.0]  # the memory's samples are not read
    composed = compose("protonet+er+ncm").head
    assert isinstance(composed, NearestMean) and not composed.from_memory
    assert compose("er+ncm").head.from_memory  # type: ignore[union-attr]


@pytest.mark.parametrize("spec", ["cosine+meta-sgd", "cosine+la-maml+meta-sgd", "adam+cosine"])
def test_cosine_head_composes_with_learned_rates_and_adam(spec: str, make_stream) -> None:
    """Was: meta-sgd's rates cover the model's weights, not the cosine head's sigma (a
    KeyError in sgd and la-maml); adam's lr-sized steps left sigma near 1 and the third
    class-IL task at 0.0 (adam now starts the head's scale at 10)."""
    from test_learning import check_learns

    check_learns(spec, make_stream("class", per_class=16))
