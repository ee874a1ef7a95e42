"""Noise-aware trend and outlier tests for short, noisy training curves: the statistics behind `CollapseMonitor`.

A training curve logged once per step is a slow signal plus batch noise that is large and heavy-tailed (a
mean over a handful of correct responses, say). The tests here estimate that noise from the curve itself
and call a trend only when it stands out of it:

- `diff_noise_sd`: the per-point noise sd, from first differences (a slow trend barely moves them),
  winsorized at a few median-absolute-deviation sds (a few wild points barely move it).
- `winsorized_sd`: that robust sd, also taken of the residuals around a window's line (a slow wander shows
  there and not in the differences).
- `trend`: the Theil-Sen slope (median of pairwise slopes: robust to outliers and to missing points) with
  its standard error from that noise sd, inflated when the residuals are positively autocorrelated, and a
  Student-t style critical value for the few-points case. `Trend.falling(tol)` / `rising(tol)` need both
  significance (|slope| > critical x SE) and practical size (|slope| > tol).
- `robust_excess`: how far a value lies above a median/MAD baseline, in robust sds.

Inputs are plain float sequences without NaN (callers drop missing points); nothing here raises on short
input: the functions return None when there is too little to decide.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: sd of a normal distribution per unit of median absolute deviation
MAD_TO_SD = 1.4826
#: differences further than this many robust sds from their median are pulled in before the sd is taken
WINSOR_SDS = 4.0
#: first differences of white noise have lag-1 correlation -1/2: their sample variance is 1.5x as variable
DIFF_VARIANCE_INFLATION = 1.5
#: Theil-Sen's asymptotic efficiency relative to least squares under normal noise (its SE is 1/sqrt(0.91) wider)
THEIL_SEN_EFFICIENCY = 0.91
#: cap on the lag-1 autocorrelation used to widen the slope's SE (beyond it the window is one wandering blob)
MAX_AUTOCORRELATION = 0.8


def robust_sd(values: Sequence[float]) -> float | None:
    """1.4826 x the median absolute deviation (same unit as the values); None for fewer than 3 values."""
    # Pure Python: numpy's per-call overhead dominates for the few dozen points of a window.
    if len(values) < 3:
        return None
    center = statistics.median(values)
    return MAD_TO_SD * statistics.median([abs(v - center) for v in values])


def winsorized_sd(values: Sequence[float]) -> float | None:
    """Sample sd after pulling values further than `WINSOR_SDS` robust sds from the median in to that bound
    (same unit as the values). It keeps most of the sd's efficiency (a MAD alone, from 20 points, is half
    the true sd one time in fifty: a false alarm) while a few wild batches cannot blow it up.
    None for fewer than 3 values."""
    spread = robust_sd(values)
    if spread is None:
        return None
    center = statistics.median(values)
    low, high = center - WINSOR_SDS * spread, center + WINSOR_SDS * spread
    clipped = [min(max(v, low), high) for v in values]
    mean = math.fsum(clipped) / len(clipped)
    return math.sqrt(math.fsum((v - mean) ** 2 for v in clipped) / (len(clipped) - 1))


def diff_noise_sd(values: Sequence[float]) -> float | None:
    """Per-point noise sd of a series in time order: winsorized_sd(first differences) / sqrt(2).

    A trend of slope b shifts every difference by b, which the centring removes; a curve that bends within
    the span inflates the estimate a little. None for fewer than 4 values."""
    if len(values) < 4:
        return None
    spread = winsorized_sd([b - a for a, b in zip(values[:-1], values[1:], strict=True)])
    return None if spread is None else spread / math.sqrt(2)


def noise_dof(n_values: int) -> float:
    """Degrees of freedom of `diff_noise_sd` from n values: its n - 1 differences are MA(1)-correlated
    (lag-1 correlation -1/2), which inflates the variance of their sample variance by 1 + 2 x (1/2)^2."""
    return max(n_values - 1, 0) / DIFF_VARIANCE_INFLATION


def critical_value(z: float, dof: float) -> float:
    """The one-sided normal critical value `z` widened for an sd estimated with `dof` degrees of freedom:
    the Cornish-Fisher expansion of Student's t quantile (for z = 3: within 6% of it at dof >= 5, 2% at dof >= 8)."""
    dof = max(dof, 1.0)
    return z + (z**3 + z) / (4 * dof) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)


