"""Learning at defaults: every built-in part, alone and composed, learns every task.

The contract tests (``test_conformance.py``) check that runs complete and reproduce; these
check that they *learn*: at their defaults, no divergence and, right after training task
k, an accuracy on task k well above chance. Every two- and three-part composition runs
in the slow set (``pytest -m slow tests/test_learning.py``), with every whole strategy on
small versions of the real scenarios in each setting; the default run takes a fixed sample
of the compositions, CI another (``.ci/run``). The real-data tests pin the failures
issue 16 reported (Split-MNIST class-incremental: La-MAML and C-MAML learning no task
after the first, regularizers stopping the last task, ``agem+si`` and ``la-maml+ewc``
diverging).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

import lifelong
from lifelong import MetaInit, Regularizer, UserError, compose
from lifelong.composition.compose import SHORTCUTS, configure, default_learner, partner_defaults
from lifelong.composition.plan import plan_runs
from lifelong.composition.registry import parts, strategies
from lifelong.contracts.stream import Stream
from lifelong.execution.runner import execute

CPU = torch.device("cpu")
# A small protocol in which a tiny separable stream is learnt: 20 steps per task.
PROTOCOL = {"batch_size": "8", "epochs": "5", "eval_every": "0", "hidden": "32"}
# Meta-trained inits train only a little here; MER's 10 x 11 single-sample steps per
# example take 40 s a run at its defaults, so it learns from 2 batches per example.
LIGHTER = {
    "mer": {"mer.batches_per_example": "2"},
    **{
        init: {f"{init}.meta_steps": "2", f"{init}.source": "permuted"}
        for init, cls in parts().items()
        if issubclass(cls, MetaInit)
    },
    # OML freezes its RLN: it is meta-trained for 20 steps (2 leave it a random projection
    # under which oml+replay missed class-IL's later tasks, [1, 0.5, 0.44]) on the default
    # model, whose two hidden layers leave an RLN before OML's two-layer PLN. (At its
    # default 500 steps, meta-trained on permuted MNIST, the RLN suits these synthetic
    # streams less: 22 domain-IL compositions, c-maml+oml [0.75, 1, 1], miss the floor.)
    "oml": {"oml.meta_steps": "20", "oml.source": "permuted", "hidden": "100,100"},
}
# Adam at its lr 0.001 learns these tasks only partly in 20 steps (adam+replay, class-IL:
# [1.0, 0.5, 0.5]); in 80 (20 epochs) it learns every one, so it runs longer.
LONGER = {"adam": {"epochs": "20"}}
# Open: none of the 2- and 3-part compositions with OML in any setting.
OPEN: set[tuple[str, str]] = set()
# Cases that miss the floor only when lightened, so they run at their defaults (about a
# minute each): MER's 2 batches per example leave a penalty holding OML's PLN from
# class-IL's third task ({ewc,mas,online-ewc,si}+mer+oml: [1, 1, 0.5]; at MER's default
# 10, ewc+mer+oml [1, 1, 1]); OML's 20 meta steps leave cosine+oml+sync-la-maml's third
# class-IL task at 0.69 (at its default 500 it learns every task); Meta-SGD's 2 meta steps
# leave mas+meta-sgd+replay's third class-IL task at 0.56 (at its defaults [1, 1, 1]).
AT_DEFAULTS = {
    ("ewc+mer+oml", "class"): "mer.batches_per_example",
    ("mas+mer+oml", "class"): "mer.batches_per_example",
    ("mer+oml+online-ewc", "class"): "mer.batches_per_example",
    ("mer+oml+si", "class"): "mer.batches_per_example",
    ("cosine+oml+sync-la-maml", "class"): "oml.meta_steps",
    ("mas+meta-sgd+replay", "class"): "meta-sgd.meta_steps",
}
# ProtoNets' frozen body is meant for the ncm head, with which it learns every task here in
# each setting ([1.0, 1.0, 1.0], also with replay). With the linear head on its 2-step
# meta-init it learns the later class-IL tasks only partly: protonet [0.5, 0.62, 0.94],
# protonet+replay and der+protonet+replay [0.5, 0.0, 0.0] (task-IL [0.81, 0.5, 0.5]).
FLOOR_ONLY_WITH = {"protonet": "ncm"}


def composable(names: tuple[str, ...]) -> bool:
    try:
        compose("+".join(names))
    except UserError:
        return False
    return True


def compositions(k: int) -> list[str]:
    """Every ``k``-part composition of built-in parts that ``compose`` accepts."""
    found = sorted(parts())
    return ["+".join(c) for c in itertools.combinations(found, k) if composable(c)]


def singles() -> list[str]:
    """Every built-in strategy, shortcut and part that runs on its own (or with replay)."""
    alone = [n if composable((n,)) else f"{n}+replay" for n in sorted(parts())]
    return [*sorted(strategies()), *SHORTCUTS, *(n for n in alone if composable((n,)) or "+" in n)]


def learned(spec: str, stream: Stream) -> tuple[str, list[float]]:
    """The run's status and its accuracy on each task right after training it."""
    used = spec.split("+")
    lighter = {
        k: v
        for part, extra in {**LIGHTER, **LONGER}.items()
        if part in used
        for k, v in extra.items()
    }
    lighter.pop(AT_DEFAULTS.get((spec, stream.setting), ""), None)
    (run,) = plan_runs("split-mnist", [spec], [0], {**PROTOCOL, **lighter})
    result = execute(run, stream, CPU)
    return result.status, [result.matrix[k][k] for k in range(len(result.matrix))]


