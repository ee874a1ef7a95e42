"""Early warning of the LLD death spiral (arXiv 2512.04220 §4, Fig. 2, App. D "reward alone is insufficient").

The paper's collapse has three phases, visible in the likelihood of CORRECT responses long before the reward:
I stagnation (likelihood flat while reward rises), II steady decay (likelihood falls slowly while reward
still rises and the gradient norm is stable), III accelerated collapse (likelihood drops sharply with a
gradient-norm spike / entropy surge; reward falls). `CollapseMonitor` reads each step's metrics dict and
names the phase with these rules (all thresholds in `MonitorConfig`):

- Smoothing: the correct-response likelihood L, the reward R and the incorrect-response likelihood are EMA-
  smoothed (alpha); slope(X) is the least-squares slope per step of smoothed X over the last `window` steps.
  Until the window is full the phase is "warmup".
- Events, against a running baseline of the previous `baseline_window` steps (needs `min_baseline`):
  grad spike = grad norm > `grad_spike_factor` x running median, or any non-finite norm in the round;
  entropy surge = entropy > running median + `entropy_surge_z` x max(1.4826 MAD, `entropy_rel_floor` x |median|).
- accelerated_collapse: slope(L) < `accel_factor` x the decay reference slope (the median slope seen during
  steady decay; -`likelihood_tol` if none was seen) AND a grad spike or entropy surge in the last
  `event_memory` steps. Once entered it persists while slope(L) < -`likelihood_tol`.
- steady_decay: slope(L) < -`likelihood_tol` for `decay_consecutive` consecutive steps (whatever the reward
  does: the reasons say whether the reward is still flat/rising, the case reward curves cannot show).
- stagnation: |slope(L)| < `likelihood_tol` while slope(R) > `reward_tol` (the loss asks for more likelihood on
  correct responses and gets none: LLD onset).
- healthy: anything else (likelihood rising, or everything flat at convergence).
Flags, independent of the phase: `neg_displacement_majority` (share of correct responses whose likelihood
fell across the update > `neg_displacement_share`, 0.5: Fig. 3a), `incorrect_below_correct` (smoothed
incorrect-response likelihood has dropped below correct's after being at or above it: Fig. 9a),
`grad_spike`, `entropy_surge`.
`warning` is set in decay, in acceleration and under a negative-displacement majority; the first entry into
each is logged once at WARNING (the "before rewards fall" signal).

Scale: `likelihood_tol` is in nats per token per step for the default token-mean key; calibrate it for
another key (e.g. the summed `likelihood/correct_seq_mean` is ~response-length times larger).
"""

from __future__ import annotations

import logging
import math
import statistics
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

WARMUP, HEALTHY, STAGNATION, DECAY, ACCELERATED = (
    "warmup",
    "healthy",
    "stagnation",
    "steady_decay",
    "accelerated_collapse",
)
PHASE_IDS = {WARMUP: -1, HEALTHY: 0, STAGNATION: 1, DECAY: 2, ACCELERATED: 3}
FLAGS = ("grad_spike", "entropy_surge", "neg_displacement_majority", "incorrect_below_correct")
# Phases and flags whose first appearance is announced at WARNING.
_ANNOUNCED = (DECAY, ACCELERATED, "neg_displacement_majority", "incorrect_below_correct")


@dataclass(frozen=True)
class MonitorConfig:
    window: int = 20  # W: steps in each slope window
    ema_alpha: float = 0.2  # weight of the newest value in the EMA
    likelihood_tol: float = 5e-4  # |slope| below this (nats/token/step) is "flat"
    reward_tol: float = 1e-3  # reward slope above this (reward/step) is "rising": +0.1 per 100 steps
    decay_consecutive: int = 5  # K: steps of falling likelihood before "steady decay"
    accel_factor: float = 3.0  # acceleration: slope steeper than this x the decay slope
    grad_spike_factor: float = 3.0  # m: grad norm > m x running median
    entropy_surge_z: float = 4.0  # z: entropy > running median + z x MAD
    entropy_rel_floor: float = 0.02  # MAD floor as a share of |median| (a flat entropy has MAD 0)
    baseline_window: int = 50  # steps in the running median/MAD baselines
    min_baseline: int = 5  # no spike/surge verdict before this many baseline steps
    event_memory: int = 10  # a spike/surge this many steps old still supports "acceleration"
    neg_displacement_share: float = 0.5  # Fig. 3a threshold
    likelihood_key: str = "likelihood/correct_mean"
    incorrect_key: str = "likelihood/incorrect_mean"
    reward_key: str = "reward/mean"
    grad_key: str = "grad/norm"
    entropy_key: str = "policy/entropy"
    displacement_key: str = "likelihood/displacement_correct_neg_share"

    def __post_init__(self) -> None:
        if self.window < 3 or self.decay_consecutive < 1 or self.min_baseline < 1 or self.event_memory < 0:
            raise ValueError("window must be >= 3, decay_consecutive and min_baseline >= 1, event_memory >= 0")
        if not 0 < self.ema_alpha <= 1:
            raise ValueError(f"ema_alpha={self.ema_alpha!r} must be in (0, 1]")
        if self.likelihood_tol < 0 or self.reward_tol < 0 or self.accel_factor < 1 or self.grad_spike_factor <= 1:
            raise ValueError("tolerances must be >= 0, accel_factor >= 1 and grad_spike_factor > 1")