def theil_sen(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Median of the slopes between all pairs of points with distinct x (unit of y per unit of x)."""
    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    i, j = np.triu_indices(len(x), k=1)
    dx = x[j] - x[i]
    keep = dx != 0
    return float(np.median((y[j] - y[i])[keep] / dx[keep])) if keep.any() else 0.0


@dataclass(frozen=True)
class Trend:
    """A slope over a window with its uncertainty; units are the series' unit per step."""

    slope: float
    se: float  #: standard error of `slope`
    critical: float  #: |slope| / se must exceed this for the slope to count
    n: int  #: points in the window
    autocorrelation: float  #: lag-1 autocorrelation of the residuals (clipped to [0, MAX_AUTOCORRELATION])
    noise_sd: float  #: the per-point noise sd behind `se`, unit of the series

    @property
    def z(self) -> float:
        """slope / se (0 when se is 0 and the slope is 0; +-inf for a noiseless non-zero slope)."""
        if self.se > 0:
            return self.slope / self.se
        return 0.0 if self.slope == 0 else math.copysign(math.inf, self.slope)

    def falling(self, tol: float) -> bool:
        """Significantly AND practically falling: slope < -critical x se and slope < -tol."""
        return self.z < -self.critical and self.slope < -tol

    def rising(self, tol: float) -> bool:
        """Significantly AND practically rising: slope > critical x se and slope > tol."""
        return self.z > self.critical and self.slope > tol

    def describe(self, unit: str = "/step") -> str:
        """e.g. '-3.10e-03/step (-4.2 SE, n=50)'."""
        z = f"{self.z:+.1f}" if abs(self.z) < 1000 else ("+" if self.z > 0 else "-") + ">999"  # noiseless input
        return f"{self.slope:+.2e}{unit} ({z} SE, n={self.n})"


def trend(xs: Sequence[float], ys: Sequence[float], noise_sd: float, *, z: float, dof: float) -> Trend | None:
    """Theil-Sen slope of ys on xs and its standard error, given the per-point noise sd (same unit as ys).

    SE = sigma / sqrt(sum (x - mean x)^2) / sqrt(THEIL_SEN_EFFICIENCY) x sqrt((1 + r) / (1 - r)), where
    sigma = max(noise_sd, winsorized sd of the residuals around the Theil-Sen line) and r is the residuals'
    lag-1 autocorrelation: a curve that wanders slowly scatters more around a line than from step to step,
    and has fewer independent points than it has points. The critical value is `critical_value(z, dof)`,
    dof the noise estimate's degrees of freedom. None for fewer than 3 points."""
    if len(xs) < 3:
        return None
    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    slope = theil_sen(x, y)
    sxx = float(((x - x.mean()) ** 2).sum())
    if sxx == 0:
        return None
    resid = y - slope * x
    resid -= np.median(resid)
    denom = float((resid * resid).sum())
    r = float((resid[1:] * resid[:-1]).sum()) / denom if denom > 0 else 0.0
    r = min(max(r, 0.0), MAX_AUTOCORRELATION)
    sigma = max(noise_sd, winsorized_sd(resid.tolist()) or 0.0)
    se = sigma / math.sqrt(sxx) / math.sqrt(THEIL_SEN_EFFICIENCY) * math.sqrt((1 + r) / (1 - r))
    return Trend(slope, se, critical_value(z, dof), len(x), r, sigma)


def robust_excess(value: float, baseline: Sequence[float], *, floor: float = 0.0) -> tuple[float, float, float]:
    """(excess in robust sds, baseline median, spread): (value - median) / max(robust_sd, floor).

    `floor` (same unit as the values) keeps a flat baseline (MAD 0) from turning any wiggle into a huge
    excess. The excess is inf when both spread and floor are 0 and the value is above the median."""
    median = statistics.median(baseline)
    spread = max(robust_sd(baseline) or 0.0, floor)
    if spread > 0:
        return (value - median) / spread, median, spread
    return (math.inf if value > median else 0.0), median, spread
