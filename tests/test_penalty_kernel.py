"""The compiled quadratic penalty (lifelong.fast.penalty_kernel) against its reference,
:meth:`lifelong.Quadratic.value_and_slopes`: the same slopes bit for bit (so a run's
accuracies are the reference's exactly) and the value up to float rounding."""

from __future__ import annotations

import pytest
import torch
from helpers import run_one

import lifelong.fast.closed_form as closed_form
from lifelong import Quadratic
from lifelong.fast.compiled import Kernel
from lifelong.fast.penalty_kernel import compiled_value_and_slopes

pytest.importorskip("numba")

SHAPES = {"0.weight": (7, 13), "0.bias": (7,), "1.weight": (3, 7), "1.bias": (3,)}


def penalty(dtype: torch.dtype, seed: int = 0) -> tuple[Quadratic, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)

    def draw(shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=g, dtype=dtype)

    params = {n: draw(s).requires_grad_() for n, s in SHAPES.items()}
    weights = {n: draw(s).abs() for n, s in SHAPES.items()}
    center = {n: draw(s) for n, s in SHAPES.items()}
    return Quadratic(weights, center, scale=0.5, offset=torch.tensor(0.25, dtype=dtype)), params


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_slopes_are_the_references_bit_for_bit_and_the_value_its_up_to_rounding(
    dtype: torch.dtype,
) -> None:
    quadratic, params = penalty(dtype)
    compiled = compiled_value_and_slopes(quadratic, params, None)
    assert compiled is not None
    value, slopes, _ = compiled
    want_value, want_slopes = quadratic.value_and_slopes(params)
    assert list(slopes) == list(want_slopes)
    for name, slope in want_slopes.items():
        assert torch.equal(slopes[name], slope)
    assert value.dtype == dtype
    tolerance = 1e-6 if dtype == torch.float32 else 1e-13
    torch.testing.assert_close(value, want_value, rtol=tolerance, atol=tolerance)
    # by hand: 1/2 sum w (theta - c)^2 + offset
    by_hand = sum(
        (quadratic.weights[n] * (params[n].detach() - quadratic.center[n]) ** 2).sum()
        for n in SHAPES
    )
    torch.testing.assert_close(value, 0.5 * by_hand + 0.25, rtol=tolerance, atol=tolerance)


def test_views_are_kept_while_the_tensors_are_the_same_and_rebuilt_when_they_change() -> None:
    quadratic, params = penalty(torch.float32)
    first = compiled_value_and_slopes(quadratic, params, None)
    assert first is not None
    with torch.no_grad():
        params["0.weight"].add_(1.0)  # in place: the same storage, the views hold
    again = compiled_value_and_slopes(quadratic, params, first[2])
    assert again is not None and again[2] is first[2]
    assert torch.equal(again[1]["0.weight"], quadratic.value_and_slopes(params)[1]["0.weight"])
    moved = Quadratic(
        quadratic.weights, {n: c + 1 for n, c in quadratic.center.items()}, scale=0.5
    )  # a new centre (a consolidation): new views
    other = compiled_value_and_slopes(moved, params, first[2])
    assert other is not None and other[2] is not first[2]
    for name, slope in moved.value_and_slopes(params)[1].items():
        assert torch.equal(other[1][name], slope)
    torch.testing.assert_close(other[0], moved.value_and_slopes(params)[0])


@pytest.mark.parametrize("replaced", ["param", "center", "weights"])
def test_views_are_rebuilt_when_a_tensor_gets_new_storage(replaced: str) -> None:
    """``.data`` swapped under the same tensor object (a parameter moved, a centre
    rewritten): the kept views would read the old storage, so they are rebuilt."""
    quadratic, params = penalty(torch.float32)
    first = compiled_value_and_slopes(quadratic, params, None)
    assert first is not None
    holder = {"param": params, "center": quadratic.center, "weights": quadratic.weights}[replaced]
    holder["0.weight"].data = holder["0.weight"].detach() + 1.0
    again = compiled_value_and_slopes(quadratic, params, first[2])
    assert again is not None and again[2] is not first[2]
    want_value, want_slopes = quadratic.value_and_slopes(params)
    for name, slope in want_slopes.items():
        assert torch.equal(again[1][name], slope)
    torch.testing.assert_close(again[0], want_value)


def test_the_value_has_the_references_dtype() -> None:
    """float64 weights with a float32 offset: the wider dtype, as the reference's sum."""
    quadratic, params = penalty(torch.float64)
    narrow = Quadratic(quadratic.weights, quadratic.center, scale=0.5, offset=torch.tensor(0.25))
    compiled = compiled_value_and_slopes(narrow, params, None)
    assert compiled is not None
    assert compiled[0].dtype == narrow.value_and_slopes(params)[0].dtype == torch.float64


def test_tensors_the_kernel_cannot_take_fall_back_to_the_reference() -> None:
    quadratic, params = penalty(torch.float32)
    strided = {**params, "0.weight": torch.randn(13, 7).t().requires_grad_()}
    assert compiled_value_and_slopes(quadratic, strided, None) is None
    half = {n: p.detach().half() for n, p in params.items()}
    assert compiled_value_and_slopes(quadratic, half, None) is None


def test_numba_failing_to_compile_warns_once_and_the_reference_serves(monkeypatch) -> None:
    from numba.core.errors import TypingError

    def broken(*arrays: object) -> None:
        raise TypingError("cannot type this")

    state = Kernel(broken, "the quadratic penalty's CPU kernel")
    monkeypatch.setattr("lifelong.fast.penalty_kernel.kernel", lambda: state)
    quadratic, params = penalty(torch.float32)
    with pytest.warns(RuntimeWarning, match="numba cannot compile the quadratic penalty"):
        assert compiled_value_and_slopes(quadratic, params, None) is None
    assert state.unusable.startswith("TypingError")
    assert compiled_value_and_slopes(quadratic, params, None) is None  # no second try


@pytest.mark.parametrize("spec", ["ewc", "mas"])
def test_a_run_with_the_compiled_penalty_has_the_references_accuracies(
    spec: str, make_stream, monkeypatch
) -> None:
    """The penalty in the loss (``proximal=false``), three tasks: the same matrix whether
    the kernel or the reference gives the slopes, and the kernel did run."""
    calls = []
    real = closed_form.compiled_value_and_slopes

    def counted(*args):  # type: ignore[no-untyped-def]
        result = real(*args)
        calls.append(result is not None)
        return result

    stream = make_stream("class", n_tasks=3)
    settings = {"batch_size": "8", "hidden": "16", "proximal": "false", "lam": "5"}
    monkeypatch.setattr(closed_form, "compiled_value_and_slopes", counted)
    compiled = run_one(spec, settings, stream=stream).matrix
    assert calls and all(calls)
    monkeypatch.setattr(closed_form, "compiled_value_and_slopes", lambda *args: None)
    reference = run_one(spec, settings, stream=stream).matrix
    assert compiled == reference
