"""Streams without clean boundaries (issue 20): the stream options, boundary needs and
detection, and the online metrics against hand-computed cases."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import pytest
import torch
from helpers import CPU, plan_one
from torch import Tensor, nn

from lifelong import Batch, Strategy, StreamInfo, TrainingData, UserError
from lifelong.cli import main
from lifelong.composition.plan import plan_runs
from lifelong.contracts.stream import Stream, Task
from lifelong.data.stream_options import StreamOptions, apply_options
from lifelong.evaluation import metrics
from lifelong.evaluation.anytime import OnlineRecorder, few_shot_accuracy
from lifelong.execution.boundaries import PlateauDetector
from lifelong.execution.runner import execute
from lifelong.models.mlp import MLP

# ---- metrics, by hand ---------------------------------------------------------------


def test_a_auc_equal_spacing_is_the_mean() -> None:
    assert metrics.a_auc([100, 200, 300], [0.5, 0.7, 0.9]) == pytest.approx(0.7)


def test_a_auc_weights_each_accuracy_by_the_samples_since_the_last() -> None:
    # (0.4 * 100 + 0.8 * 200) / 300
    assert metrics.a_auc([100, 300], [0.4, 0.8]) == pytest.approx(200 / 300)


@pytest.mark.parametrize(
    ("samples", "accuracies", "message"),
    [([100, 100], [0.5, 0.5], "increasing"), ([100], [50.0], "divide"), ([], [], "non-empty")],
)
def test_a_auc_refuses_bad_input(samples: list, accuracies: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        metrics.a_auc(samples, accuracies)


def test_lca_averages_z_b_over_b() -> None:
    # Z_0 = 0.2, Z_1 = 0.5, Z_2 = 0.8; LCA_2 = 0.5
    assert metrics.lca([[0.1, 0.5, 0.9], [0.3, 0.5, 0.7]]) == pytest.approx(0.5)
    assert metrics.lca([[0.1, 0.3], [0.3, 0.5]]) == pytest.approx(0.3)


def test_few_shot_is_the_mean_over_tasks_per_step_count() -> None:
    out = metrics.few_shot([[0.2, 0.4, 0.6], [0.4, 0.6, 0.8]])
    assert out.tolist() == pytest.approx([0.3, 0.5, 0.7])


def test_online_summary_holds_only_what_was_measured() -> None:
    record = {"anytime": [[10, math.nan], [20, 0.5], [30, 1.0]], "lca": [], "few_shot": []}
    # the NaN point (nothing seen yet) is left out: (0.5 * 20 + 1.0 * 10) / 30
    assert metrics.online_summary(record) == pytest.approx({"a_auc": 20 / 30, "a_last": 1.0})
    assert metrics.online_summary({}) == {}


# ---- stream options on a hand-made stream --------------------------------------------


def _stream(n_tasks: int = 3, per_class: int = 20, setting: str = "class") -> Stream:
    """Task t holds classes 2t, 2t+1, ``per_class`` samples each; x encodes (task, index)."""
    tasks = []
    for t in range(n_tasks):
        y = torch.tensor([2 * t, 2 * t + 1] * per_class)
        x = (torch.arange(len(y)) % 250).to(torch.uint8)[:, None].repeat(1, 4)
        x[:, 0] = t
        tasks.append(
            Task(
                t,
                f"{2 * t}/{2 * t + 1}",
                x,
                y,
                x[:4],
                y[:4],
                (2 * t, 2 * t + 1),
                (2 * t, 2 * t + 1),
            )
        )
    return Stream("toy", setting, tuple(tasks), 2 * n_tasks, 1, 4)  # type: ignore[arg-type]


def _origin(task: Task) -> Tensor:
    assert task.train_task_ids is not None
    return task.train_task_ids


def test_blurry_moves_n_percent_from_other_tasks_blurry_classes_only() -> None:
    stream = _stream(per_class=50)
    out = apply_options(stream, StreamOptions(blurry=10), seed=0)
    for task in out.tasks:
        foreign = _origin(task) != task.id
        assert foreign.float().mean().item() == pytest.approx(0.10, abs=0.01)
        assert (task.x_train[:, 0] == _origin(task).to(torch.uint8)).all()  # rows kept whole
    # a class that left its task once is a blurry class; the other class of each task never left
    for t in range(3):
        moved = {
            int(y)
            for task in out.tasks
            for y, o in zip(task.y_train, _origin(task), strict=True)
            if int(o) == t and task.id != t
        }
        assert len(moved) == 1
    total = sum(len(t.y_train) for t in out.tasks)
    assert total == sum(len(t.y_train) for t in stream.tasks)
    again = apply_options(stream, StreamOptions(blurry=10), seed=0)
    assert all(
        torch.equal(a.y_train, b.y_train) for a, b in zip(out.tasks, again.tasks, strict=True)
    )


def test_gradual_blends_linearly_around_the_true_boundary() -> None:
    stream = _stream(n_tasks=2, per_class=200)  # 400 samples a task
    out = apply_options(stream, StreamOptions(gradual=400), seed=0)
    assert out.ordered
    first, second = _origin(out.tasks[0]), _origin(out.tasks[1])
    assert len(first) == len(second) == 400
    assert (first[:200] == 0).all() and (second[200:] == 1).all()  # outside the blend: pure
    window = torch.cat([first[200:], second[:200]]).float()  # the 400-sample blend
    quarters = [q.mean().item() for q in window.split(100)]  # share of the next task
    assert quarters == sorted(quarters)
    assert quarters[0] == pytest.approx(0.125, abs=0.07)  # linear: 1/8, 3/8, 5/8, 7/8
    assert quarters[3] == pytest.approx(0.875, abs=0.07)
    assert (first == 1).sum() == (second == 0).sum()  # as many cross each way


def test_data_incremental_puts_every_class_in_every_task() -> None:
    out = apply_options(_stream(per_class=30), StreamOptions(incremental="data"), seed=0)
    for task in out.tasks:
        assert set(task.y_train.tolist()) == set(range(6))
    assert sum(len(t.y_test) for t in out.tasks) == 12  # the test sets, cut in chunks too


def test_imbalance_gives_a_long_tail_of_ratio_rho() -> None:
    out = apply_options(_stream(per_class=100), StreamOptions(imbalance=10), seed=0)
    for task in out.tasks:
        counts = sorted(task.y_train.bincount()[task.y_train.unique()].tolist())
        assert counts == [10, 100]


def test_options_compose() -> None:
    options = StreamOptions(blurry=10, gradual=20, imbalance=2)
    out = apply_options(_stream(per_class=50), options, seed=1)
    assert out.ordered and all(t.train_task_ids is not None for t in out.tasks)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (StreamOptions(gradual=1000), "larger than task"),
        (StreamOptions(boundaries="hidden"), "setting=task"),
        (StreamOptions(incremental="data"), "setting=task"),
    ],
)
def test_impossible_options_are_refused(options: StreamOptions, message: str) -> None:
    setting = "task" if "task" in message else "class"
    with pytest.raises(UserError, match=message):
        apply_options(_stream(setting=setting), options, seed=0)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["blurri=10"], "did you mean 'blurry'"),
        (["blurry=150"], "blurry"),
        (["blurry=-1"], "blurry"),
        (["gradual=100000"], "larger than task"),
        (["boundaries=hidden", "setting=task"], "setting=task"),
        (["boundaries=sometimes"], "boundaries"),
    ],
)
def test_bad_stream_options_on_the_command_line(
    settings: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    args = ["run", "split-mnist", "-s", "er", "--out", str(tmp_path / "out")]
    for pair in settings:
        args += ["--set", pair]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


# ---- strategies and boundaries -------------------------------------------------------


def test_hidden_boundaries_refuse_a_strategy_that_needs_them_naming_it() -> None:
    with pytest.raises(UserError, match="ewc: it needs the task boundaries"):
        plan_runs("split-mnist", ["er", "la-maml", "ewc"], [0], {"boundaries": "hidden"})
    with pytest.raises(UserError, match="er\\+si: its part si needs"):
        plan_runs("split-mnist", ["er+si"], [0], {"boundaries": "hidden"})
    for boundary_free in ("er", "der++", "agem", "mer", "la-maml", "gdumb", "oml+er"):
        plan_runs("split-mnist", [boundary_free], [0], {"boundaries": "hidden"})
    plan_runs("split-mnist", ["ewc", "lwf", "mas", "er+si"], [0], {"boundaries": "detect"})


@pytest.mark.parametrize("name", ["icarl", "bic", "lucir", "er-ace", "gem"])
def test_the_class_incremental_methods_that_read_boundaries_declare_it(name: str) -> None:
    with pytest.raises(UserError, match=r"needs the task boundaries"):
        plan_runs("split-mnist", [name], [0], {"boundaries": "hidden"})


@pytest.mark.parametrize("boundaries", ["hidden", "detect"])
def test_x_der_is_refused_without_the_true_task_ids(boundaries: str) -> None:
    """Was, with detected boundaries: IndexError inside x-der once a detected id passed the
    last task (it reads task t's classes as its outputs by the true t)."""
    with pytest.raises(UserError, match=r"x-der: it reads each task's classes by the true task id"):
        plan_runs("split-mnist", ["x-der"], [0], {"boundaries": boundaries})
    plan_runs("split-mnist", ["x-der"], [0], {})


_LAST: dict[str, _Recorder] = {}


@dataclass
class _Recorder(Strategy):
    """Records what the runner shows it."""

    name: ClassVar[str] = "recorder"
    model: nn.Module = field(init=False, repr=False)
    ids: list[int] = field(default_factory=list, init=False)
    tasks: list[int] = field(default_factory=list, init=False)
    hooks: list[str] = field(default_factory=list, init=False)
    boundaries: bool = field(default=True, init=False)
    predicted: set[int] = field(default_factory=set, init=False)  # ids shown to predict

    def setup(self, model: nn.Module, info: StreamInfo, generator: torch.Generator) -> None:
        self.model, self.boundaries = model, info.boundaries
        _LAST["run"] = self  # the runner trains a copy: keep it to look at

    def before_task(self, data: TrainingData) -> None:
        self.hooks.append(f"before {data.id}")

    def train_step(self, batch: Batch) -> Tensor:
        self.ids += batch.task_ids.tolist()
        self.tasks.append(batch.task)
        return torch.zeros(())

    def after_task(self, data: TrainingData) -> None:
        self.hooks.append(f"after {data.id}")

    def predict(self, x: Tensor, task_ids: Tensor) -> Tensor:
        self.predicted.update(task_ids.unique().tolist())
        return self.model(x, task_ids)


SMALL = {"samples_per_task": 40, "hidden": "16", "batch_size": 10, "eval_every": 0}


def _run_recorder(options: dict[str, object]) -> tuple[_Recorder, object]:
    spec = plan_one(_Recorder(), {**SMALL, **options})
    result = execute(spec, spec.build_stream(), CPU)
    return _LAST["run"], result


def test_hidden_boundaries_withhold_task_ids_and_hooks_but_r_stays_defined() -> None:
    strategy, result = _run_recorder({"boundaries": "hidden", "anytime_every": 20, "lca_beta": 2})
    assert set(strategy.ids) == {0} and set(strategy.tasks) == {0}
    assert strategy.predicted == {0}  # evaluations and online measurements included
    assert strategy.hooks == [] and not strategy.boundaries
    assert len(result.matrix) == 5 and all(len(row) == 5 for row in result.matrix)
    shown, _ = _run_recorder({})
    assert set(shown.ids) == set(range(5)) and len(shown.hooks) == 10 and shown.boundaries
    assert shown.predicted == set(range(5))


def test_plateau_detector_fires_once_per_plateau_after_a_peak() -> None:
    detector = PlateauDetector(window=5)
    falling = [2.0, 1.5, 1.0, 0.6, 0.4]
    flat = [0.3, 0.31, 0.29, 0.3, 0.3, 0.31, 0.3, 0.29, 0.3, 0.3]
    fired = [detector.update(v) for v in falling + flat]
    assert sum(fired) == 1  # the start is a peak; its first plateau is a boundary
    fired = [detector.update(v) for v in [2.0, 1.9, 1.8, 1.0, 0.5, *flat]]
    assert sum(fired) == 1  # a new task: the loss rose, then settled
    assert not any(detector.update(v) for v in flat)  # no peak, no boundary


# two loss peaks, each settling into a plateau: the detector fires twice (after steps 9, 19)
_SCRIPT = [2.0, 1.5, 1.0, 0.6, 0.4] + [0.3] * 5 + [2.0, 1.9, 1.8, 1.0, 0.5] + [0.3] * 25


@dataclass
class _Scripted(Strategy):
    """Records the task ids and hooks the runner shows it; its loss follows ``_SCRIPT``."""

    name: ClassVar[str] = "scripted"
    model: nn.Module = field(init=False, repr=False)
    ids: list[list[int]] = field(default_factory=list, init=False)
    tasks: list[int] = field(default_factory=list, init=False)
    hooks: list[tuple[str, int, list[int]]] = field(default_factory=list, init=False)
    predicted: set[int] = field(default_factory=set, init=False)  # ids shown to predict

    def setup(self, model: nn.Module, info: StreamInfo, generator: torch.Generator) -> None:
        self.model = model
        _LAST["run"] = self  # type: ignore[assignment]

    def before_task(self, data: TrainingData) -> None:
        self.hooks.append(("before", data.id, data.task_ids.unique().tolist()))

    def train_step(self, batch: Batch) -> Tensor:
        self.ids.append(batch.task_ids.unique().tolist())
        self.tasks.append(batch.task)
        return torch.tensor(_SCRIPT[len(self.tasks) - 1])

    def after_task(self, data: TrainingData) -> None:
        self.hooks.append(("after", data.id, data.task_ids.unique().tolist()))

    def predict(self, x: Tensor, task_ids: Tensor) -> Tensor:
        self.predicted.update(task_ids.unique().tolist())
        return self.model(x, task_ids)


def test_detected_boundaries_number_the_tasks_the_strategy_sees() -> None:
    # 5 true tasks of 8 batches of 10; two detected boundaries, neither a true one
    spec = plan_one(_Scripted(), {**SMALL, "samples_per_task": 80, "boundaries": "detect"})
    result = execute(spec, spec.build_stream(), CPU)
    strategy = _LAST["run"]
    assert isinstance(strategy, _Scripted)
    assert result.online["detected"] == [90, 190]
    assert strategy.ids == [[0]] * 9 + [[1]] * 10 + [[2]] * 21  # the detected ids, not 0..4
    assert strategy.tasks == [0] * 9 + [1] * 10 + [2] * 21
    assert [(h, i) for h, i, _ in strategy.hooks] == [
        ("after", 0),
        ("before", 1),
        ("after", 1),
        ("before", 2),
    ]
    assert all(ids == [i] for _, i, ids in strategy.hooks)
    assert strategy.predicted == {0, 1, 2}  # evaluated at the true ends, shown detected ids


def test_detected_boundaries_call_the_hooks_on_recent_samples() -> None:
    result = plan_one("ewc", {**SMALL, "boundaries": "detect", "samples_per_task": 200})
    run = execute(result, result.build_stream(), CPU)
    assert run.ok and run.online.get("detected")


# ---- online measurements -------------------------------------------------------------


def test_online_measurements_do_not_disturb_the_run() -> None:
    plain = plan_one("er", SMALL)
    measured = plan_one("er", {**SMALL, "anytime_every": 20, "lca_beta": 3, "few_shot": True})
    a = execute(plain, plain.build_stream(), CPU)
    b = execute(measured, measured.build_stream(), CPU)
    assert a.matrix == b.matrix
    assert len(b.online["lca"]) == 5 and all(len(row) == 4 for row in b.online["lca"])
    assert len(b.online["few_shot"]) == 5 and all(len(row) == 3 for row in b.online["few_shot"])
    assert [n for n, _ in b.online["anytime"]] == list(range(20, 201, 20))
    assert b.online["task_ends"] == [40, 80, 120, 160, 200]
    for key in ("a_auc", "a_last", "lca", "few_shot_1", "few_shot_5", "few_shot_10"):
        assert 0 <= b.metrics[key] <= 1
    assert "a_auc" not in a.metrics


def test_anytime_scores_a_fixed_size_sample_of_seen_classes_only() -> None:
    stream = _stream(per_class=10)
    recorder = OnlineRecorder(
        stream, StreamOptions(anytime_every=1, anytime_size=3), 5, torch.Generator().manual_seed(0)
    )
    asked: list[Tensor] = []

    def predict(x: Tensor, task_ids: Tensor) -> Tensor:
        asked.append(task_ids)
        return torch.zeros(len(x), 6)

    assert math.isnan(recorder.anytime_accuracy(predict))  # nothing seen yet
    recorder.observe(torch.tensor([1]), torch.tensor([2]))  # task 1's class 2 only
    recorder.anytime_accuracy(predict)
    assert sum(len(t) for t in asked) == 2  # task 1's test set holds two of class 2
    recorder.seen[:] = True
    asked.clear()
    recorder.anytime_accuracy(predict)
    assert sum(len(t) for t in asked) == 3  # never more than anytime_size


def test_few_shot_trains_a_copy() -> None:
    torch.manual_seed(0)
    model = MLP(4, (8,), 6, 1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    task = _stream().tasks[0]
    ids = torch.zeros_like(task.y_train)
    out = few_shot_accuracy(model, (task.x_train, task.y_train, ids), task, 0.1, 5)
    assert len(out) == 3 and all(0 <= a <= 1 for a in out)
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())


def test_few_shot_through_the_ncm_head_predicts_the_nearest_support_mean() -> None:
    """Was: few-shot adaptation scored the model's linear output for every head, so a
    ProtoNet's ``ncm`` head (which classifies from class means) was never measured."""
    import torch.nn.functional as F

    from lifelong.composition.compose import compose
    from lifelong.data.inputs import to_floats

    torch.manual_seed(0)
    model = MLP(4, (8,), 6, 1)
    with torch.no_grad():  # the linear output always says class 5: the head must not be it
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([0.0, 0, 0, 0, 0, 10]))
    task = _stream(per_class=30).tasks[0]
    ids = torch.zeros_like(task.y_train)
    head = compose("er+ncm").head
    assert head is not None
    head.n_outputs = 6  # type: ignore[attr-defined]  # what prepare() sets from the stream
    out = few_shot_accuracy(model, (task.x_train, task.y_train, ids), task, 0.0, 5, head=head)

    def embed(raw: Tensor) -> Tensor:
        return F.normalize(model.body(to_floats(raw.flatten(1), task.inputs)).flatten(1), dim=1)

    for accuracy, step in zip(out, (1, 5, 10), strict=True):  # lr 0: the weights stay
        support_x, support_y = task.x_train[: 5 * step], task.y_train[: 5 * step]
        classes = support_y.unique()
        means = torch.stack([embed(support_x[support_y == c]).mean(0) for c in classes])
        distances = torch.cdist(embed(task.x_test), F.normalize(means, dim=1))
        predicted = classes[distances.argmin(1)]
        assert accuracy == pytest.approx((predicted == task.y_test).float().mean().item())
    assert max(out) > 0  # the linear output's accuracy is 0 on classes 0 and 1