def check_learns(spec: str, stream: Stream) -> None:
    status, diagonal = learned(spec, stream)
    assert status == "ok", f"{spec} on {stream.setting}: {status}"
    assert all(math.isfinite(v) for v in diagonal)
    # Two classes a task: chance is 0.5 (a model that picks one of the task's classes).
    used = set(spec.split("+"))
    if any(part in used and head not in used for part, head in FLOOR_ONLY_WITH.items()):
        return
    if (spec, stream.setting) in OPEN:
        assert min(diagonal) < 0.8, f"{spec} on {stream.setting} learns now: drop it from OPEN"
        pytest.xfail(f"open (see OPEN): {diagonal}")
    assert min(diagonal) >= 0.8, f"{spec} on {stream.setting}: {diagonal}"


@pytest.fixture(autouse=True, scope="module")
def module_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The module's own cache: a meta-trained init (keyed by its whole configuration) is
    trained once for all the module's tests that use it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LIFELONG_CACHE", str(tmp_path_factory.mktemp("learning-cache")))
        yield


SAMPLE = random.Random(16).sample(compositions(2), 4) + random.Random(16).sample(compositions(3), 2)


@pytest.mark.parametrize("spec", ["agem+si", "la-maml+ewc", "mer+ewc", *SAMPLE])
def test_sampled_compositions_learn_every_task(spec: str, any_setting: str, make_stream) -> None:
    check_learns(spec, make_stream(any_setting, per_class=16))


@pytest.mark.parametrize("spec", ["oml", "oml+replay", "oml+si", "der+oml+replay"])
def test_oml_learns_every_class_incremental_task(spec: str, make_stream) -> None:
    """Was (here, 20 meta steps): oml+replay [0.62, 0, 0] and oml+si [0.94, 0.88, 0.75]
    with a PLN of the output layer alone, which learns new classes only slowly from a
    frozen RLN; OML's PLN is its two final layers. der+oml+replay was [1, 1, 0.5], DER's
    logit term holding the PLN (every meta-learned init declares der.lam 0.1;
    lifelong.MetaInit)."""
    check_learns(spec, make_stream("class", per_class=16))


