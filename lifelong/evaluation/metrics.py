"""Continual-learning metrics: pure functions of the accuracy matrix.

Conventions (0-based): ``R[i][j]`` is the test accuracy on task ``j`` after training on task
``i``; ``b[j]`` is the accuracy of the untrained (random-init) model on task ``j``. Accuracies
are fractions in [0, 1]. Entries strictly above the diagonal (tasks not trained yet) may be NaN
when they were not evaluated, except where a metric reads them (``fwt`` needs the first
superdiagonal). Every function copies its input and never modifies it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "FEW_SHOT_KEYS",
    "UNDEFINED_FOR_ONE_TASK",
    "a_auc",
    "acc",
    "average_accuracy_curve",
    "bti",
    "bwt",
    "few_shot",
    "forgetting",
    "forgetting_matrix",
    "forward_transfer_matrix",
    "fwt",
    "lca",
    "learning_accuracy",
    "near_chance",
    "online_summary",
    "summarize",
    "unlearned_tasks",
]

UNDEFINED_FOR_ONE_TASK: frozenset[str] = frozenset({"bwt", "fwt", "forgetting"})
"""Keys of `summarize` that are NaN when T == 1 (print them as "n/a (needs >= 2 tasks)")."""

_PERCENT_HINT = "accuracies are fractions in [0, 1]; divide percentages by 100"


def _matrix(R: ArrayLike, *, superdiagonal: bool = False) -> NDArray[np.float64]:
    """Return a validated float copy of R; the lower triangle (and superdiagonal) must be finite."""
    try:
        m = np.array(R, dtype=np.float64)  # a copy, so the caller's array is never aliased
    except (TypeError, ValueError) as err:
        raise ValueError(f"R must be a numeric T x T accuracy matrix: {err}") from None
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise ValueError(f"R must be a square T x T matrix with T >= 1, got shape {m.shape}")
    if np.isinf(m).any():
        i, j = np.argwhere(np.isinf(m))[0]
        raise ValueError(f"R[{i}][{j}] is infinite; {_PERCENT_HINT}")
    required = np.tril(np.ones(m.shape, dtype=bool))
    where = "on or below the diagonal"
    if superdiagonal:
        required |= np.eye(m.shape[0], k=1, dtype=bool)
        where = "on or below the first superdiagonal (R[i-1][i] is needed for forward transfer)"
    missing = np.argwhere(np.isnan(m) & required)
    if missing.size:
        i, j = missing[0]
        raise ValueError(f"R[{i}][{j}] is NaN; entries {where} must be evaluated accuracies")
    outside = np.argwhere((m < 0.0) | (m > 1.0))  # NaN compares False, so it is skipped
    if outside.size:
        i, j = outside[0]
        raise ValueError(f"R[{i}][{j}] = {m[i, j]:g} is outside [0, 1]; {_PERCENT_HINT}")
    return m


def _baseline(b: ArrayLike, num_tasks: int) -> NDArray[np.float64]:
    """Return a validated float copy of b: T finite accuracies in [0, 1]."""
    try:
        v = np.array(b, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"b must be a numeric vector of T accuracies: {err}") from None
    if v.shape != (num_tasks,):
        raise ValueError(f"b must have shape ({num_tasks},) to match R, got {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError(f"b[{np.argwhere(~np.isfinite(v))[0][0]}] is not finite")
    outside = np.argwhere((v < 0.0) | (v > 1.0))
    if outside.size:
        j = outside[0][0]
        raise ValueError(f"b[{j}] = {v[j]:g} is outside [0, 1]; {_PERCENT_HINT}")
    return v


def acc(R: ArrayLike) -> float:
    """Average accuracy over all tasks at the end of the stream.

    Args:
        R: accuracy matrix, shape [T, T].
    Returns:
        ACC = (1/T) sum_j R[T-1][j], a float in [0, 1].
    References:
        Lopez-Paz & Ranzato 2017, "Gradient Episodic Memory for Continual Learning" (ACC).
    """
    m = _matrix(R)
    return float(m[-1].mean())


def bwt(R: ArrayLike) -> float:
    """Backward transfer: how training on later tasks changed accuracy on earlier ones.

    Normalised by T - 1, as in the GEM paper. GEM's, MER's and La-MAML's reference code
    divides by T instead, so their printed value is (T-1)/T times this one.

    Args:
        R: accuracy matrix, shape [T, T].
    Returns:
        BWT = 1/(T-1) sum_{i<T-1} (R[T-1][i] - R[i][i]), a float in [-1, 1]; NaN if T == 1.
    References:
        Lopez-Paz & Ranzato 2017, "Gradient Episodic Memory for Continual Learning" (BWT).
    """
    m = _matrix(R)
    if len(m) == 1:
        return float("nan")
    return float((m[-1, :-1] - np.diag(m)[:-1]).mean())


def fwt(R: ArrayLike, b: ArrayLike) -> float:
    """Forward transfer: accuracy on a task just before training on it, above random init.

    Normalised by T - 1, as in the GEM paper (its reference code divides by T).

    Args:
        R: accuracy matrix, shape [T, T]; the first superdiagonal R[i-1][i] must be finite.
        b: accuracy of the random-init model per task, shape [T].
    Returns:
        FWT = 1/(T-1) sum_{i>=1} (R[i-1][i] - b[i]), a float in [-1, 1]; NaN if T == 1.
    References:
        Lopez-Paz & Ranzato 2017, "Gradient Episodic Memory for Continual Learning" (FWT).
    """
    m = _matrix(R, superdiagonal=True)
    v = _baseline(b, len(m))
    if len(m) == 1:
        return float("nan")
    return float((np.diag(m, k=1) - v[1:]).mean())


def forgetting(R: ArrayLike) -> float:
    """Average forgetting at the end of the stream: best past accuracy minus final accuracy.

    Avalanche reports R[j][j] - R[T-1][j] instead (accuracy right after learning task j rather
    than the best one); Mammoth, continuum, FACIL and Renate use this max-based form.

    Args:
        R: accuracy matrix, shape [T, T].
    Returns:
        F = 1/(T-1) sum_{j<T-1} f_j with f_j = max_{j<=l<T-1} R[l][j] - R[T-1][j] (the
        rows from task j on: see :func:`forgetting_matrix`), a float in [-1, 1]; NaN if
        T == 1.
    References:
        Chaudhry et al. 2018, "Riemannian Walk for Incremental Learning: Understanding
        Forgetting and Intransigence" (forgetting measure F_k at k = T).
    """
    m = _matrix(R)
    if len(m) == 1:
        return float("nan")
    return float(np.nanmean(forgetting_matrix(m)[-1]))


def learning_accuracy(R: ArrayLike) -> float:
    """Learning accuracy (LA): mean accuracy on each task right after training on it.

    Args:
        R: accuracy matrix, shape [T, T].
    Returns:
        LA = (1/T) sum_i R[i][i], a float in [0, 1].
    References:
        Riemer et al. 2019, "Learning to Learn without Forgetting by Maximizing Transfer and
        Minimizing Interference" (LA).
    """
    m = _matrix(R)
    return float(np.diag(m).mean())


NEAR_CHANCE_MARGIN = 0.1
"""An accuracy is near chance when it lies within this fraction of the way from chance to 1."""


def near_chance(accuracy: float, chance: float) -> bool:
    """Whether ``accuracy`` is at most ``chance + 0.1 (1 - chance)`` (or below chance).

    Args:
        accuracy: a fraction in [0, 1].
        chance: the accuracy of guessing: 1 / the outputs the head chooses among (class-IL
            Split-MNIST 1/10; task-IL, where each task's head holds its two classes, 1/2).
    Returns:
        True when the accuracy is no better than a tenth of the way from chance to 1.
    References:
        None: a sanity check of lifelong's evaluator, not a published metric.
    """
    return bool(accuracy <= chance + NEAR_CHANCE_MARGIN * (1 - chance))


def unlearned_tasks(R: ArrayLike, chance: float) -> list[int]:
    """The tasks whose accuracy right after training them, ``R[k][k]``, is near chance.

    Args:
        R: accuracy matrix, shape [T, T] (or the rows of the tasks trained so far).
        chance: as in :func:`near_chance`.
    Returns:
        Task indices k, ascending.
    References:
        R[k][k] is the per-task term of LA (Riemer et al. 2019).
    """
    m = np.array(R, dtype=np.float64)
    return [k for k in range(min(m.shape)) if near_chance(float(m[k, k]), chance)]


def bti(R: ArrayLike) -> float:
    """Backward transfer and interference (BTI): retained accuracy minus learning accuracy.

    Args:
        R: accuracy matrix, shape [T, T].
    Returns:
        BTI = ACC - LA = (1/T) sum_i (R[T-1][i] - R[i][i]), a float in [-1, 1]; 0 if T == 1.
    References:
        Riemer et al. 2019, "Learning to Learn without Forgetting by Maximizing Transfer and
        Minimizing Interference" (BTI = RA - LA).
    """
    return acc(R) - learning_accuracy(R)


def average_accuracy_curve(R: ArrayLike) -> NDArray[np.float64]:
    """Average accuracy over the tasks seen so far, after each task.

    Args:
        R: accuracy matrix, shape [T, T].
    Returns:
        Array of shape [T] with entry k = 1/(k+1) sum_{j<=k} R[k][j]; the last entry is ACC.
    References:
        Lopez-Paz & Ranzato 2017, "Gradient Episodic Memory for Continual Learning" (ACC
        evaluated after each task, as plotted in its figures).
    """
    m = _matrix(R)
    return np.array([m[k, : k + 1].mean() for k in range(len(m))])


def forgetting_matrix(R: ArrayLike) -> NDArray[np.float64]:
    """Forgetting of every seen task after every task, for heatmaps.

    Args:
        R: accuracy matrix, shape [T, T].
    Returns:
        Array F of shape [T, T] with F[k][j] = max_{j<=l<k} R[l][j] - R[k][j] for j < k and
        NaN for j >= k (a task not yet passed cannot be forgotten). Only rows from task j on
        count: accuracy on a task before it was trained (above the diagonal) is no knowledge
        that could be forgotten, and Mammoth, FACIL and continuum, which keep only the tasks
        seen so far, take the same maximum. The mean of the last row's finite entries is
        `forgetting(R)`.
    References:
        Chaudhry et al. 2018, "Riemannian Walk for Incremental Learning: Understanding
        Forgetting and Intransigence" (f_j^k).
    """
    m = _matrix(R)
    out = np.full(m.shape, np.nan)
    for k in range(1, len(m)):
        for j in range(k):
            out[k, j] = m[j:k, j].max() - m[k, j]  # the lower triangle: always evaluated
    return out


def forward_transfer_matrix(R: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
    """Accuracy on every future task above random init, after every task, for heatmaps.

    Args:
        R: accuracy matrix, shape [T, T]; unevaluated entries above the diagonal stay NaN.
        b: accuracy of the random-init model per task, shape [T].
    Returns:
        Array of shape [T, T] with entry [i][j] = R[i][j] - b[j] for j > i and NaN for j <= i.
        The mean of its first superdiagonal is `fwt(R, b)`.
    References:
        Lopez-Paz & Ranzato 2017, "Gradient Episodic Memory for Continual Learning" (the
        terms of FWT, extended to every j > i).
    """
    m = _matrix(R)
    v = _baseline(b, len(m))
    upper = np.triu(np.ones(m.shape, dtype=bool), k=1)
    return np.where(upper, m - v[None, :], np.nan)


def summarize(R: ArrayLike, b: ArrayLike) -> dict[str, float]:
    """All scalar metrics of one run.

    Args:
        R: accuracy matrix, shape [T, T]; the first superdiagonal must be finite.
        b: accuracy of the random-init model per task, shape [T].
    Returns:
        {"acc", "bwt", "fwt", "forgetting", "la", "bti"} -> float; the keys in
        `UNDEFINED_FOR_ONE_TASK` are NaN when T == 1. BWT and FWT are normalised by T - 1.
    References:
        Lopez-Paz & Ranzato 2017 (ACC, BWT, FWT); Chaudhry et al. 2018 (forgetting);
        Riemer et al. 2019 (LA, BTI).
    """
    return {
        "acc": acc(R),
        "bwt": bwt(R),
        "fwt": fwt(R, b),
        "forgetting": forgetting(R),
        "la": learning_accuracy(R),
        "bti": bti(R),
    }


def a_auc(samples: ArrayLike, accuracies: ArrayLike) -> float:
    """A_AUC: the area under the anytime accuracy curve over samples seen, normalised by the
    samples seen at the last evaluation.

    ``A_AUC = sum_i a_i (n_i - n_{i-1}) / n_k`` with ``n_0 = 0``: accuracy ``a_i`` evaluated
    after ``n_i`` samples (the right Riemann sum of Koh et al., divided by ``n_k`` so it is an
    accuracy in [0, 1]); with evaluations every ``dn`` samples it is their mean.

    Args:
        samples: ``[k]`` samples seen at each evaluation, strictly increasing, positive.
        accuracies: ``[k]`` the accuracy at each.

    Returns:
        A_AUC, a fraction in [0, 1].

    References: Koh et al. 2022, "Online Continual Learning on Class Incremental Blurry Task
    Configuration with Anytime Inference" (ICLR), Sec. 3.
    """
    n = np.array(samples, dtype=np.float64)
    a = np.array(accuracies, dtype=np.float64)
    if n.ndim != 1 or n.shape != a.shape or len(n) == 0:
        raise ValueError(
            f"samples and accuracies must be equal non-empty lists: {n.shape}, {a.shape}"
        )
    if n[0] <= 0 or (np.diff(n) <= 0).any():
        raise ValueError("samples must be positive and strictly increasing")
    if np.isnan(a).any() or (a < 0).any() or (a > 1).any():
        raise ValueError(f"anytime accuracies must lie in [0, 1]; {_PERCENT_HINT}")
    widths = np.diff(n, prepend=0.0)
    return float((a * widths).sum() / n[-1])


def lca(curves: ArrayLike) -> float:
    """LCA_beta, the learning curve area: how fast a learner learns a new task.

    ``Z_b = mean_k a_{k,b,k}``, the accuracy on task ``k`` after ``b`` of its batches
    (``b = 0`` before its first), averaged over tasks; ``LCA_beta = mean_{b=0..beta} Z_b``.

    Args:
        curves: ``[T, beta + 1]``, row ``k`` the accuracies on task ``k`` after 0..beta of
            its batches.

    Returns:
        LCA_beta, a fraction in [0, 1].

    References: Chaudhry, Ranzato, Rohrbach & Elhoseiny 2019, "Efficient Lifelong Learning
    with A-GEM" (ICLR), Sec. 3 (Eq. 3).
    """
    z = _curves(curves, "LCA curves")
    return float(z.mean(axis=0).mean())


def few_shot(accuracies: ArrayLike) -> NDArray[np.float64]:
    """Few-shot adaptation: per number of steps, the accuracy on a task after that many SGD
    steps on its first samples, from the weights the stream reached just before it,
    averaged over tasks.

    Args:
        accuracies: ``[T, K]``, row ``k`` the accuracies on task ``k`` after each of the
            ``K`` step counts (lifelong measures 1, 5 and 10).

    Returns:
        ``[K]`` the mean over tasks.

    References: the measure of learning to learn in Finn et al. 2017 (MAML) and Javed &
    White 2019 (OML), taken here on every task of the stream before it is trained.
    """
    return _curves(accuracies, "few-shot accuracies").mean(axis=0)


def _curves(values: ArrayLike, what: str) -> NDArray[np.float64]:
    m = np.array(values, dtype=np.float64)
    if m.ndim != 2 or 0 in m.shape:
        raise ValueError(f"{what} must be a non-empty [T, n] table, got shape {m.shape}")
    if np.isnan(m).any() or (m < 0).any() or (m > 1).any():
        raise ValueError(f"{what} must lie in [0, 1]; {_PERCENT_HINT}")
    return m


FEW_SHOT_KEYS = ("few_shot_1", "few_shot_5", "few_shot_10")


def online_summary(record: Mapping[str, Any]) -> dict[str, float]:
    """The online metrics a run's record holds: only those that were measured.

    Args:
        record: :class:`lifelong.evaluation.anytime.OnlineRecorder`'s record: ``anytime`` pairs
            ``[samples seen, accuracy]`` (NaN before anything was seen: left out), ``lca``
            ``[T, beta + 1]``, ``few_shot`` ``[T, 3]``.

    Returns:
        ``a_auc`` (:func:`a_auc`) and ``a_last`` (the last anytime accuracy), ``lca``
        (:func:`lca`), ``few_shot_1``, ``few_shot_5``, ``few_shot_10`` (:func:`few_shot`).

    References: Koh et al. 2022 (ICLR); Chaudhry et al. 2019 (ICLR), as in each function.
    """
    out: dict[str, float] = {}
    anytime = [(n, a) for n, a in record.get("anytime", []) if not np.isnan(a)]
    if anytime:
        out["a_auc"] = a_auc(*zip(*anytime, strict=True))
        out["a_last"] = float(anytime[-1][1])
    if record.get("lca"):
        out["lca"] = lca(record["lca"])
    if record.get("few_shot"):
        out.update(zip(FEW_SHOT_KEYS, few_shot(record["few_shot"]).tolist(), strict=True))
    return out