def test_gdumb_learns_with_hidden_boundaries() -> None:
    spec = plan_one("gdumb", {**SMALL, "boundaries": "hidden", "gdumb.epochs": 10})
    result = execute(spec, spec.build_stream(), CPU)
    assert result.metrics["acc"] > 0.3  # chance is 0.1; without retraining it stays there


SLOW = pytest.mark.slow
# MER's and the La-MAML family's steps per sample make them the slow ones.
SLOW_ONES = {"mer", "la-maml", "c-maml", "sync-la-maml"}


def _boundary_free() -> list:
    """Every built-in strategy and shortcut that runs with hidden boundaries."""
    from lifelong.composition.compose import SHORTCUTS
    from lifelong.composition.registry import strategies

    free = []
    for name in [*sorted(strategies()), *sorted(SHORTCUTS)]:
        try:
            plan_runs("split-mnist", [name], [0], {"boundaries": "hidden"})
        except UserError:
            continue
        free.append(pytest.param(name, marks=SLOW) if name in SLOW_ONES else name)
    return free


BOUNDARY_FREE = _boundary_free()


def test_the_boundary_free_list_holds_the_issues_strategies() -> None:
    names = {p if isinstance(p, str) else p.values[0] for p in BOUNDARY_FREE}
    assert {"er", "der++", "agem", "mer", "la-maml", "mir", "gdumb", "gss", "scr"} <= names
    assert not names & {"ewc", "icarl", "x-der", "joint"}