def test_a_meta_learned_init_declares_ders_gentler_logit_term() -> None:
    """The meta-learned inits that learn the output layer (maml, meta-sgd, reptile; oml, for
    a reason of its own) declare ``der.lam`` 0.1 (DER alone: 0.5); ``--set`` wins. Was 0.5:
    c-maml+der+maml's first Split task-IL task stayed at chance (0.5)."""
    for spec in ["der+maml+replay", "c-maml+der+meta-sgd", "der+replay+reptile", "der+oml+replay"]:
        assert compose(spec).regularizers[0].lam == 0.1, spec
    assert compose("der++").regularizers[0].lam == 0.5
    # cosine declares the same value, so the two agree (different values would be refused)
    assert compose("cosine+der+maml+replay").regularizers[0].lam == 0.1
    # ProtoNets learn no output layer to be confident with; they keep DER's own strength
    assert compose("der+protonet+replay").regularizers[0].lam == 0.5
    (run,) = plan_runs("split-mnist", ["der+maml+replay"], [0], {"der.lam": "0.3"})
    assert run.strategy.regularizers[0].lam == 0.3


@pytest.mark.parametrize(
    "spec", ["cosine+der+sync-la-maml", "cosine+la-maml+lwf", "cosine+lwf+sync-la-maml"]
)
def test_cosine_head_with_distillation_learns_every_class_incremental_task(
    spec: str, make_stream
) -> None:
    """Was: the third task at 0.5-0.625, the distillation (DER 0.5, LwF 1 with Hinton's
    T^2) holding the old logits of a head whose logits are bounded by its scale;
    ``cosine`` declares der.lam 0.1 for its partners, and LwF's own strength without T^2
    is a quarter of what it was."""
    check_learns(spec, make_stream("class", per_class=16))


def test_cosine_declares_a_weaker_distillation() -> None:
    composite = compose("cosine+der+lwf+replay")
    lams = {r.name: r.lam for r in composite.regularizers}
    assert lams == {"der": 0.1, "lwf": 1.0}
    assert {r.name: r.lam for r in compose("der+lwf+replay").regularizers} == {
        "der": 0.5,
        "lwf": 1.0,
    }


@pytest.mark.parametrize("spec", ["lwf+replay", "er+lwf"])
def test_lwf_with_replay_learns_every_domain_incremental_task(spec: str, make_stream) -> None:
    """Was: the third task at 0.5 (chance) in 22 compositions, the distillation averaged over
    the incoming samples outweighing their cross-entropy, which replay had diluted."""
    check_learns(spec, make_stream("domain", per_class=16))


@pytest.mark.slow
@pytest.mark.parametrize("spec", singles() + compositions(2) + compositions(3))
def test_every_part_and_composition_learns_every_task(
    spec: str, any_setting: str, make_stream
) -> None:
    check_learns(spec, make_stream(any_setting, per_class=16))


# CI's share of the slow set (.ci/run): a fixed sample of the 2- and 3-part
# compositions, other than the default run's, beside the real scenarios' whole strategies.
CI_SAMPLE = random.Random(17).sample(compositions(2), 8) + random.Random(17).sample(
    compositions(3), 8
)


@pytest.mark.slow
@pytest.mark.parametrize("spec", CI_SAMPLE)
def test_ci_sample_of_compositions_learns_every_task(
    spec: str, any_setting: str, make_stream
) -> None:
    check_learns(spec, make_stream(any_setting, per_class=16))


def split_class_diagonal(spec: str) -> list[float]:
    result = lifelong.run("split-mnist", spec, seed=0, device="cpu")
    assert result.status == "ok"
    return [result.matrix[k][k] for k in range(len(result.matrix))]


@pytest.mark.parametrize("spec", ["la-maml", "c-maml", "sync-la-maml"])
def test_la_maml_family_learns_every_task_class_incremental(spec: str) -> None:
    """At its defaults on Split-MNIST class-IL each task is learnt (was: none after the
    first, LA 0.199: the look-ahead over 32 samples at the paper's per-sample rate)."""
    assert min(split_class_diagonal(spec)) > 0.6


@pytest.mark.parametrize("spec", ["ewc", "online-ewc", "si", "mas"])
def test_regularizers_leave_class_incremental_tasks_learnable(spec: str) -> None:
    """At their defaults the penalties do not stop Split-MNIST class-IL's later tasks from
    being learnt (was: EWC's last task 0.5, SI's 0.59: anchoring the shared features at a
    strength tuned for the domain form left the new classes unlearnt)."""
    assert min(split_class_diagonal(spec)) > 0.85


