"""Unit tests of the parts: reservoir memory, EWC, A-GEM projection, SI, MAS, LwF, DER."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from lifelong.strategies.agem import project
from lifelong.strategies.replay import reservoir_slots, reservoir_slots_on_device
from torch.func import functional_call

from lifelong import (
    Batch,
    ContractError,
    Replay,
    StreamInfo,
    TrainingData,
    UserError,
    detached,
    fisher_diagonal,
    gradient_importance,
    quadratic_penalty,
)
from lifelong.composition.plan import plan_runs
from lifelong.composition.registry import parts
from lifelong.models.mlp import MLP

INFO = StreamInfo(n_tasks=5, setting="class", n_outputs=10, n_heads=1, input_dim=3)


def reservoir(size: int, seed: int, info: StreamInfo = INFO, **fields: object):
    memory = parts()["replay"](size=size, **fields)
    memory.setup(info, torch.device("cpu"), torch.Generator().manual_seed(seed))
    return memory


def positions(start: int, n: int, label: int = 0, task: int = 0) -> Batch:
    """``n`` samples whose first input coordinate is their position in the stream."""
    x = torch.arange(start, start + n, dtype=torch.float32)[:, None].repeat(1, 3)
    y = torch.full((n,), label)
    return Batch(x, y, torch.full((n,), task), task)


def test_reservoir_matches_one_by_one_reservoir_sampling() -> None:
    memory = reservoir(size=20, seed=3)
    draws = torch.Generator().manual_seed(3)
    expected = [-1.0] * 20
    seen = 0
    for start in range(0, 300, 16):
        batch = positions(start, 16)
        memory.add(batch, None)
        u = torch.rand(16, generator=draws, dtype=torch.float64)
        for i in range(16):  # Vitter's algorithm R, one sample at a time
            n = seen + i
            slot = n if n < 20 else int(u[i] * (n + 1))
            if slot < 20:
                expected[slot] = float(start + i)
        seen += 16
    assert memory.x[:20, 0].tolist() == expected
    assert len(memory) == 20


@pytest.mark.parametrize(
    ("seen", "size", "n"), [(0, 20, 16), (10, 20, 16), (500, 7, 64), (3, 3, 40)]
)
def test_reservoir_slots_on_the_host_equal_the_device_rule(seen: int, size: int, n: int) -> None:
    """The CPU path's numpy rule and the device path's tensor rule agree slot for slot,
    collisions (two new samples sent to one slot: the last wins) included."""
    draws = torch.rand(n, generator=torch.Generator().manual_seed(seen + n), dtype=torch.float64)
    on_host = reservoir_slots(draws.numpy(), seen, size).tolist()
    assert on_host == reservoir_slots_on_device(draws, seen, size).tolist()
    kept = [s for s in on_host if s < size]
    assert len(kept) == len(set(kept))
    # Several memories at once (a vectorized run's seeds): each row by its own rule.
    rows = torch.rand(4, n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    rows[1] = rows[0]  # two memories drawing alike collide alike, and apart from each other
    on_device = reservoir_slots_on_device(rows, seen, size)
    assert on_device.tolist() == [reservoir_slots(r.numpy(), seen, size).tolist() for r in rows]


def test_reservoir_keeps_a_uniform_sample_of_the_stream() -> None:
    counts = torch.zeros(10)
    runs = 100
    for seed in range(runs):
        memory = reservoir(size=100, seed=seed)
        for start in range(0, 1000, 25):
            memory.add(positions(start, 25), None)
        counts += torch.bincount((memory.x[:100, 0] // 100).long(), minlength=10)
    expected = runs * 100 / 10  # every position is kept with probability 100 / 1000
    assert ((counts - expected).abs() / expected).max() < 0.1, counts


def test_capacity_and_sampling() -> None:
    memory = reservoir(size=30, seed=0, batch=8)
    assert memory.sample() is None and len(memory) == 0
    memory.add(positions(0, 10), torch.ones(10, 10))
    assert len(memory) == 10
    replay = memory.sample()
    assert replay is not None and replay.batch.x.shape == (8, 3) and replay.logits.shape == (8, 10)
    assert len(set(replay.batch.x[:, 0].tolist())) == 8  # without replacement
    assert set(replay.batch.x[:, 0].tolist()) <= set(range(10))
    for start in range(10, 500, 10):
        memory.add(positions(start, 10), None)
    assert len(memory) == 30 and memory.x.shape[0] == 31


def test_a_replay_is_gathered_when_read_and_what_was_read_stays() -> None:
    """The memory's replay keeps the drawn rows and gathers them when first read, once;
    what was read is a copy that the memory's later writes leave alone."""
    memory = reservoir(size=30, seed=0, batch=8)
    memory.add(positions(0, 20), torch.arange(200.0).view(20, 10))
    replay = memory.sample()
    assert replay is not None and replay.rows is not None
    rows = replay.rows
    assert torch.equal(replay.batch.x, memory.x[rows])
    assert torch.equal(replay.batch.y, memory.y[rows])
    assert torch.equal(replay.logits, memory.logits[rows])
    assert replay.batch is replay.batch  # one gather
    before = replay.batch.x.clone()
    memory.x[rows] = -1.0
    assert torch.equal(replay.batch.x, before)
    plain = Replay(replay.batch, None)  # type: ignore[arg-type]  # a memory keeping no logits
    assert plain.logits is None and plain.rows is None
    with pytest.raises(ContractError, match="made with its batch"):
        plain.source()


