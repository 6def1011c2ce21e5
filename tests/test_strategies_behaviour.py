"""The classic strategies behave as the literature says, on the embedded mnist5k digits.

Claims (van de Ven et al. 2019, "Three scenarios for continual learning"; Chaudhry et al.
2019 for ER): replay lifts class-incremental Split-MNIST far above fine-tuning, which
sits near 20%; the regularizers alone stay close to fine-tuning there, and help in the
domain-incremental form. The default protocol is used (one epoch, batch 32, MLP 100-100).
The quick tests use seed 0; the ``slow`` ones average three seeds, as the report does
(reports/classic-strategies.md).
"""

from __future__ import annotations

import functools
import statistics

import pytest

import lifelong

# As in reports/classic-strategies/split-mnist.toml: under Adam the penalties can be strong.
ADAM_STRENGTHS = {
    "adam+ewc.lam": 3000,
    "adam+online-ewc.lam": 3000,
    "adam+si.lam": 1000,
    "adam+mas.lam": 1,
}


@functools.cache
def scores(scenario: str, strategy: str, setting: str, seed: int) -> tuple[float, float]:
    """(ACC, BWT) of one run on the CPU, without curves."""
    settings = {"setting": setting, "eval_every": 0}
    settings.update({k: v for k, v in ADAM_STRENGTHS.items() if k.startswith(strategy + ".")})
    result = lifelong.run(scenario, strategy, seed=seed, device="cpu", settings=settings)
    return result.metrics["acc"], result.metrics["bwt"]


def acc(
    strategy: str, setting: str, seeds: tuple[int, ...] = (0,), scenario: str = "split-mnist"
) -> float:
    return statistics.fmean(scores(scenario, strategy, setting, s)[0] for s in seeds)


def bwt(strategy: str, setting: str, seeds: tuple[int, ...], scenario: str) -> float:
    return statistics.fmean(scores(scenario, strategy, setting, s)[1] for s in seeds)


@pytest.mark.parametrize("strategy", ["er", "der++"])
def test_replay_is_far_above_naive_in_class_incremental(strategy: str) -> None:
    assert acc("naive", "class") < 0.25
    assert acc(strategy, "class") > acc("naive", "class") + 0.3


def test_gdumb_the_worked_example_is_far_above_naive_in_class_incremental() -> None:
    """strategies/gdumb.py, the README's from-scratch example (Prabhu et al. 2020)."""
    assert acc("gdumb", "class") > acc("naive", "class") + 0.4


def test_lwf_beats_naive_in_domain_incremental() -> None:
    assert acc("lwf", "domain") > acc("naive", "domain") + 0.08


def test_ewc_under_adam_beats_adam_in_domain_incremental() -> None:
    assert acc("adam+ewc", "domain") > acc("adam", "domain") + 0.1


SEEDS = (0, 1, 2)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ewc", "online-ewc", "si", "mas", "lwf"])
def test_regularizers_alone_stay_near_naive_in_class_incremental(strategy: str) -> None:
    assert abs(acc(strategy, "class", SEEDS) - acc("naive", "class", SEEDS)) < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["er", "der++", "er+ewc"])
def test_replay_far_above_naive_in_class_incremental_over_seeds(strategy: str) -> None:
    assert acc(strategy, "class", SEEDS) > acc("naive", "class", SEEDS) + 0.3


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["lwf", "mas", "er", "der++"])
def test_better_than_naive_in_domain_incremental(strategy: str) -> None:
    assert acc(strategy, "domain", SEEDS) > acc("naive", "domain", SEEDS) + 0.005


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["adam+ewc", "adam+online-ewc", "adam+si", "adam+mas"])
def test_regularizers_under_adam_far_above_adam_in_domain_incremental(strategy: str) -> None:
    assert acc(strategy, "domain", SEEDS) > acc("adam", "domain", SEEDS) + 0.15


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["lwf", "er", "der++"])
def test_better_than_naive_in_task_incremental(strategy: str) -> None:
    assert acc(strategy, "task", SEEDS) > acc("naive", "task", SEEDS) + 0.01


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ewc", "er"])
def test_permuted_above_naive_with_less_forgetting(strategy: str) -> None:
    scenario = "permuted-mnist"
    assert acc(strategy, "domain", SEEDS, scenario) > acc("naive", "domain", SEEDS, scenario)
    assert bwt(strategy, "domain", SEEDS, scenario) > bwt("naive", "domain", SEEDS, scenario)