def test_la_maml_declares_the_papers_replay_batch() -> None:
    for spec in ("la-maml", "c-maml+replay", "sync-la-maml+replay+ewc"):
        memory = compose(spec).memory
        assert memory is not None and memory.batch == 10
    er = compose("er").memory
    assert er is not None and er.batch == 0  # elsewhere replay's own: the stream's batch
    configured, _ = configure("la-maml", {"replay.batch": 4})
    assert configured.memory is not None and configured.memory.batch == 4  # --set wins


def test_la_maml_family_defaults_to_the_mean_look_ahead() -> None:
    """The per-sample step of the paper (``sum``) learns no class-IL task after the first
    and only part of short domain-IL streams; ``mean`` is the default, ``sum`` a setting."""
    for spec in ("la-maml", "c-maml", "sync-la-maml"):
        assert compose(spec).learner.look_ahead == "mean"
    configured, _ = configure("la-maml", {"la-maml.look_ahead": "sum"})
    assert configured.learner.look_ahead == "sum"


def test_partner_defaults_that_disagree_are_refused() -> None:
    from types import MappingProxyType

    from lifelong.strategies.lwf import Lwf
    from lifelong.strategies.replay import Reservoir

    class Wants8(Lwf):  # a final part, subclassed for the test only
        partner_defaults = MappingProxyType({"replay": {"batch": 8}})

    class Wants9(Lwf):
        partner_defaults = MappingProxyType({"replay": {"batch": 9}})

    agreed = partner_defaults([Reservoir(), Wants8(), Wants8()], "x")
    assert agreed[0].batch == 8
    with pytest.raises(UserError, match=r"replay\.batch \(8 and 9\)"):
        partner_defaults([Reservoir(), Wants8(), Wants9()], "x")