@pytest.mark.parametrize("written", ["x", "y", "task_ids", "logits"])
def test_a_drawn_replay_read_after_its_memory_was_written_is_refused(written: str) -> None:
    """Any in-place write to the buffers a drawn replay reads (a sample's pixels, label,
    task id or stored logits) makes a later first read an error, not silently new data."""
    memory = reservoir(size=30, seed=0, batch=8)
    memory.add(positions(0, 20), torch.arange(200.0).view(20, 10))
    replay = memory.sample()
    assert replay is not None
    getattr(memory, written)[0] += 1
    with pytest.raises(ContractError, match="read after its memory was written"):
        replay.gather()
    with pytest.raises(ContractError, match="read after its memory was written"):
        replay.source()


def test_the_replay_batch_is_the_streams_batch_size_unless_set() -> None:
    """ER replays as many samples as arrive (its paper's, Mammoth's and Avalanche's
    default); a set ``batch`` wins, and neither exceeds what the memory holds."""
    stream_of_10 = dataclasses.replace(INFO, batch_size=10)
    cases = [({}, INFO, 32), ({}, stream_of_10, 10), ({"batch": 4}, stream_of_10, 4)]
    for fields, info, replayed in cases:
        memory = reservoir(size=50, seed=0, info=info, **fields)
        memory.add(positions(0, 50), None)
        replay = memory.sample()
        assert replay is not None and len(replay.batch.y) == replayed
    small = reservoir(size=6, seed=0, info=stream_of_10)
    small.add(positions(0, 20), None)
    replay = small.sample()
    assert small.replay_rows(10) == 6 and replay is not None and len(replay.batch.y) == 6


def test_a_memory_per_task_keeps_an_equal_uniform_share_of_each_task() -> None:
    """GEM's episodic memories: size // n_tasks rows for each task, after the earlier
    tasks' rows, a uniform sample of the task's samples (not the newest, not the first)."""
    memory = reservoir(size=50, seed=0, per_task=True)  # 5 tasks: 10 rows each
    for task in range(3):
        for start in range(0, 200, 20):
            memory.add(positions(1000 * task + start, 20, task=task), None)
        assert len(memory) == 10 * (task + 1)
        stored = memory.stored()
        assert stored is not None
        assert stored.task_ids.tolist() == [k for k in range(task + 1) for _ in range(10)]
    kept = stored.x[:10, 0]
    assert len(set(kept.tolist())) == 10 and kept.max() >= 100 and kept.min() < 100
    short = reservoir(size=50, seed=0, per_task=True)
    short.add(positions(0, 4, task=0), None)  # a task shorter than its share
    short.add(positions(100, 30, task=1), None)
    assert len(short) == 14 and short.task_ids[:14].tolist() == [0] * 4 + [1] * 10


