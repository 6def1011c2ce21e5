"""How the spread of a number over seeds is summarised, the same way in the CLI and reports.

Three bands: ``ci``, the 95% confidence interval of the mean (t distribution, n - 1 degrees
of freedom; the default); ``se``, the mean ± one standard error; ``range``, the lowest to the
highest seed. With three seeds a 95% interval is 2.5 standard errors each side (t = 4.30 over
sqrt(3)), wide enough to hide curves; the standard error or the range then shows them.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

__all__ = ["BANDS", "DEFAULT_BAND", "band", "describe", "format_spread"]

BANDS: dict[str, str] = {
    "ci": "mean ± 95% CI over seeds (t distribution, n - 1 degrees of freedom)",
    "se": "mean ± standard error over seeds (sample sd / sqrt(n))",
    "range": "mean and range of the seeds (lowest to highest)",
}
SHORT = {"ci": "95% CI", "se": "± 1 standard error", "range": "range of the seeds"}
DEFAULT_BAND = "ci"


def band(values: Sequence[float], kind: str = DEFAULT_BAND) -> tuple[float, float, float]:
    """``(mean, low, high)`` of ``values`` (NaNs left out); low and high are NaN with fewer
    than two values, the mean NaN with none.

    Args:
        values: one number per seed.
        kind: one of :data:`BANDS`.
    """
    kept = [float(v) for v in values if not math.isnan(v)]
    if kind not in BANDS:
        raise ValueError(f"unknown band '{kind}'; use one of {', '.join(BANDS)}")
    if not kept:
        return math.nan, math.nan, math.nan
    mean = statistics.fmean(kept)
    if len(kept) < 2:
        return mean, math.nan, math.nan
    if kind == "range":
        return mean, min(kept), max(kept)
    half = statistics.stdev(kept) / math.sqrt(len(kept))
    if kind == "ci":
        from scipy import stats  # lazy: only with several seeds

        half *= float(stats.t.ppf(0.975, len(kept) - 1))
    return mean, mean - half, mean + half


def format_spread(mean: float, low: float, high: float, kind: str = DEFAULT_BAND) -> str:
    """``0.512 ± 0.031`` (ci, se), ``0.512 (0.480 to 0.541)`` (range), ``n/a`` parts."""
    if math.isnan(mean):
        return "n/a"
    if kind == "range":
        shown = "n/a" if math.isnan(low) else f"{low:.3f} to {high:.3f}"
        return f"{mean:.3f} ({shown})"
    return f"{mean:.3f} ± " + ("n/a" if math.isnan(low) else f"{(high - low) / 2:.3f}")


def describe(kind: str = DEFAULT_BAND) -> str:
    """The sentence that says which spread a table or figure shows."""
    return f"{BANDS[kind]}; n/a with one seed"
