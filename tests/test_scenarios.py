"""Scenario families on the embedded data: layout, labels, determinism, bad settings."""

from __future__ import annotations

import pytest
import torch

from lifelong import UserError
from lifelong.composition.plan import plan_runs


def build(name: str, seed: int = 0, **settings: object):
    (spec,) = plan_runs(name, ["naive"], [seed], settings)
    return spec.scenario.build(seed)


def test_split_class_incremental_layout() -> None:
    stream = build("split-mnist")
    assert stream.n_tasks == 5 and stream.n_outputs == 10 and stream.n_heads == 1
    for t, task in enumerate(stream.tasks):
        assert task.classes == (2 * t, 2 * t + 1)
        assert set(task.y_train.tolist()) == {2 * t, 2 * t + 1}
        assert set(task.y_test.tolist()) == {2 * t, 2 * t + 1}
        assert task.x_train.dtype == torch.uint8 and task.x_train.shape[1] == 784
    assert sum(len(t.y_train) for t in stream.tasks) == 4000
    assert sum(len(t.y_test) for t in stream.tasks) == 1000


def test_split_domain_and_task_forms_use_within_task_labels() -> None:
    domain = build("split-mnist", setting="domain")
    task = build("split-mnist", setting="task")
    assert (domain.n_outputs, domain.n_heads) == (2, 1)
    assert (task.n_outputs, task.n_heads) == (2, 5)
    for stream in (domain, task):
        for t in stream.tasks:
            assert set(t.y_train.tolist()) == {0, 1}
            assert t.targets == (0, 1)


def test_same_seed_same_stream_bit_for_bit() -> None:
    for name in ("split-mnist", "permuted-mnist", "rotated-mnist"):
        a = build(name, seed=3, n_tasks=5, samples_per_task=100)
        b = build(name, seed=3, n_tasks=5, samples_per_task=100)
        for ta, tb in zip(a.tasks, b.tasks, strict=True):
            assert torch.equal(ta.x_train, tb.x_train) and torch.equal(ta.y_train, tb.y_train)
            assert torch.equal(ta.x_test, tb.x_test) and torch.equal(ta.y_test, tb.y_test)


def test_class_seed_shuffles_the_class_order() -> None:
    fixed = build("split-mnist")
    shuffled = build("split-mnist", class_seed=1)
    assert [t.classes for t in fixed.tasks] != [t.classes for t in shuffled.tasks]
    assert sorted(c for t in shuffled.tasks for c in t.classes) == list(range(10))
    # class-incremental targets follow the shuffled order: task t holds 2t and 2t+1
    assert [t.targets for t in shuffled.tasks] == [(2 * t, 2 * t + 1) for t in range(5)]


def test_permuted_tasks_are_pixel_permutations_of_the_same_digits() -> None:
    stream = build("permuted-mnist", n_tasks=3)
    first, second = stream.tasks[0], stream.tasks[1]
    assert torch.equal(first.y_test, second.y_test)
    assert torch.equal(first.x_test.sort(dim=1).values, second.x_test.sort(dim=1).values)
    assert not torch.equal(first.x_test, second.x_test)
    assert stream.n_outputs == 10 and len(first.y_train) == 4000


def test_permuted_class_incremental_offsets_labels_per_task() -> None:
    stream = build("permuted-mnist", n_tasks=3, setting="class", samples_per_task=50)
    assert stream.n_outputs == 30
    assert set(stream.tasks[2].y_test.tolist()) == set(range(20, 30))


def test_samples_per_task_and_different_seeds() -> None:
    a = build("permuted-mnist", seed=0, n_tasks=2, samples_per_task=300)
    b = build("permuted-mnist", seed=1, n_tasks=2, samples_per_task=300)
    assert len(a.tasks[0].y_train) == 300
    assert not torch.equal(a.tasks[0].x_train, b.tasks[0].x_train)


def test_rotated_angles_given_and_gem_slices() -> None:
    stream = build("rotated-mnist", n_tasks=2, angles="0,90", samples_per_task=20)
    zero, ninety = stream.tasks
    images = zero.x_test.view(-1, 28, 28).float()
    rotated = ninety.x_test.view(-1, 28, 28).float()
    # angle 0 is the identity; 90 degrees matches a quarter turn (up to interpolation)
    assert (rotated - torch.rot90(images, 1, dims=(1, 2))).abs().mean() < 2.0
    assert (rotated - torch.rot90(images, -1, dims=(1, 2))).abs().mean() > 10.0
    (spec,) = plan_runs("rotated-mnist", ["naive"], [7], {"n_tasks": 4})
    angles = spec.scenario.task_angles(7)
    assert all(45 * t <= a < 45 * (t + 1) for t, a in enumerate(angles))


def test_rotation_by_zero_is_identity() -> None:
    stream = build("rotated-mnist", n_tasks=1, angles="0", samples_per_task=10)
    (spec,) = plan_runs("split-mnist", ["naive"], [0], {"n_tasks": 1})
    raw = spec.scenario.build(0)
    assert stream.tasks[0].x_test.shape == (1000, 784)
    assert (stream.tasks[0].x_test.float().mean() - raw.tasks[0].x_test.float().mean()).abs() < 1


@pytest.mark.parametrize(
    ("name", "settings", "fragment"),
    [
        ("split-mnist", {"n_tasks": 3}, "does not divide"),
        ("split-mnist", {"n_tasks": 11}, "more than the 10 classes"),
        ("split-mnist", {"n_tasks": 0}, "at least 1"),
        ("split-mnist", {"samples_per_task": 5000}, "only 800 samples"),
        ("permuted-mnist", {"samples_per_task": 4001}, "only 4000 samples"),
        ("rotated-mnist", {"n_tasks": 2, "angles": "10"}, "1 angles given"),
        ("split-mnist", {"setting": "classes"}, "did you mean 'class'"),
        ("split-mnist", {"dataset": "mnits"}, "did you mean 'mnist'"),
    ],
)
def test_impossible_settings_fail_before_any_work(
    name: str, settings: dict[str, object], fragment: str
) -> None:
    with pytest.raises(UserError, match=fragment):
        build(name, **settings)