def test_a_detected_task_past_the_streams_count_shares_the_last_tasks_rows() -> None:
    memory = reservoir(size=50, seed=0, per_task=True)  # 5 tasks of 10 rows
    for task in range(7):  # detected boundaries: two more tasks than the stream has
        memory.add(positions(1000 * task, 30, task=task), None)
    assert len(memory) == 50 and memory.region == 40
    last = memory.task_ids[40:50].tolist()
    assert set(last) <= {4, 5, 6} and 6 in last  # the newest keep arriving
    assert memory.task_ids[:40].tolist() == [k for k in range(4) for _ in range(10)]


def test_a_memory_per_task_needs_the_boundaries_and_one_selection_rule() -> None:
    with pytest.raises(UserError, match="er: its part replay needs the task boundaries"):
        plan_runs("split-mnist", ["er"], [0], {"boundaries": "hidden", "replay.per_task": "true"})
    with pytest.raises(UserError, match="balanced=true and per_task=true are different"):
        parts()["replay"](balanced=True, per_task=True)
    from lifelong.composition.compose import compose

    memory = compose("gem").memory
    assert memory is not None and memory.per_task  # GEM's own memory, declared
    assert not compose("er").memory.per_task  # type: ignore[union-attr]


def test_balanced_memory_keeps_classes_balanced() -> None:
    memory = reservoir(size=60, seed=1, balanced=True)
    uniform = reservoir(size=60, seed=1)
    for label, n in ((0, 400), (1, 100), (2, 40)):  # an imbalanced, class-incremental stream
        for start in range(0, n, 20):
            batch = positions(start, 20, label=label)
            memory.add(batch, None)
            uniform.add(batch, None)
    counts = torch.bincount(memory.y[:60], minlength=3).tolist()
    assert sum(counts) == 60 and max(counts) - min(counts) <= 1, counts
    assert torch.bincount(uniform.y[:60], minlength=3)[0] > 30  # the plain reservoir is not


def small_model(n_heads: int = 1) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = MLP(3, (5,), 4, n_heads)
    return model, dict(model.named_parameters())


def task_data(n: int = 12, task: int = 0) -> TrainingData:
    generator = torch.Generator().manual_seed(task)
    x = torch.randint(0, 256, (n, 3), generator=generator, dtype=torch.uint8)
    y = torch.randint(0, 4, (n,), generator=generator)
    return TrainingData(task, str(task), x, y, torch.full((n,), task))


def shifted(params: dict[str, torch.Tensor], seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        n: p.detach() + 0.1 * torch.randn(p.shape, generator=generator) for n, p in params.items()
    }


def test_empirical_fisher_is_the_mean_squared_per_sample_gradient() -> None:
    model, params = small_model()
    data = task_data()
    batch = Batch(data.x.float() / 255, data.y, data.task_ids, 0)
    fisher = fisher_diagonal(model, params, batch, "empirical", torch.Generator())
    for name, p in params.items():
        by_hand = torch.zeros_like(p)
        for i in range(len(data.y)):
            loss = F.cross_entropy(model(batch.x[i : i + 1]), batch.y[i : i + 1])
            by_hand += torch.autograd.grad(loss, p)[0] ** 2 / len(data.y)
        assert torch.allclose(fisher[name], by_hand, atol=1e-6), name


