"""The classic strategies behave as the literature says, on the embedded mnist5k digits.

Claims (van de Ven et al. 2019, "Three scenarios for continual learning"; Chaudhry et al.
2019 for ER): replay lifts class-incremental Split-MNIST far above fine-tuning, which
sits near 20%; the regularizers alone do not lift it there, and help in the task- and
domain-incremental forms. The default protocol is used (one epoch, batch 32, MLP
100-100); Permuted-MNIST runs take the weaker penalties of its report suite.
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


# Ten permutations want weak penalties (the defaults but SI's, 1).
PERMUTED_STRENGTHS = {"ewc.lam": 5, "online-ewc.lam": 10, "si.lam": 3, "mas.lam": 0.01}
# Split-MNIST's domain and task forms gain from stronger penalties than the defaults, which
# are tuned on Permuted-MNIST and gain almost nothing there (domain: ewc 0.659, mas 0.661
# against naive's 0.657; reports/classic-strategies.md): the per-scenario strengths the
# README gives (the former Split-MNIST defaults; online-ewc as ewc).
SPLIT_STRENGTHS = {"ewc.lam": 1000, "online-ewc.lam": 1000, "si.lam": 300, "mas.lam": 3}


@functools.cache
def scores(
    scenario: str, strategy: str, setting: str, seed: int, epochs: int = 1
) -> tuple[float, float]:
    """(ACC, BWT) of one run on the CPU, without curves."""
    settings: dict[str, object] = {"setting": setting, "eval_every": 0}
    if epochs != 1:  # a bare key; gdumb has an epochs parameter of its own
        settings["epochs"] = epochs
    settings.update({k: v for k, v in ADAM_STRENGTHS.items() if k.startswith(strategy + ".")})
    if scenario == "split-mnist" and setting in ("domain", "task"):
        settings.update({k: v for k, v in SPLIT_STRENGTHS.items() if k.split(".")[0] == strategy})
    if scenario == "permuted-mnist":
        parts = strategy.split("+")
        settings.update({k: v for k, v in PERMUTED_STRENGTHS.items() if k.split(".")[0] in parts})
    result = lifelong.run(scenario, strategy, seed=seed, device="cpu", settings=settings)
    return result.metrics["acc"], result.metrics["bwt"]


def acc(
    strategy: str,
    setting: str,
    seeds: tuple[int, ...] = (0,),
    scenario: str = "split-mnist",
    epochs: int = 1,
) -> float:
    return statistics.fmean(scores(scenario, strategy, setting, s, epochs)[0] for s in seeds)


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
    """The paper's LwF, at the literature's level in Split domain-IL (van de Ven et al.
    2019: 71.5 against fine-tuning's 59.2; here seed 0 0.669 against 0.635; with the T^2
    factor of their distillation, lam 4, it gained 0.08 and more)."""
    assert acc("lwf", "domain") > acc("naive", "domain") + 0.02


def test_ewc_beats_naive_in_domain_incremental() -> None:
    assert acc("ewc", "domain") > acc("naive", "domain") + 0.03


def test_ewc_under_adam_beats_adam_in_domain_incremental() -> None:
    assert acc("adam+ewc", "domain") > acc("adam", "domain") + 0.1


SEEDS = (0, 1, 2)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ewc", "online-ewc", "si", "mas", "lwf"])
def test_regularizers_alone_do_not_lift_class_incremental(strategy: str) -> None:
    assert acc(strategy, "class", SEEDS) < min(acc("naive", "class", SEEDS) + 0.05, 0.3)


@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "margin"), [("er", 0.3), ("der++", 0.3), ("er+ewc", 0.15)])
def test_replay_far_above_naive_in_class_incremental_over_seeds(
    strategy: str, margin: float
) -> None:
    """EWC at its Split-MNIST strength holds back what replay would relearn (er+ewc 0.39)."""
    assert acc(strategy, "class", SEEDS) > acc("naive", "class", SEEDS) + margin


@pytest.mark.slow
@pytest.mark.parametrize(
    ("strategy", "margin"),
    [
        ("ewc", 0.08),
        ("online-ewc", 0.08),
        ("si", 0.08),
        ("mas", 0.03),
        ("lwf", 0.03),  # the paper's LwF: 0.700 against 0.657 (0.08 with T^2, lam 4)
        ("er", 0.1),
        ("der++", 0.1),
    ],
)
def test_better_than_naive_in_domain_incremental(strategy: str, margin: float) -> None:
    assert acc(strategy, "domain", SEEDS) > acc("naive", "domain", SEEDS) + margin


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["adam+ewc", "adam+online-ewc", "adam+si", "adam+mas"])
def test_regularizers_under_adam_far_above_adam_in_domain_incremental(strategy: str) -> None:
    assert acc(strategy, "domain", SEEDS) > acc("adam", "domain", SEEDS) + 0.15


@pytest.mark.slow
@pytest.mark.parametrize(
    ("strategy", "margin"),
    [
        ("ewc", 0.008),
        ("online-ewc", 0.008),
        ("si", 0.008),
        ("lwf", 0.01),
        ("er", 0.008),
        ("der++", 0.01),
    ],
)
def test_better_than_naive_in_task_incremental(strategy: str, margin: float) -> None:
    """One epoch: naive forgets only 0.03 here, so the margins are small."""
    assert acc(strategy, "task", SEEDS) > acc("naive", "task", SEEDS) + margin


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ewc", "online-ewc", "si", "mas"])
def test_far_better_than_naive_in_task_incremental_with_ten_epochs(strategy: str) -> None:
    """Ten epochs per task, where fine-tuning forgets (reports/classic-strategies.md)."""
    ten = {"seeds": SEEDS, "epochs": 10}
    assert acc(strategy, "task", **ten) > acc("naive", "task", **ten) + 0.03


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ewc", "er"])
def test_permuted_above_naive_with_less_forgetting(strategy: str) -> None:
    scenario = "permuted-mnist"
    assert acc(strategy, "domain", SEEDS, scenario) > acc("naive", "domain", SEEDS, scenario)
    assert bwt(strategy, "domain", SEEDS, scenario) > bwt("naive", "domain", SEEDS, scenario)