@pytest.mark.parametrize("strategy", BOUNDARY_FREE)
def test_boundary_free_strategies_run_blurry_and_gradual_with_hidden_boundaries(
    strategy: str,
) -> None:
    settings = {**SMALL, "boundaries": "hidden", "blurry": 10, "gradual": 20, "gdumb.epochs": 2}
    spec = plan_one(
        strategy,
        {k: v for k, v in settings.items() if strategy == "gdumb" or not k.startswith("gdumb.")},
    )
    result = execute(spec, spec.build_stream(), CPU)
    assert result.ok and len(result.matrix) == 5


def test_report_shows_the_online_metrics_and_figures(tmp_path) -> None:
    from lifelong import save
    from lifelong.evaluation.report import make_report

    spec = plan_one(
        "er", {**SMALL, "anytime_every": 20, "lca_beta": 2, "few_shot": True, "gradual": 10}
    )
    save(execute(spec, spec.build_stream(), CPU), tmp_path / "out")
    text = make_report(tmp_path / "out").read_text()
    assert "| A_AUC | A_last | LCA | few-shot 1 | few-shot 5 | few-shot 10 |" in text
    for image in ("anytime.png", "lca.png", "few_shot.png"):
        assert f"]({image})" in text and (tmp_path / "out" / "report" / image).exists()