def by_hand_importance(model, params, batch, kind: str) -> dict[str, torch.Tensor]:
    """Mean per-sample squared (or absolute) cross-entropy gradient, one sample at a time."""
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for i in range(len(batch.y)):
        logits = functional_call(model, params, (batch.x[i : i + 1], batch.task_ids[i : i + 1]))
        loss = F.cross_entropy(logits, batch.y[i : i + 1])
        for n, g in zip(params, torch.autograd.grad(loss, list(params.values())), strict=True):
            total[n] += g.pow(2) if kind == "square" else g.abs()
    return {n: t / len(batch.y) for n, t in total.items()}


def summed_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="sum")


@pytest.mark.parametrize("kind", ["square", "abs"])
@pytest.mark.parametrize("learns", ["all", "head only"])
def test_one_pass_importance_of_linear_layers_equals_per_sample_gradients(
    kind: str, learns: str
) -> None:
    torch.manual_seed(0)
    model = MLP(6, (5, 4), 3, n_heads=2)
    params = {n: p for n, p in model.named_parameters() if learns == "all" or n.startswith("head")}
    batch = Batch(torch.rand(9, 6), torch.arange(9) % 3, torch.arange(9) % 2, 0)
    fast = gradient_importance(model, params, batch, F.cross_entropy, kind, summed_loss=summed_ce)
    expected = by_hand_importance(model, params, batch, kind)
    assert set(fast) == set(params)
    for name in params:
        assert torch.allclose(fast[name], expected[name], atol=1e-6), name


