"""The backbone's acceptance figures on real data (slow: run with ``pytest -m slow``)."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

import lifelong
from lifelong.data.mnist import DEBIAN_FASHION_MNIST_DIR

pytestmark = pytest.mark.slow


def mean_metric(scenario: str, strategy: str, metric: str, **settings: object) -> float:
    values = [
        lifelong.run(scenario, strategy, seed=seed, device="cpu", settings=settings).metrics[metric]
        for seed in (0, 1, 2)
    ]
    return statistics.fmean(values)


def test_split_mnist_class_incremental_naive_forgets_joint_does_not() -> None:
    naive_acc = mean_metric("split-mnist", "naive", "acc")
    naive_bwt = mean_metric("split-mnist", "naive", "bwt")
    joint_acc = mean_metric("split-mnist", "joint", "acc")
    assert 0.12 < naive_acc < 0.3  # near 20%: only the last task is remembered
    assert naive_bwt < -0.8
    assert joint_acc > 0.85


def test_task_incremental_naive_stays_far_above_class_incremental() -> None:
    task = mean_metric("split-mnist", "naive", "acc", setting="task")
    klass = mean_metric("split-mnist", "naive", "acc", setting="class")
    assert task > klass + 0.5


@pytest.mark.parametrize("scenario", ["permuted-mnist", "rotated-mnist"])
def test_permuted_and_rotated_ten_tasks_show_forgetting_for_naive(scenario: str) -> None:
    result = lifelong.run(
        scenario, "naive", seed=0, device="cpu", settings={"n_tasks": 10, "samples_per_task": 1000}
    )
    assert len(result.matrix) == 10
    assert result.metrics["forgetting"] > 0.05
    assert result.metrics["bwt"] < -0.05


def test_same_command_twice_gives_identical_numbers() -> None:
    first = lifelong.run("split-mnist", "naive", seed=1, device="cpu")
    second = lifelong.run("split-mnist", "naive", seed=1, device="cpu")
    assert first.matrix == second.matrix and first.curves == second.curves


@pytest.mark.skipif(
    not Path(DEBIAN_FASHION_MNIST_DIR).is_dir(),
    reason="Debian's dataset-fashion-mnist is absent (apt-get install dataset-fashion-mnist)",
)
def test_split_fashion_mnist_from_the_debian_package() -> None:
    result = lifelong.run(
        "split-mnist",
        "naive",
        seed=0,
        device="cpu",
        settings={
            "dataset": "fashion-mnist",
            "setting": "task",
            "samples_per_task": 2000,
            "eval_every": 0,
        },
    )
    assert sum(len(row) for row in result.matrix) == 25
    assert result.metrics["acc"] > 0.7  # binary heads; forgetting still costs some
