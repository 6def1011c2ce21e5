"""Metrics checked against accuracy matrices worked out by hand."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from lifelong.evaluation import metrics
from lifelong.evaluation.metrics import (
    UNDEFINED_FOR_ONE_TASK,
    acc,
    average_accuracy_curve,
    bti,
    bwt,
    forgetting,
    forgetting_matrix,
    forward_transfer_matrix,
    fwt,
    learning_accuracy,
    summarize,
)

NAN = float("nan")

# Task 0 improves while training task 1 (0.90 -> 0.95), so max-based forgetting (0.325)
# differs from -BWT (0.30).
R3 = [
    [0.90, 0.20, 0.10],
    [0.95, 0.80, 0.30],
    [0.60, 0.50, 0.95],
]
B3 = [0.10, 0.10, 0.25]

R4 = [
    [0.80, 0.30, 0.20, 0.60],
    [0.85, 0.90, 0.25, 0.10],
    [0.75, 0.60, 0.85, 0.45],
    [0.50, 0.70, 0.65, 0.95],
]
B4 = [0.10, 0.20, 0.15, 0.30]


def test_scalars_3x3() -> None:
    # acc  = (0.60 + 0.50 + 0.95) / 3 = 2.05 / 3
    assert acc(R3) == pytest.approx(2.05 / 3)
    # bwt  = ((0.60 - 0.90) + (0.50 - 0.80)) / 2 = -0.60 / 2
    assert bwt(R3) == pytest.approx(-0.30)
    # fwt  = ((0.20 - 0.10) + (0.30 - 0.25)) / 2 = 0.15 / 2
    assert fwt(R3, B3) == pytest.approx(0.075)
    # forgetting: j=0 max(0.90, 0.95) - 0.60 = 0.35; j=1 max(0.20, 0.80) - 0.50 = 0.30
    assert forgetting(R3) == pytest.approx(0.325)
    # la   = (0.90 + 0.80 + 0.95) / 3 = 2.65 / 3
    assert learning_accuracy(R3) == pytest.approx(2.65 / 3)
    # bti  = 2.05 / 3 - 2.65 / 3 = -0.60 / 3
    assert bti(R3) == pytest.approx(-0.20)


def test_scalars_4x4() -> None:
    # acc  = (0.50 + 0.70 + 0.65 + 0.95) / 4 = 2.80 / 4
    assert acc(R4) == pytest.approx(0.70)
    # bwt  = ((0.50 - 0.80) + (0.70 - 0.90) + (0.65 - 0.85)) / 3 = -0.70 / 3
    assert bwt(R4) == pytest.approx(-0.70 / 3)
    # fwt  = ((0.30 - 0.20) + (0.25 - 0.15) + (0.45 - 0.30)) / 3 = 0.35 / 3
    assert fwt(R4, B4) == pytest.approx(0.35 / 3)
    # forgetting: j=0 0.85 - 0.50 = 0.35; j=1 0.90 - 0.70 = 0.20; j=2 0.85 - 0.65 = 0.20
    assert forgetting(R4) == pytest.approx(0.75 / 3)
    # la   = (0.80 + 0.90 + 0.85 + 0.95) / 4 = 3.50 / 4
    assert learning_accuracy(R4) == pytest.approx(0.875)
    # bti  = 0.70 - 0.875
    assert bti(R4) == pytest.approx(-0.175)


def test_summarize_4x4() -> None:
    expected = {
        "acc": 0.70,
        "bwt": -0.70 / 3,
        "fwt": 0.35 / 3,
        "forgetting": 0.25,
        "la": 0.875,
        "bti": -0.175,
    }
    assert summarize(R4, B4) == pytest.approx(expected)


def test_average_accuracy_curve() -> None:
    # k=0: 0.90; k=1: (0.95 + 0.80) / 2; k=2: (0.60 + 0.50 + 0.95) / 3
    assert average_accuracy_curve(R3) == pytest.approx([0.90, 0.875, 2.05 / 3])
    # k=0: 0.80; k=1: (0.85 + 0.90) / 2; k=2: (0.75 + 0.60 + 0.85) / 3; k=3: 2.80 / 4
    assert average_accuracy_curve(R4) == pytest.approx([0.80, 0.875, 2.20 / 3, 0.70])


def test_forgetting_matrix_values_and_nan_pattern() -> None:
    expected = np.array(
        [
            [NAN, NAN, NAN, NAN],
            [0.80 - 0.85, NAN, NAN, NAN],  # negative: task 0 improved
            [0.85 - 0.75, 0.90 - 0.60, NAN, NAN],
            [0.85 - 0.50, 0.90 - 0.70, 0.85 - 0.65, NAN],
        ]
    )
    got = forgetting_matrix(R4)
    assert got.shape == (4, 4)
    np.testing.assert_array_equal(np.isnan(got), np.triu(np.ones((4, 4), dtype=bool)))
    np.testing.assert_allclose(got, expected, equal_nan=True)
    assert np.nanmean(got[-1]) == pytest.approx(forgetting(R4))


def test_forward_transfer_matrix_values_and_nan_pattern() -> None:
    expected = np.array(
        [
            [NAN, 0.30 - 0.20, 0.20 - 0.15, 0.60 - 0.30],
            [NAN, NAN, 0.25 - 0.15, 0.10 - 0.30],
            [NAN, NAN, NAN, 0.45 - 0.30],
            [NAN, NAN, NAN, NAN],
        ]
    )
    got = forward_transfer_matrix(R4, B4)
    assert got.shape == (4, 4)
    np.testing.assert_array_equal(np.isnan(got), np.tril(np.ones((4, 4), dtype=bool)))
    np.testing.assert_allclose(got, expected, equal_nan=True)
    assert np.diag(got, k=1).mean() == pytest.approx(fwt(R4, B4))


def test_one_task() -> None:
    r, b = [[0.7]], [0.1]
    s = summarize(r, b)
    assert {k for k, v in s.items() if math.isnan(v)} == UNDEFINED_FOR_ONE_TASK
    assert s["acc"] == pytest.approx(0.7)
    assert s["la"] == pytest.approx(0.7)
    assert s["bti"] == pytest.approx(0.0)
    assert math.isnan(bwt(r)) and math.isnan(fwt(r, b)) and math.isnan(forgetting(r))
    assert average_accuracy_curve(r) == pytest.approx([0.7])
    assert np.isnan(forgetting_matrix(r)).all()
    assert np.isnan(forward_transfer_matrix(r, b)).all()


def test_undefined_keys_are_summary_keys() -> None:
    assert frozenset({"bwt", "fwt", "forgetting"}) == UNDEFINED_FOR_ONE_TASK
    assert summarize(R3, B3).keys() >= UNDEFINED_FOR_ONE_TASK


def test_unevaluated_entries_above_diagonal_are_allowed() -> None:
    # Only the entries above the superdiagonal are missing, so every metric is still defined.
    r = np.array(R4)
    r[0, 2] = r[0, 3] = r[1, 3] = np.nan
    assert summarize(r, B4) == pytest.approx(summarize(R4, B4))
    np.testing.assert_allclose(forgetting_matrix(r), forgetting_matrix(R4), equal_nan=True)
    ftm = forward_transfer_matrix(r, B4)
    assert np.isnan(ftm[0, 2]) and np.isnan(ftm[0, 3]) and np.isnan(ftm[1, 3])
    assert ftm[0, 1] == pytest.approx(0.10)
    # Without the superdiagonal the matrix still serves the backward metrics, not FWT.
    r[1, 2] = np.nan
    assert acc(r) == pytest.approx(0.70)
    assert forgetting(r) == pytest.approx(0.25)
    with pytest.raises(ValueError, match=r"R\[1\]\[2\] is NaN"):
        fwt(r, B4)


@pytest.mark.parametrize(
    "bad, message",
    [
        ([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]], "square"),
        ([0.5, 0.5], "square"),
        (np.zeros((0, 0)), "T >= 1"),
        ([[0.5, 0.5], [0.5]], "numeric"),
        ([[0.5, "x"], [0.5, 0.5]], "numeric"),
        ([[0.5, 0.2], [87.0, 0.5]], r"R\[1\]\[0\] = 87 is outside \[0, 1\].*divide"),
        ([[0.5, 0.2], [-0.1, 0.5]], "outside"),
        ([[0.5, 0.2], [NAN, 0.5]], r"R\[1\]\[0\] is NaN"),
        ([[NAN, 0.2], [0.5, 0.5]], r"R\[0\]\[0\] is NaN"),
        ([[0.5, float("inf")], [0.5, 0.5]], "infinite"),
        ([[0.5, 2.0], [0.5, 0.5]], "outside"),
    ],
)
def test_bad_matrix_raises(bad: Any, message: str) -> None:
    one_arg: list[Any] = [acc, bwt, forgetting, learning_accuracy, bti, average_accuracy_curve]
    for fn in [*one_arg, forgetting_matrix]:
        with pytest.raises(ValueError, match=message):
            fn(bad)
    two_args: list[Any] = [fwt, forward_transfer_matrix, summarize]
    for fn in two_args:
        with pytest.raises(ValueError, match=message):
            fn(bad, [0.1, 0.1])


@pytest.mark.parametrize(
    "bad_b, message",
    [
        ([0.1, 0.1], r"shape \(3,\)"),
        ([0.1, 0.1, 0.1, 0.1], r"shape \(3,\)"),
        ([[0.1, 0.1, 0.1]], r"shape \(3,\)"),
        ([0.1, NAN, 0.1], r"b\[1\] is not finite"),
        ([0.1, 0.1, 10.0], r"b\[2\] = 10 is outside"),
        ([0.1, "x", 0.1], "numeric"),
    ],
)
def test_bad_baseline_raises(bad_b: Any, message: str) -> None:
    for fn in (fwt, forward_transfer_matrix, summarize):
        with pytest.raises(ValueError, match=message):
            fn(R3, bad_b)


def test_inputs_are_not_mutated() -> None:
    r_arr, b_arr = np.array(R4), np.array(B4)
    r_arr[0, 3] = np.nan  # an unevaluated entry must stay NaN in the caller's array
    r_list = [row[:] for row in R3]
    r_before, b_before, list_before = r_arr.copy(), b_arr.copy(), [row[:] for row in R3]
    for r, b in ((r_arr, b_arr), (r_list, B3)):
        summarize(r, b)
        average_accuracy_curve(r)
        forgetting_matrix(r)[:] = 0.0  # results must not alias the input
        forward_transfer_matrix(r, b)[:] = 0.0
    np.testing.assert_array_equal(r_arr, r_before)
    np.testing.assert_array_equal(b_arr, b_before)
    assert r_list == list_before


def test_public_functions_are_documented() -> None:
    functions = [getattr(metrics, name) for name in metrics.__all__ if name.islower()]
    assert len(functions) == 16
    for fn in functions:
        doc = fn.__doc__ or ""
        for section in ("Args:", "Returns:", "References:"):
            assert section in doc, f"{fn.__name__} docstring lacks {section}"


def test_forgetting_ignores_accuracy_before_a_task_was_trained() -> None:
    """Zero-shot accuracy on a future task (above the diagonal) is no knowledge that
    could be forgotten: f_j^k takes the best of rows j..k-1 only."""
    r = np.array([[0.10, 0.12, 0.094], [0.10, 0.109, 0.10], [0.10, 0.10, 0.10]])
    # f_0 = max(R00, R10) - R20 = 0.0; f_1 = R11 - R21 = 0.009 (R01 = 0.12 does not count)
    assert forgetting(r) == pytest.approx((0.0 + 0.009) / 2)
    unseen = r.copy()
    unseen[0, 1] = unseen[0, 2] = unseen[1, 2] = np.nan
    assert forgetting(unseen) == pytest.approx(forgetting(r))
    np.testing.assert_allclose(forgetting_matrix(unseen), forgetting_matrix(r), equal_nan=True)


def test_tasks_near_chance_right_after_training() -> None:
    """La-MAML's collapse in class-IL (issue 16): task 0 learnt, nothing after it."""
    collapsed = np.zeros((5, 5))
    collapsed[:, 0] = 0.995
    assert metrics.unlearned_tasks(collapsed, 0.1) == [1, 2, 3, 4]
    assert metrics.near_chance(metrics.learning_accuracy(collapsed), 0.5)
    assert not metrics.near_chance(0.199, 0.1) and metrics.near_chance(0.19, 0.1)
    assert metrics.near_chance(0.55, 0.5) and not metrics.near_chance(0.56, 0.5)
    assert metrics.unlearned_tasks(np.eye(3) * 0.9, 0.5) == []


def test_a_head_with_one_output_is_never_flagged_as_unlearned() -> None:
    """With one output per head every answer is right (chance 1.0): no "did not learn"
    warning (it said "LA 1.000; chance is 1.000")."""
    from lifelong.evaluation.result import RunResult

    run = RunResult(
        scenario="own-data",
        strategy="naive",
        seed=0,
        config={},
        key="k",
        task_names=["a", "b"],
        matrix=[[1.0, 1.0], [1.0, 1.0]],
        init=[1.0, 1.0],
        metrics={"la": 1.0},
        curves=[],
        wall_s=0.0,
        chance=1.0,
    )
    assert run.not_learned() == ""
    assert RunResult(
        **{**run.__dict__, "chance": 0.5, "matrix": [[0.5, 0], [0, 0.5]]}
    ).not_learned()