class ReusedLayer(torch.nn.Module):
    """A Linear called twice and a bare parameter: the one-pass form does not apply."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 4)
        self.scale = torch.nn.Parameter(torch.tensor(0.5))

    def forward(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        return self.layer(torch.relu(self.layer(x))) * self.scale


@pytest.mark.parametrize("learns", ["all", "layer only"])
def test_importance_falls_back_to_per_sample_gradients_for_other_models(learns: str) -> None:
    torch.manual_seed(0)
    model = ReusedLayer()
    params = {n: p for n, p in model.named_parameters() if learns == "all" or "layer" in n}
    batch = Batch(torch.rand(7, 4), torch.arange(7) % 4, torch.zeros(7, dtype=torch.long), 0)
    got = gradient_importance(
        model, params, batch, F.cross_entropy, "square", summed_loss=summed_ce
    )
    expected = by_hand_importance(model, params, batch, "square")
    for name in params:
        assert torch.allclose(got[name], expected[name], atol=1e-6), name


@pytest.mark.parametrize("name", ["ewc", "online-ewc"])
def test_ewc_penalty_is_half_the_fisher_weighted_squared_distance(name: str) -> None:
    model, params = small_model()
    ewc = parts()[name](fisher="empirical", fisher_samples=12)
    ewc.setup(model, INFO, torch.Generator().manual_seed(0))
    data = task_data()
    batch = Batch(data.x.float() / 255, data.y, data.task_ids, 0)
    assert ewc.penalty(params, batch, None) == 0  # nothing consolidated yet
    ewc.after_task(params, data)
    assert ewc.penalty(params, batch, None).abs() < 1e-6  # at the anchor (up to rounding)
    moved = shifted(params)
    fisher = fisher_diagonal(model, params, batch, "empirical", torch.Generator())
    by_hand = sum((fisher[n] * (moved[n] - params[n]) ** 2).sum() for n in params) / 2
    assert torch.allclose(ewc.penalty(moved, batch, None), by_hand)


def test_ewc_sums_one_penalty_per_task_and_online_ewc_keeps_one() -> None:
    model, params = small_model()
    ewc = parts()["ewc"](fisher_samples=12)
    online = parts()["online-ewc"](fisher_samples=12, gamma=0.5)
    anchors = [detached(params), shifted(params, seed=2)]
    for reg in (ewc, online):
        reg.setup(model, INFO, torch.Generator().manual_seed(0))
        for task, anchor in enumerate(anchors):
            reg.after_task(anchor, task_data(task=task))
    fishers = []
    for task, anchor in enumerate(anchors):
        data = task_data(task=task)
        batch = Batch(data.x.float() / 255, data.y, data.task_ids, task)
        fishers.append(fisher_diagonal(model, anchor, batch, "empirical", torch.Generator()))
    moved = shifted(params, seed=5)
    batch = Batch(torch.zeros(1, 3), torch.zeros(1, dtype=torch.long), torch.zeros(1), 0)
    per_task = sum(quadratic_penalty(moved, f, a) for f, a in zip(fishers, anchors, strict=True))
    assert torch.allclose(ewc.penalty(moved, batch, None), per_task / 2, rtol=1e-4)
    assert all(
        torch.allclose(online.running[n], 0.5 * fishers[0][n] + fishers[1][n]) for n in params
    )
    assert torch.allclose(
        online.penalty(moved, batch, None),
        quadratic_penalty(moved, online.running, anchors[1]) / 2,
    )


def test_agem_projection_follows_the_formula() -> None:
    generator = torch.Generator().manual_seed(0)
    g = {"a": torch.randn(4, 3, generator=generator), "b": torch.randn(5, generator=generator)}
    r = {"a": -g["a"] + 0.1, "b": -g["b"]}  # a reference that opposes g
    flat_g, flat_r = (torch.cat([t["a"].flatten(), t["b"]]) for t in (g, r))
    assert flat_g @ flat_r < 0
    p = project(g, r)
    flat_p = torch.cat([p["a"].flatten(), p["b"]])
    assert torch.allclose(flat_p, flat_g - (flat_g @ flat_r) / (flat_r @ flat_r) * flat_r)
    assert flat_p @ flat_r >= -1e-5
    agreeing = {"a": g["a"].abs(), "b": g["b"].abs()}
    unchanged = project(agreeing, {"a": torch.ones(4, 3), "b": torch.ones(5)})
    assert all(torch.equal(unchanged[n], agreeing[n]) for n in g)


def test_si_importance_is_non_negative_and_zero_penalty_at_anchor() -> None:
    model, params = small_model()
    si = parts()["si"]()
    si.setup(model, INFO, torch.Generator())
    data = task_data(32)
    for step in range(8):
        x, y = data.x[step * 4 : step * 4 + 4].float() / 255, data.y[step * 4 : step * 4 + 4]
        loss = F.cross_entropy(functional_call(model, params, (x,)), y)
        grads = dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))
        uphill = 1.0 if step == 7 else -0.1  # the last step climbs: -g.delta < 0
        with torch.no_grad():
            for n, p in params.items():
                p += uphill * grads[n]
        si.observe(params, grads)
    assert any((w < 0).any() for w in si.omega.values())
    si.after_task(params, data)
    assert all((w >= 0).all() for w in si.importance.values())
    assert any((w > 0).any() for w in si.importance.values())
    batch = Batch(data.x.float() / 255, data.y, data.task_ids, 0)
    assert si.penalty(params, batch, None) == 0
    assert si.penalty(shifted(params), batch, None) > 0


def mas_by_hand(model, params, data, n: int) -> dict[str, torch.Tensor]:
    """Mean over samples of |d ||f_t(x)||^2 / d theta|, f_t the outputs of the task's targets."""
    x, outputs = data.x.float() / 255, data.y.unique()
    return {
        name: sum(
            torch.autograd.grad(model(x[i : i + 1])[:, outputs].pow(2).sum(), p)[0].abs()
            for i in range(n)
        )
        / n
        for name, p in params.items()
    }


def test_mas_importance_is_mean_absolute_gradient_of_squared_output_norm() -> None:
    model, params = small_model()
    mas = parts()["mas"](samples=12)
    mas.setup(model, INFO, torch.Generator().manual_seed(0))
    data = task_data()
    assert len(data.y.unique()) == 4  # every output is one of the task's
    mas.after_task(params, data)
    for name, by_hand in mas_by_hand(model, params, data, 12).items():
        assert torch.allclose(mas.importance[name], by_hand, atol=1e-6)
        assert (mas.importance[name] >= 0).all()