@dataclass
class MonitorStatus:
    step: int
    phase: str
    reasons: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    warning: bool = False
    #: the phases/flags first entered at this step (each is announced once per run)
    new_warnings: list[str] = field(default_factory=list)
    likelihood_slope: float | None = None
    reward_slope: float | None = None

    def as_metrics(self) -> dict[str, Any]:
        """The `monitor/*` keys of `step_metrics.METRIC_KEYS`, to merge into the step's logged metrics."""
        out: dict[str, Any] = {
            "monitor/phase": self.phase,
            "monitor/phase_id": PHASE_IDS[self.phase],
            "monitor/warning": int(self.warning),
            "monitor/likelihood_slope": math.nan if self.likelihood_slope is None else self.likelihood_slope,
            "monitor/reward_slope": math.nan if self.reward_slope is None else self.reward_slope,
        }
        out.update({f"monitor/{flag}": int(flag in self.flags) for flag in FLAGS})
        return out


def _finite(metrics: Mapping[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _slope(points: Iterable[tuple[float, float]]) -> float:
    """Least-squares slope of y on x."""
    xs, ys = zip(*points, strict=True)
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0


class _Smoothed:
    """EMA of a series and the last `window` (step, smoothed value) points."""

    def __init__(self, alpha: float, window: int) -> None:
        self.alpha = alpha
        self.value: float | None = None
        self.count = 0
        self.points: deque[tuple[float, float]] = deque(maxlen=window)

    def update(self, step: int, value: float | None) -> None:
        if value is None:
            return
        self.value = value if self.value is None else self.alpha * value + (1 - self.alpha) * self.value
        self.count += 1
        self.points.append((float(step), self.value))

    def slope(self) -> float | None:
        return _slope(self.points) if len(self.points) == self.points.maxlen else None


class CollapseMonitor:
    """Feed `update(metrics)` once per RL step; it returns that step's `MonitorStatus`."""

    def __init__(self, config: MonitorConfig | None = None) -> None:
        self.config = cfg = config or MonitorConfig()
        self._likelihood = _Smoothed(cfg.ema_alpha, cfg.window)
        self._incorrect = _Smoothed(cfg.ema_alpha, cfg.window)
        self._reward = _Smoothed(cfg.ema_alpha, cfg.window)
        self._grads: deque[float] = deque(maxlen=cfg.baseline_window)
        self._entropies: deque[float] = deque(maxlen=cfg.baseline_window)
        self._last_event_step: int | None = None
        self._falling_run = 0
        self._incorrect_was_above = False
        self._decay_slopes: list[float] = []
        self._phase = WARMUP
        self._step = -1
        self.announced: set[str] = set()
        self.history: list[MonitorStatus] = []

    def _grad_spike(self, grad: float | None) -> str | None:
        cfg = self.config
        verdict = None
        if grad is not None:
            if len(self._grads) >= cfg.min_baseline:
                median = statistics.median(self._grads)
                if grad > cfg.grad_spike_factor * median:
                    verdict = f"grad norm {grad:.3g} > {cfg.grad_spike_factor:g} x running median {median:.3g}"
            self._grads.append(grad)
        return verdict

    def _entropy_surge(self, entropy: float | None) -> str | None:
        cfg = self.config
        verdict = None
        if entropy is not None:
            if len(self._entropies) >= cfg.min_baseline:
                median = statistics.median(self._entropies)
                mad = statistics.median(abs(h - median) for h in self._entropies)
                spread = max(1.4826 * mad, cfg.entropy_rel_floor * abs(median))
                if entropy > median + cfg.entropy_surge_z * spread:
                    limit = f"running median {median:.3g} + {cfg.entropy_surge_z:g} x MAD {spread:.3g}"
                    verdict = f"entropy {entropy:.3g} > {limit}"
            self._entropies.append(entropy)
        return verdict

    def update(self, metrics: Mapping[str, Any], *, announce: bool = True) -> MonitorStatus:
        """Classify one step. `announce=False` replays history (e.g. on resume) without logging warnings."""
        cfg = self.config
        step = int(metrics["step"]) if isinstance(metrics.get("step"), int) else self._step + 1
        self._step = step
        reasons: list[str] = []
        flags: list[str] = []

        nonfinite = _finite(metrics, "grad/nonfinite_steps")
        for flag, verdict in (
            ("grad_spike", self._grad_spike(_finite(metrics, cfg.grad_key))),
            # An inf/NaN gradient is the explosion itself; StepMetrics keeps it out of grad/norm.
            ("grad_spike", f"{nonfinite:g} optimizer steps had a non-finite gradient norm" if nonfinite else None),
            ("entropy_surge", self._entropy_surge(_finite(metrics, cfg.entropy_key))),
        ):
            if verdict:
                if flag not in flags:
                    flags.append(flag)
                reasons.append(verdict)
                self._last_event_step = step

        self._likelihood.update(step, _finite(metrics, cfg.likelihood_key))
        self._incorrect.update(step, _finite(metrics, cfg.incorrect_key))
        self._reward.update(step, _finite(metrics, cfg.reward_key))

        share = _finite(metrics, cfg.displacement_key)
        if share is not None and share > cfg.neg_displacement_share:
            flags.append("neg_displacement_majority")
            limit = cfg.neg_displacement_share
            reasons.append(f"{share:.0%} of correct responses lost likelihood in the update (> {limit:.0%})")
        lik, inc = self._likelihood, self._incorrect
        if min(lik.count, inc.count) >= cfg.min_baseline and lik.value is not None and inc.value is not None:
            if inc.value >= lik.value:
                self._incorrect_was_above = True
            elif self._incorrect_was_above:
                flags.append("incorrect_below_correct")
                reasons.append(f"incorrect-response likelihood {inc.value:.3g} dropped below correct's {lik.value:.3g}")

        l_slope, r_slope = lik.slope(), self._reward.slope()
        phase = self._classify(step, l_slope, r_slope, reasons)
        self._phase = phase
        warning = phase in (DECAY, ACCELERATED) or "neg_displacement_majority" in flags
        new = [name for name in (phase, *flags) if name in _ANNOUNCED and name not in self.announced]
        self.announced.update(new)
        status = MonitorStatus(step, phase, reasons, flags, warning, new if announce else [], l_slope, r_slope)
        if announce and new:
            log.warning("step %d: LLD death-spiral warning (%s): %s", step, ", ".join(new), "; ".join(reasons))
        self.history.append(status)
        return status

    def _classify(self, step: int, l_slope: float | None, r_slope: float | None, reasons: list[str]) -> str:
        cfg = self.config
        if l_slope is None:
            reasons.append(f"warming up: {len(self._likelihood.points)}/{cfg.window} likelihood points")
            return WARMUP
        tol = cfg.likelihood_tol
        self._falling_run = self._falling_run + 1 if l_slope < -tol else 0
        rising = r_slope is not None and r_slope > cfg.reward_tol
        if r_slope is None:
            reward_text = "reward trend unknown"
        else:
            trend = "rising" if rising else "flat" if r_slope >= -cfg.reward_tol else "falling"
            reward_text = f"reward slope {r_slope:+.2e}/step ({trend})"
        reference = statistics.median(self._decay_slopes) if self._decay_slopes else -tol
        steep = l_slope < cfg.accel_factor * min(reference, -tol)
        recent_event = self._last_event_step is not None and step - self._last_event_step <= cfg.event_memory
        l_text = f"correct-response likelihood slope {l_slope:+.2e}/step"

        if (steep and recent_event) or (self._phase == ACCELERATED and l_slope < -tol):
            reasons.append(f"{l_text}, steeper than {cfg.accel_factor:g} x decay slope {reference:+.2e}; {reward_text}")
            return ACCELERATED
        if self._falling_run >= cfg.decay_consecutive:
            if not steep:
                self._decay_slopes.append(l_slope)
            reasons.append(f"{l_text} < -{tol:g} for {self._falling_run} steps; {reward_text}")
            return DECAY
        if abs(l_slope) < tol and rising:
            reasons.append(f"{l_text} flat while {reward_text}")
            return STAGNATION
        reasons.append(f"{l_text}; {reward_text}")
        return HEALTHY

    def replay(self, records: Iterable[Mapping[str, Any]]) -> MonitorStatus | None:
        """Rebuild the state from logged metrics (e.g. `read_metrics` on resume) without re-announcing."""
        status = None
        for record in records:
            status = self.update(record, announce=False)
        return status

    def first_step(self, phase: str) -> int | None:
        """The first step classified as `phase`, if any."""
        return next((s.step for s in self.history if s.phase == phase), None)