def test_a_checkpoint_keeps_the_online_record_and_the_detector() -> None:
    from lifelong.execution.runner import OneSeed

    spec = plan_one("ewc", {**SMALL, "boundaries": "detect", "anytime_every": 20, "lca_beta": 2})
    stream = spec.build_stream()
    first = OneSeed(spec, stream, CPU, None)
    first.before_task(0)
    for batch in first.batches(0):
        first.step(batch)
    state = first.state()
    second = OneSeed(spec, stream, CPU, None)
    second.load_state(state)
    assert second.recorder.record == first.recorder.record and second.recorder.samples == 40
    assert second.detector is not None and first.detector is not None
    assert list(second.detector.losses) == list(first.detector.losses)
    assert torch.equal(second.recent.state()["y"], first.recent.state()["y"])


def test_stream_options_are_not_vectorized() -> None:
    from lifelong.execution.vectorized import vectorizable

    assert "one seed at a time" in vectorizable(plan_one("er", {"blurry": 10}))
    assert vectorizable(plan_one("er")) == ""


@pytest.mark.parametrize("strategy", ["er", "der++", "agem"])
def test_hiding_boundaries_changes_nothing_for_a_class_il_strategy_without_hooks(
    strategy: str,
) -> None:
    shown = plan_one(strategy, SMALL)
    hidden = plan_one(strategy, {**SMALL, "boundaries": "hidden"})
    a = execute(shown, shown.build_stream(), CPU)
    b = execute(hidden, hidden.build_stream(), CPU)
    assert a.matrix == b.matrix


def test_online_measurements_leave_batch_norm_statistics_alone() -> None:
    """Few-shot adaptation and LCA's evaluations run in eval mode on a copy: a ResNet's
    running statistics are those it had before (they moved in training mode before)."""
    from helpers import image_stream, model_settings, plan_one

    from lifelong.execution.runner import OneSeed

    settings = {**model_settings("resnet18-reduced"), "few_shot": "true", "lca_beta": "2"}
    trainer = OneSeed(plan_one("naive", settings), image_stream((3, 32, 32)), CPU, None)
    before = {n: b.clone() for n, b in trainer.model.named_buffers()}
    trainer.before_task(0)
    assert trainer.model.training
    assert all(torch.equal(b, before[n]) for n, b in trainer.model.named_buffers())