def test_mas_importance_leaves_the_classes_a_task_does_not_train_free() -> None:
    """Class-IL: the norm is over the task's own outputs (the paper's head of the task).
    Over every output, the rows of classes not yet seen got importance and anchored
    the next task's classes before they were learnt (was: rows 2 and 3 above zero)."""
    model, params = small_model()
    mas = parts()["mas"](samples=12)
    mas.setup(model, INFO, torch.Generator().manual_seed(0))
    data = task_data()
    data = TrainingData(0, "0", data.x, data.y % 2, data.task_ids)  # classes 0 and 1 of 4
    mas.after_task(params, data)
    assert (mas.importance["head.weight"][2:] == 0).all()
    assert (mas.importance["head.bias"][2:] == 0).all()
    assert (mas.importance["head.weight"][:2] > 0).any()
    for name, by_hand in mas_by_hand(model, params, data, 12).items():
        assert torch.allclose(mas.importance[name], by_hand, atol=1e-6)


@pytest.mark.parametrize("setting", ["class", "task"])
def test_lwf_penalty_is_zero_for_the_old_model_itself(setting: str) -> None:
    n_heads = 3 if setting == "task" else 1
    model, params = small_model(n_heads)
    lwf = parts()["lwf"]()
    lwf.setup(
        model,
        dataclasses.replace(INFO, setting=setting, n_heads=n_heads, n_outputs=4),
        torch.Generator(),
    )
    data = task_data()
    batch = Batch(data.x.float() / 255, data.y, torch.ones_like(data.y), 1)
    assert lwf.penalty(params, batch, None) == 0  # no old model before the first task ends
    lwf.after_task(params, data)
    assert lwf.penalty(params, batch, None).abs() < 1e-6
    assert lwf.penalty(shifted(params), batch, None) > 1e-4


def test_lwf_penalty_is_the_papers_distillation_loss_on_a_hand_built_case() -> None:
    """Li & Hoiem's L_old at T = 2: the cross-entropy of the softened new outputs against
    the softened old ones, less the old ones' entropy (a KL), with no T^2 factor (was:
    T^2 = 4 times it, Hinton's scaling, which held a domain-incremental task's shared
    units on the first task's outputs)."""
    model, params = small_model()
    lwf = parts()["lwf"]()
    lwf.setup(model, dataclasses.replace(INFO, n_outputs=4), torch.Generator())
    data = task_data()
    lwf.after_task(params, data)
    batch = Batch(data.x.float() / 255, data.y, data.task_ids, 1)
    moved = shifted(params)
    columns = sorted(set(data.y.tolist()))
    with torch.no_grad():
        old = torch.func.functional_call(model, params, (batch.x, batch.task_ids))[:, columns]
        new = torch.func.functional_call(model, moved, (batch.x, batch.task_ids))[:, columns]
    q, p = (old / 2).softmax(1), (new / 2).softmax(1)
    expected = (q * (q.log() - p.log())).sum(1).mean()
    assert torch.allclose(lwf.penalty(moved, batch, None), expected, atol=1e-7)


@pytest.mark.parametrize("setting", ["domain", "task"])
def test_lwf_distils_over_the_samples_the_cross_entropy_averages(setting: str) -> None:
    """With a memory the distillation averages over the incoming and the replayed samples,
    as the cross-entropy does (was: over the incoming ones alone, so that in domain-IL it
    outweighed the new task's labels on the same units)."""
    n_heads = 3 if setting == "task" else 1
    model, params = small_model(n_heads)
    lwf = parts()["lwf"]()
    info = dataclasses.replace(INFO, setting=setting, n_heads=n_heads, n_outputs=4)
    lwf.setup(model, info, torch.Generator())
    data = task_data()
    lwf.after_task(params, data)
    x, y = data.x.float() / 255, data.y
    ids = torch.ones_like(y) if n_heads > 1 else torch.zeros_like(y)
    incoming, replayed = Batch(x[:4], y[:4], ids[:4], 1), Batch(x[4:], y[4:], ids[4:], 0)
    joined = Batch(x, y, ids, 1)
    moved = shifted(params)
    with_replay = lwf.penalty(moved, incoming, Replay(replayed, torch.zeros(len(y) - 4, 4)))
    assert torch.allclose(with_replay, lwf.penalty(moved, joined, None))
    assert not torch.allclose(with_replay, lwf.penalty(moved, incoming, None))