def test_list_shows_the_declared_default(capsys: pytest.CaptureFixture[str]) -> None:
    from lifelong.cli import main

    assert main(["list", "--strategy", "la-maml"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.split()[:1] == ["batch"])
    assert "default 10" in line and "la-maml's; replay alone: 0" in line


def test_list_names_every_part_that_declares_a_default(capsys: pytest.CaptureFixture[str]) -> None:
    """Was: the second part declaring the same value read the first one's as the
    part's own (``(maml's; der alone: 0.5) (cosine's; der alone: 0.1)``)."""
    from lifelong.cli import main

    assert main(["list", "--strategy", "cosine+der+maml+replay"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.split()[:1] == ["lam"])
    assert line.endswith("(maml's and cosine's; der alone: 0.5)"), line


# The real built-in scenarios, small: every setting of each, the embedded mnist5k digits,
# one epoch of batches of 10 (La-MAML's batch). Split-MNIST keeps its 5 tasks of 2 digits
# (n_tasks must divide the 10 classes); the 10-digit families take 3 tasks and more
# samples, as a 10-way task needs more steps than a 2-way one to be learnt.
REAL_SCENARIOS = {
    "split-mnist": {"n_tasks": "5", "samples_per_task": "300"},
    "permuted-mnist": {"n_tasks": "3", "samples_per_task": "1000"},
    "rotated-mnist": {"n_tasks": "3", "samples_per_task": "1000"},
}
REAL_PROTOCOL = {"batch_size": "10", "eval_every": "0"}  # "epochs" would set gdumb.epochs too
# MER at its 10 batches per example takes about a minute a run here; 2 keep it learning.
# Adam at its lr 0.001 takes longer to learn a task than 30 steps (as LONGER above): one
# pass left adam+replay's last Split class-IL task at 0.29 and adam+ncm's third Rotated
# class-IL task at 0.16 on seed 0 (0.745-0.885 and 0.41-0.43 on seeds 1, 2); two passes
# learn every task on seeds 0-2 (0.90-0.98; 0.73-0.86).
REAL_LIGHTER = {"mer": {"mer.batches_per_example": "2"}, "adam": {"epochs": "2"}}
# ER-ACE trains an incoming batch against its own classes only, so a new class rises above
# the old ones only through its replayed samples, of which a reservoir holds few early in a
# task: in 30 steps the last task stays near chance (class-IL, 300 samples a task:
# [0.995, 0.755, 0.42, 0.92, 0.005]); at 80 steps (800 samples, batch 10) it learns every
# task (ACC 0.823 over seeds 0-2, last task 0.49-0.84). Its floor holds for the others.
LAST_TASK_UNLEARNED = {("er-ace", "split-mnist", "class")}
DEFAULT_PARTS = {default_learner(), "linear", "random"}  # the learner, head and init of none


def canonical(spec: str) -> str:
    """The composition ``spec`` names, without the parts it would take anyway (the ``sgd``
    learner, ``linear`` head, ``random`` init): ``cosine+replay+sgd`` is ``cosine+replay``."""
    return "+".join(sorted(p for p in spec.split("+") if p not in DEFAULT_PARTS)) or spec


# Settings for every composition holding some parts, on a scenario and setting; each entry
# whose parts a composition holds applies, a later one over an earlier. OML's two learning
# layers on its frozen representation remap the same outputs to each Split domain-IL
# task's digits slowly, and LwF's distillation slows them further: in 30 steps oml alone
# leaves seed 1's last task at 0.625 (floor 0.65), lwf+oml seed 0's second at 0.62 (seeds
# 1-2: 0.925, 0.96), and c-maml+cosine+oml, cosine+oml+sync-la-maml and agem+lwf+oml one
# task at 0.605-0.625 (seed 0); in 80 steps every task of each learns on seeds 0-2
# (0.795-0.99).
# The cosine head, whose logits start bounded by its scale 1, raises the newest class-IL
# task over the old ones slowly: in 30 steps seed 0 leaves it at 0.35 with replay ([0.995,
# 0.945, 0.94, 0.965, 0.35]; seeds 1-2: 0.795, 0.885) and at 0.355 with der+sync-la-maml
# (seeds 1-2: 0.37, 0.725); in 80 each learns every task on seeds 0-2 (last task
# 0.955-0.965 and 0.845-0.895).
# MER on OML's frozen representation needs its default 10 batches an example (not
# REAL_LIGHTER's 2) to fit three permutations with the output layers alone (seed 0:
# [0.654, 0.504, 0.367] at 2, floor 0.37; [0.739, 0.666, 0.493] at 10, about a minute;
# with replay 0.354 and 0.497); so on Split domain-IL, at 30 steps a task (last task 0.625
# at 2, floor 0.65; 0.81 at 10; with lwf 0.605 at 2 and 80 steps, 0.69 at 10 and 30).
REAL_PART_SETTINGS: dict[tuple[tuple[str, ...], str, str], dict[str, str]] = {
    (("oml",), "split-mnist", "domain"): {"samples_per_task": "800"},
    (("cosine",), "split-mnist", "class"): {"samples_per_task": "800"},
    (("mer", "oml"), "permuted-mnist", "domain"): {"mer.batches_per_example": "10"},
    (("mer", "oml"), "split-mnist", "domain"): {
        "mer.batches_per_example": "10",
        "samples_per_task": "300",
    },
}


def whole_strategies() -> list[str]:
    """Every built-in strategy, shortcut and regularizer that runs as a whole strategy."""
    alone = [
        n for n, p in sorted(parts().items()) if issubclass(p, Regularizer) and composable((n,))
    ]
    return [*sorted(strategies()), *SHORTCUTS, *alone]


def real_floor(chance: float) -> float:
    """Well above chance: a third of the way from chance to every answer right."""
    return chance + 0.3 * (1 - chance)


def real_diagonal(
    spec: str, scenario: str, setting: str, epochs: int = 1, seed: int = 0
) -> tuple[str, list[float], float]:
    """The run's status, its accuracy on each task right after training it, and chance."""
    used = spec.split("+")
    lighter = {
        k: v for part, extra in REAL_LIGHTER.items() if part in used for k, v in extra.items()
    }
    passes = {"epochs": str(epochs)} if epochs > 1 else {}
    own = {
        k: v
        for (held, on, where), extra in REAL_PART_SETTINGS.items()
        if set(held) <= set(used) and (on, where) == (scenario, setting)
        for k, v in extra.items()
    }
    options = {**REAL_SCENARIOS[scenario], **REAL_PROTOCOL, **lighter, **passes, **own}
    (run,) = plan_runs(scenario, [spec], [seed], {**options, "setting": setting})
    stream = run.scenario.build(seed, None)
    result = execute(run, stream, CPU)
    diagonal = [result.matrix[k][k] for k in range(len(result.matrix))]
    return result.status, diagonal, 1 / stream.n_outputs


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["class", "domain", "task"])
@pytest.mark.parametrize("scenario", sorted(REAL_SCENARIOS))
@pytest.mark.parametrize("spec", whole_strategies())
def test_every_strategy_learns_every_task_of_the_real_scenarios(
    spec: str, scenario: str, setting: str
) -> None:
    status, diagonal, chance = real_diagonal(spec, scenario, setting)
    assert status == "ok", f"{spec} on {scenario}/{setting}: {status}"
    # Well above chance: a third of the way from chance to every answer right, after one
    # pass of 30 (Split) or 100 (Permuted, Rotated) batches.
    floor = real_floor(chance)
    if (spec, scenario, setting) in LAST_TASK_UNLEARNED:
        diagonal = diagonal[:-1]
    if (spec, scenario, setting) in MULTI_EPOCH:
        # one pass learns each task, more weakly: at least four times chance
        assert min(diagonal) >= 4 * chance, f"{spec} on {scenario}/{setting}: {diagonal}"
        status, diagonal, chance = real_diagonal(spec, scenario, setting, epochs=2)
        assert status == "ok", f"{spec} on {scenario}/{setting}, 2 epochs: {status}"
    assert min(diagonal) >= floor, f"{spec} on {scenario}/{setting}: {diagonal}, floor {floor}"


# Methods the literature trains for many epochs, which one pass leaves short of the floor
# on a stream and setting; the test asks one pass for four times chance on every task and
# two epochs for the floor. BiC (250 epochs in its paper) on Permuted-MNIST class-IL: its
# distillation of the old classes' outputs on the new permutation's inputs holds the
# features, so one pass of 100 batches takes the second task's 10 new classes to 0.18-0.25
# (seeds 1, 0; floor 0.32; without the distillation 0.47, ER 0.52); two epochs 0.64-0.69
# (ACC 0.75-0.79), three 0.73-0.75.
MULTI_EPOCH = {("bic", "permuted-mnist", "class")}


def check_learns_real(spec: str, scenario: str, setting: str) -> None:
    """A composition on a small real scenario: no divergence, every task above the floor
    of the whole strategies' test (parts that are only floor-checked with a head: none)."""
    status, diagonal, chance = real_diagonal(spec, scenario, setting)
    assert status == "ok", f"{spec} on {scenario}/{setting}: {status}"
    used = set(spec.split("+"))
    if any(part in used and head not in used for part, head in FLOOR_ONLY_WITH.items()):
        return
    floor = real_floor(chance)
    learns = min(diagonal) >= floor
    case = (canonical(spec), scenario, setting)
    if case in OPEN_REAL_COMPOSITIONS:
        assert not learns, f"{spec} on {scenario}/{setting} learns now: drop it from the open list"
        pytest.xfail(f"open: {OPEN_REAL_COMPOSITIONS[case]}")
    assert learns, f"{spec} on {scenario}/{setting}: {diagonal}, floor {floor}"


# Open (issue 16): compositions that run (no divergence) but leave a task below the floor on
# the small real scenarios, seed 0, with the diagonal measured (floor 0.37 for Split
# class-IL, 0.65 Split domain-IL, 0.32 Permuted/Rotated class-IL, 0.37 their domain-IL);
# listed at the end. The ones that left it:
# (MAS's seven class-IL cases left the list when its importance took the norm of the task's
# own outputs, not of the unseen classes' too, whose rows it anchored before they were
# learnt: every task 0.33-0.89 on seeds 0-2; strategies/mas.py.)
# (ewc+gem left the list when GEM's gradients took one pass: at seed 0 one projected step at
# task 5's end, norm 13.6 against old-task gradients up to 18.8, had sent the last task to
# 0.0; rounded the other way it learns, as on seeds 1-4: last task 0.655-0.9.)
# (lwf+maml and lwf+oml left the list when LwF's distillation dropped Hinton's T^2 factor
# for its paper's loss: with it, the first task's confident outputs held the second
# task's digits on the shared units, second task 0.54, 0.42, 0.665 on seeds 0-2 for
# lwf+maml (now 0.96 on seed 0; strategies/lwf.py); lwf+oml's, 0.575, rose to 0.62, and
# it learns at 80 steps a task, REAL_PART_SETTINGS above.)
# (ncm+protonet on Split domain-IL left the list when ProtoNets' episodes held 10 classes,
# not one task's 2: the frozen body had separated the last task's digits from the other
# tasks' prototypes poorly, seeds 0-2 last task 0.54, 0.64, 0.73; now 0.74, 0.72, 0.715.)
# (oml+replay left the list when the replay batch became the stream's batch size by
# default, as ER's paper, Mammoth and Avalanche have it: with a fixed 32 at this check's
# batch 10, three quarters of each step was replay, and OML's output layers, alone
# learning, left the newest permutation under-learnt, [0.606, 0.456, 0.357]; with 10,
# seeds 0-1: [0.581, 0.546, 0.427], [0.611, 0.496, 0.442]. mer+oml left it for
# REAL_PART_SETTINGS above.)
# (sync-la-maml's compositions in class-IL left the list when its look-ahead started at
# its weights' step.)
# (Ten cases of cosine with meta-sgd (eight compositions, on Permuted-MNIST, and
# cosine+la-maml+meta-sgd on Split class-IL) left the
# list when a head that replaces the output layer stopped taking the rates Meta-SGD had
# learnt for the linear layer it replaced: its weights step at the learner's own rate
# (lifelong/composition/compose.py). The body's meta-learned rates are small and the cosine
# head's logits bounded by its scale, so with the linear layer's rates on its normalised
# weights every permutation stayed below the floor (cosine+meta-sgd task-IL [0.341, 0.316,
# 0.331]; now [0.475, 0.584, 0.655]); all 90 cases of the ten compositions of cosine with
# meta-sgd learn on seed 0, the Split class-IL ones at 300 samples a task: [0.99, 0.895,
# 0.845, 0.655, 0.49] for cosine+la-maml+meta-sgd, before REAL_PART_SETTINGS gave them 800.)
# (c-maml+der with maml or meta-sgd left the list when every meta-learned init declared
# DER's lam 0.1 (lifelong/meta/metatrain.py: MetaInit): such an init's first logits are
# confident (mean |z| 1.7-2.7, a random init's 0.15) and DER, storing them with the first
# task's samples, held that task at chance (c-maml+der+maml task-IL [0.5, 0.885, ...]);
# at 0.1 every task of the four cases learns on seeds 0-2 (first task 0.75-0.995), and
# all 108 cases of the twelve compositions of der with maml, meta-sgd or reptile learn on
# seed 0.)
# (OML's slow Split domain-IL cases left it for REAL_PART_SETTINGS above.)
# Open, measured 2026-12-06 (seed 0; found running part of the three-part check: of its
# 8,856 cases, 2,790 are named with a default part, the two-part cases again; of the
# others, first the 1,791 led by adam, agem or c-maml, then 2,053 of the remaining 4,275
# in a seeded random draw; then every composition of OML with
# MER and a quadratic penalty, and of OML with SI, in domain-IL): a quadratic
# penalty (ewc, online-ewc, si, mas) holding OML's two learning layers, the only weights
# that learn on its frozen representation, in domain-IL, where each task remaps the same
# outputs (the intransigence of quadratic penalties, Chaudhry et al. 2018, on the little
# that may move):
# - with MER (at its own 10 batches an example, REAL_PART_SETTINGS: the last Permuted task
#   0.152-0.317, the last Split one 0.4-0.64; ewc+mer+oml's Split one 0.655 passes; at 2
#   batches, with ewc.lam or si.lam 10x weaker, Permuted still 0.311 and 0.293);
# - with a learner that moves OML's layers less than sgd (c-maml, sync-la-maml) or a
#   replay that halves the incoming batch's share (oml+replay+si, ewc+oml+replay), the
#   third permutation just below (0.36-0.366; seeds 1-2 of c-maml+oml+si 0.405, 0.41, of
#   oml+si+sync-la-maml 0.411, 0.423; at si.lam 0.1, 0.414 and 0.416). Each of the three
#   parts alone holds OML back: c-maml+oml 0.427, oml+si 0.437, c-maml+oml+ewc 0.407.
# And der+la-maml+si on Split class-IL: seed 0's last task 0.335 (seeds 1-2: 0.48, 0.59),
# not looked into; cosine+ewc on Split task-IL (found 2026-12-06, the same before that
# day's changes): seed 0's last task 0.64 against the floor's 0.65 (seeds 1-2: 0.955,
# 0.955; cosine alone 0.925), not looked into.
OPEN_REAL_COMPOSITIONS: dict[tuple[str, str, str], str] = {
    ("c-maml+oml+si", "permuted-mnist", "domain"): "[0.55, 0.459, 0.366]",
    ("oml+si+sync-la-maml", "permuted-mnist", "domain"): "[0.554, 0.454, 0.365]",
    ("oml+replay+si", "permuted-mnist", "domain"): "[0.581, 0.511, 0.362]",
    ("ewc+oml+replay", "permuted-mnist", "domain"): "[0.581, 0.526, 0.36]",
    ("ewc+mer+oml", "permuted-mnist", "domain"): "[0.739, 0.542, 0.317]",
    ("mas+mer+oml", "permuted-mnist", "domain"): "[0.739, 0.517, 0.314]",
    ("mer+oml+online-ewc", "permuted-mnist", "domain"): "[0.739, 0.51, 0.261]",
    ("mer+oml+si", "permuted-mnist", "domain"): "[0.739, 0.205, 0.152]",
    ("mas+mer+oml", "split-mnist", "domain"): "[0.995, 0.9, 0.915, 0.875, 0.64]",
    ("mer+oml+online-ewc", "split-mnist", "domain"): "[0.995, 0.93, 0.915, 0.825, 0.575]",
    ("mer+oml+si", "split-mnist", "domain"): "[0.995, 0.935, 0.88, 0.685, 0.4]",
    ("der+la-maml+si", "split-mnist", "class"): "[0.995, 0.765, 0.72, 0.87, 0.335]",
    ("cosine+ewc", "split-mnist", "task"): "[0.995, 0.94, 0.995, 0.995, 0.64]",
}


def on_real_scenarios(specs: list[str]) -> Callable[[Callable[..., None]], Any]:
    """A slow test over ``specs`` x the real scenarios x the three settings."""

    def mark(test: Callable[..., None]) -> Any:
        for name, values in [
            ("spec", specs),
            ("scenario", sorted(REAL_SCENARIOS)),
            ("setting", ["class", "domain", "task"]),
        ]:
            test = pytest.mark.parametrize(name, values)(test)
        return pytest.mark.slow(test)

    return mark


@on_real_scenarios(compositions(2))
def test_every_two_part_composition_learns_on_real_data(
    spec: str, scenario: str, setting: str
) -> None:
    check_learns_real(spec, scenario, setting)


@on_real_scenarios(compositions(3))
def test_every_three_part_composition_learns_on_real_data(
    spec: str, scenario: str, setting: str
) -> None:
    """8,856 cases, about five hours on one core: run it in parts (``-k "split-mnist and
    domain"``, one pytest per core)."""
    check_learns_real(spec, scenario, setting)


# CI's share of them: a fixed sample of the two- and three-part compositions on each real
# scenario.
REAL_CI_SAMPLE = random.Random(18).sample(compositions(2), 4) + random.Random(18).sample(
    compositions(3), 2
)


@on_real_scenarios(REAL_CI_SAMPLE)
def test_ci_sample_of_compositions_learns_on_real_data(
    spec: str, scenario: str, setting: str
) -> None:
    check_learns_real(spec, scenario, setting)