def test_der_penalty_is_zero_when_logits_match() -> None:
    model, params = small_model()
    der = parts()["der"]()
    der.setup(model, INFO, torch.Generator())
    memory = reservoir(size=10, seed=0, info=dataclasses.replace(INFO, n_outputs=4), batch=5)
    data = task_data()
    batch = Batch(data.x.float() / 255, data.y, data.task_ids, 0)
    with torch.no_grad():
        memory.add(batch, model(batch.x))
    replay = memory.sample()
    assert der.penalty(params, batch, None) == 0
    assert der.penalty(params, batch, replay).abs() < 1e-10
    assert der.penalty(shifted(params), batch, replay) > 0


def test_der_keeps_the_logits_of_the_forward_pass_before_the_update() -> None:
    """Buzzega et al. 2020, Algorithm 1: z = h(x) on the batch trained on; step; store z."""
    from lifelong.composition.compose import configure

    strategy, _ = configure("der++", {"replay.size": 20})
    model = MLP(3, [8], 4)
    info = dataclasses.replace(INFO, n_outputs=4)
    strategy.setup(model, info, torch.Generator().manual_seed(0))
    data = task_data()
    batch = Batch(data.x.float() / 255, data.y % 4, data.task_ids, 0)
    with torch.no_grad():
        before = model(batch.x)
    strategy.train_step(batch)
    with torch.no_grad():
        after = model(batch.x)
    stored = strategy.memory.logits[: len(batch.y)]  # type: ignore[union-attr]
    torch.testing.assert_close(stored, before)
    assert not torch.allclose(stored, after)


@pytest.mark.parametrize("name", ["ewc", "online-ewc", "si", "mas"])
def test_quadratic_penalties_are_declared_by_their_base(name: str) -> None:
    """The four quadratic penalties derive from QuadraticRegularizer: their penalty is the
    quadratic they state (written once), and proximal learners see them as quadratic."""
    from lifelong import QuadraticRegularizer
    from lifelong.composition.registry import parts

    cls = parts()[name]
    assert issubclass(cls, QuadraticRegularizer) and cls.is_quadratic
    assert "penalty" not in vars(cls)  # not a second statement of the same quadratic


@pytest.mark.parametrize("fast", [True, False])
def test_ewc_penalty_first_read_under_no_grad_or_autocast_is_the_fisher_of_the_task(
    fast: bool,
) -> None:
    """EWC takes a task's Fisher when the penalty is first read (or the next task
    begins): read first inside ``no_grad``, ``inference_mode`` or a bf16 autocast, it is
    still the full-precision Fisher with gradients (the reference differentiates)."""
    model, params = small_model()
    data = task_data()
    batch = Batch(data.x.float() / 255, data.y, data.task_ids, 0)
    moved = shifted(params)
    values = []
    for context in (
        torch.enable_grad,
        torch.no_grad,
        torch.inference_mode,
        lambda: torch.autocast("cpu", dtype=torch.bfloat16),
    ):
        ewc = parts()["ewc"](fisher_samples=12)
        ewc.setup(model, dataclasses.replace(INFO, fast=fast), torch.Generator().manual_seed(0))
        ewc.after_task(params, data)
        with context():
            values.append(ewc.penalty(moved, batch, None).detach().clone())
    assert all(torch.equal(v, values[0]) for v in values) and values[0] > 0
