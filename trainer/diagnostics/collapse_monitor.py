"""Early warning of the LLD death spiral (arXiv 2512.04220 §4, Fig. 2, App. D "reward alone is insufficient").

The paper's collapse has three phases, visible in the likelihood of CORRECT responses long before the reward:
I stagnation (likelihood flat while reward rises), II steady decay (likelihood falls slowly while reward
still rises and the gradient norm is stable), III accelerated collapse (likelihood drops sharply with a
gradient-norm spike / entropy surge; reward falls). `CollapseMonitor` reads each step's metrics dict and
names the phase. Every decision is a statistical one, against noise estimated from the run itself: the
project's correct-response likelihood has a batch noise sd of ~0.15 nats/token at FIXED weights (16 x 5
rollouts, a small and changing set of correct responses, NaN when there is none), far above the slow trends
that matter, so a fixed slope tolerance alone would fire on pure noise.

How a decision is made (thresholds are `MonitorConfig` fields; "points" are logged steps with a finite value):

- Noise: sigma = sd of the first differences of the last `noise_window` points / sqrt(2), the differences
  winsorized at 4 MAD-sds (a slow trend barely moves differences; a few wild batches are pulled in), or the
  winsorized sd of the residuals around the window's line when larger (a curve that wanders slowly shows
  there). The estimate's degrees of freedom widen the critical value while few points are in (Student-t via
  Cornish-Fisher: ~3.7 SEs at 20 points, ~3.1 at 100 for `z` = 3).
- Trend over a window: the Theil-Sen slope (median pairwise slope: robust to outliers and gaps) of the last
  `window` points (long) or `short_window` points (short); SE = sigma / sqrt(sum (step - mean step)^2),
  widened for Theil-Sen and for positively autocorrelated residuals. A series is FALLING when
  slope < -crit x SE AND slope < -tol, RISING when slope > crit x SE AND slope > tol (crit from `z` = 3,
  one-sided), FLAT otherwise: significance says the trend is not noise, the tolerance that it is big enough
  to matter. A trend once called holds while beyond `exit_z` SEs and the tolerance (hysteresis: no flicker
  at the threshold). Tolerances: `likelihood_tol` (nats/token/step) and `reward_tol` (reward/step). Until
  `min_points` likelihood points the phase is "warmup" (also for ever when the metrics have no likelihood).
- Events, against a robust baseline of the previous `baseline_window` points (needs `min_baseline`):
  grad spike = log grad norm > median + `grad_spike_z` robust sds AND grad norm > `grad_spike_factor` x
  median, or any non-finite norm in the round; entropy surge = entropy > median + `entropy_surge_z` x
  max(robust sd, `entropy_rel_floor` x |median|).
- accelerated_collapse: the SHORT-window likelihood is falling and steeper than `accel_factor` x the decay
  reference slope (the median long-window slope seen in steady decay; -`likelihood_tol` if none), AND a grad
  spike or entropy surge in the last `event_memory` steps or the reward is falling. Once entered it
  persists while the likelihood (long or short window) is falling.
- steady_decay: the LONG-window likelihood has been falling for `decay_consecutive` steps running, whatever
  the reward does (the reasons say whether it is still rising: the case reward curves cannot show).
- stagnation: likelihood flat while the reward is rising (LLD onset; also what a converged run whose
  reward still creeps up looks like, hence no warning).
- healthy: anything else (likelihood rising, or everything flat).
Flags, independent of the phase:
- `reward_falling`: the reward (long or short window) has been falling for `decay_consecutive` steps running.
- `neg_displacement_majority`: the mean over the last `short_window` points of the share of correct responses
  whose likelihood fell across the update is above `neg_displacement_share` (0.5, Fig. 3a) by more than crit x
  its SE (t-style; one step's share of 5 correct responses says little); needs 8 points.
- `incorrect_below_correct`: the mean over the last `short_window` steps of (incorrect - correct likelihood)
  is significantly below 0, after having been >= 0 (Fig. 9a).
- `displacement_drop`: the likelihood displacement itself (§4's LLD: correct responses' log-likelihood
  FALLING across the update round, `likelihood/displacement_correct`, nats per response) was negative and
  below the running median of its previous `baseline_window` points by more than `displacement_drop_z`
  robust sds (floored at `displacement_drop_floor`) on at least `displacement_drops` steps within the last
  `event_memory` steps. A healthy GRPO round raises the correct responses' likelihood (Δ > 0, a stable
  baseline); the spiral shows as rounds where it falls far outside that. Healthy runs have single drops
  too, hence two.
- `grad_spike`, `entropy_surge`: this step's events.
- `searches_failing`: more than `max_failed_search_share` of this step's searches were refused or failed by
  the retriever (`env/failed_search_share`): not the spiral, a broken run whose reward means little.
Phase `collapsed` (after the fact, and it outranks the others): the `reward_smooth`-step trailing mean of the
reward is below `collapsed_fraction` x its running best, or the entropy is above `collapsed_fraction` x a
uniform policy's (ln of the vocabulary size: the record's `policy/entropy_uniform`, else `entropy_uniform`): a
run in that state is never called healthy.
`warning` is set in steady_decay, accelerated_collapse and collapsed, and under `neg_displacement_majority`,
`displacement_drop`, `reward_falling` or `searches_failing`. The first entry into each is logged once at WARNING;
`first_warning_step()` gives the first step with a warning. Measured: benchmarks/collapse_monitor.py
(docs/benchmarks/collapse-monitor.txt).

Units: slopes are per logged step number (a log written every k steps still gives per-step slopes; its
windows then span k x as many steps). `likelihood_tol` suits the token-mean keys (`likelihood/correct_mean`,
the authors' `pos_avg_old_log_prob`); scale it for another key (the summed `likelihood/correct_seq_mean` is
~response-length times larger).
"""

from __future__ import annotations

import logging
import math
import statistics
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from trainer.diagnostics.robust_trends import (
    Trend,
    critical_value,
    diff_noise_sd,
    noise_dof,
    robust_excess,
    trend,
)

log = logging.getLogger(__name__)

WARMUP, HEALTHY, STAGNATION, DECAY, ACCELERATED, COLLAPSED = (
    "warmup",
    "healthy",
    "stagnation",
    "steady_decay",
    "accelerated_collapse",
    "collapsed",
)
PHASE_IDS = {WARMUP: -1, HEALTHY: 0, STAGNATION: 1, DECAY: 2, ACCELERATED: 3, COLLAPSED: 4}
WARNING_PHASES = (DECAY, ACCELERATED, COLLAPSED)
FLAGS = (
    "grad_spike",
    "entropy_surge",
    "neg_displacement_majority",
    "displacement_drop",
    "incorrect_below_correct",
    "reward_falling",
    "searches_failing",
)
#: flags that set `warning` on their own (besides the WARNING_PHASES)
WARNING_FLAGS = ("neg_displacement_majority", "displacement_drop", "reward_falling", "searches_failing")
# Phases and flags whose first appearance is announced at WARNING.
_ANNOUNCED = (*WARNING_PHASES, *WARNING_FLAGS, "incorrect_below_correct")


#: the longest trend window accepted: Theil-Sen is quadratic in it (~30 ms a step for two series at 500)
MAX_WINDOW = 500


@dataclass(frozen=True)
class MonitorConfig:
    """Thresholds of `CollapseMonitor`. Windows count points (logged steps with a finite value)."""

    window: int = 50  # long trend window, points: steady decay, reward trends
    short_window: int = 15  # short window, points (capped at `window`): acceleration, displacement, Fig. 9a
    min_points: int = 20  # likelihood points before any phase verdict ("warmup" until then; capped at `window`)
    noise_window: int = 100  # points whose first differences estimate the noise sd
    z: float = 3.0  # one-sided significance of a trend, in standard errors (before the small-sample widening)
    exit_z: float = 1.5  # hysteresis: a trend once called holds while beyond this many SEs (and the tolerance)
    likelihood_tol: float = 1e-3  # nats/token/step: a slower likelihood trend is "flat" however significant
    reward_tol: float = 1e-3  # reward/step: +0.1 per 100 steps
    decay_consecutive: int = 3  # steps of falling likelihood before "steady decay" (and of falling reward)
    accel_factor: float = 3.0  # acceleration: short-window slope steeper than this x the decay slope
    grad_spike_factor: float = 3.0  # a spike is at least this x the running median grad norm ...
    grad_spike_z: float = 4.0  # ... and this many robust sds above it, in log grad norm
    entropy_surge_z: float = 4.0  # entropy above the running median by this many robust sds
    entropy_rel_floor: float = 0.02  # robust-sd floor as a share of |median entropy| (a flat entropy has MAD 0)
    baseline_window: int = 50  # points in the running median/MAD baselines of grad norm and entropy
    min_baseline: int = 10  # no spike/surge verdict before this many baseline points
    event_memory: int = 10  # steps: a spike/surge this old still supports "acceleration"
    neg_displacement_share: float = 0.5  # Fig. 3a threshold on the share of correct responses with Δ < 0
    displacement_drop_z: float = 4.0  # a drop: Δ of correct responses this many robust sds below its median
    displacement_drop_floor: float = 0.02  # nats per response: robust-sd floor (early rounds can agree closely)
    displacement_drops: int = 2  # drops within `event_memory` steps that raise `displacement_drop`
    collapsed_fraction: float = 0.5  # "collapsed": reward below this x its running best (or entropy above ...)
    reward_smooth: int = 5  # ... the trailing mean of this many rewards, as the death-spiral criterion smooths
    entropy_uniform: float | None = None  # nats/token of a uniform policy, ln(vocabulary size), when a record
    # lacks `entropy_uniform_key` (our trainer logs it each step); None: unknown
    likelihood_key: str = "likelihood/correct_mean"
    incorrect_key: str = "likelihood/incorrect_mean"
    reward_key: str = "reward/mean"
    grad_key: str = "grad/norm"
    entropy_key: str = "policy/entropy"
    entropy_uniform_key: str = "policy/entropy_uniform"
    failed_search_key: str = "env/failed_search_share"
    max_failed_search_share: float = 0.1  # more of a step's searches failing than this is a warning
    displacement_key: str = "likelihood/displacement_correct_neg_share"
    displacement_mean_key: str = "likelihood/displacement_correct"

    def __post_init__(self) -> None:
        if self.window < 5 or self.short_window < 4 or self.min_points < 5 or self.noise_window < 5:
            raise ValueError("window, noise_window and min_points must be >= 5, short_window >= 4")
        if self.window > MAX_WINDOW or self.short_window > MAX_WINDOW or self.noise_window > MAX_WINDOW:
            raise ValueError(f"window, short_window and noise_window must be <= {MAX_WINDOW} (MAX_WINDOW)")
        if self.decay_consecutive < 1 or self.min_baseline < 3 or self.event_memory < 0:
            raise ValueError("decay_consecutive must be >= 1, min_baseline >= 3, event_memory >= 0")
        if self.z <= 0 or self.grad_spike_z <= 0 or self.entropy_surge_z <= 0 or not 0 <= self.exit_z <= self.z:
            raise ValueError("z, grad_spike_z and entropy_surge_z must be > 0, exit_z in [0, z]")
        if self.likelihood_tol < 0 or self.reward_tol < 0 or self.accel_factor < 1 or self.grad_spike_factor <= 1:
            raise ValueError("tolerances must be >= 0, accel_factor >= 1 and grad_spike_factor > 1")
        if self.displacement_drop_z <= 0 or self.displacement_drop_floor < 0 or self.displacement_drops < 1:
            raise ValueError("displacement_drop_z must be > 0, displacement_drop_floor >= 0, displacement_drops >= 1")
        if not 0 < self.collapsed_fraction < 1 or self.reward_smooth < 1:
            raise ValueError("collapsed_fraction must be in (0, 1) and reward_smooth >= 1")
        if self.entropy_uniform is not None and not self.entropy_uniform > 0:
            raise ValueError("entropy_uniform must be > 0 nats (ln of the vocabulary size)")

    @property
    def short(self) -> int:
        return min(self.short_window, self.window)

    @property
    def min_trend_points(self) -> int:
        return min(self.min_points, self.window)


@dataclass
class MonitorStatus:
    step: int
    phase: str
    reasons: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    warning: bool = False
    #: the phases/flags first entered at this step (each is announced once per run)
    new_warnings: list[str] = field(default_factory=list)
    likelihood_slope: float | None = None  #: nats/token/step, long window
    reward_slope: float | None = None  #: reward/step, long window
    likelihood_se: float | None = None  #: standard error of likelihood_slope
    reward_se: float | None = None  #: standard error of reward_slope
    likelihood_noise: float | None = None  #: per-step noise sd of the likelihood, nats/token

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


class _Series:
    """The last points (step, value) of one metric, with its noise estimate and window trends."""

    def __init__(self, config: MonitorConfig) -> None:
        self.config = config
        self.points: deque[tuple[float, float]] = deque(maxlen=max(config.window, config.noise_window))
        #: (noise sd, its degrees of freedom) from the last `noise_window` points; None until 4 points
        self.noise: tuple[float, float] | None = None

    def add(self, step: int, value: float | None) -> None:
        if value is None:
            return
        self.points.append((float(step), value))
        values = [v for _, v in list(self.points)[-self.config.noise_window :]]
        sd = diff_noise_sd(values)
        self.noise = None if sd is None else (sd, noise_dof(len(values)))

    def trend(self, points: int) -> Trend | None:
        window = list(self.points)[-points:]
        if len(window) < min(points, self.config.min_trend_points) or self.noise is None:
            return None
        xs, ys = zip(*window, strict=True)
        return trend(xs, ys, self.noise[0], z=self.config.z, dof=self.noise[1])


def _mean_above(values: list[float], threshold: float, z: float) -> tuple[bool, float, float]:
    """(mean significantly above threshold, mean, critical x SE): a one-sample t-style test."""
    mean = statistics.fmean(values)
    # by hand: statistics.stdev computes in exact fractions, ~50x slower
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    margin = critical_value(z, len(values) - 1) * sd / math.sqrt(len(values))
    return mean > threshold + margin, mean, margin


def _direction(previous: int, t: Trend | None, tol: float, exit_z: float) -> int:
    """-1 falling, +1 rising, 0 flat, with hysteresis: entering needs `t.falling/rising(tol)` (critical
    SEs), staying needs only `exit_z` SEs beyond 0 and the tolerance, so a trend that hovers at the
    threshold neither flickers in and out nor counts as several warnings."""
    if t is None:
        return 0
    if t.falling(tol) or (previous < 0 and t.slope < -tol and t.z < -exit_z):
        return -1
    if t.rising(tol) or (previous > 0 and t.slope > tol and t.z > exit_z):
        return 1
    return 0


class CollapseMonitor:
    """Feed `update(metrics)` once per RL step; it returns that step's `MonitorStatus`."""

    def __init__(self, config: MonitorConfig | None = None) -> None:
        self.config = config or MonitorConfig()
        self.announced: set[str] = set()
        self.history: list[MonitorStatus] = []
        self.restart()

    def restart(self) -> None:
        """Forget every point and trend (history and announcements stay): the next update starts a new
        trajectory, warming up again. For a log whose restart cannot be aligned with the run before it."""
        cfg = self.config
        self._likelihood = _Series(cfg)
        self._reward = _Series(cfg)
        self._gap: deque[float] = deque(maxlen=cfg.short)  # incorrect - correct likelihood
        self._shares: deque[float] = deque(maxlen=cfg.short)
        self._grads: deque[float] = deque(maxlen=cfg.baseline_window)  # log grad norms
        self._entropies: deque[float] = deque(maxlen=cfg.baseline_window)
        self._displacements: deque[float] = deque(maxlen=cfg.baseline_window)
        self._drop_steps: deque[int] = deque(maxlen=cfg.displacement_drops)
        self._recent_rewards: deque[float] = deque(maxlen=cfg.reward_smooth)
        self._best_smoothed_reward: float | None = None
        self._last_event_step: int | None = None
        self._falling_run = 0  # consecutive steps the likelihood has been falling
        self._reward_falling_run = 0
        self._l_direction = 0  # -1/0/+1: the likelihood's long-window trend, with hysteresis
        self._r_direction = 0  # the reward's
        self._incorrect_was_above = False
        self._decay_slopes: list[float] = []
        self._phase = WARMUP
        self._step = -1

    # ------------------------------------------------------------------ events

    def _grad_spike(self, grad: float | None) -> str | None:
        cfg = self.config
        if grad is None or grad <= 0:
            return None
        verdict = None
        log_grad = math.log(grad)
        if len(self._grads) >= cfg.min_baseline:
            excess, log_median, _ = robust_excess(log_grad, list(self._grads))
            median = math.exp(log_median)
            if excess > cfg.grad_spike_z and grad > cfg.grad_spike_factor * median:
                verdict = (
                    f"grad norm {grad:.3g} > {cfg.grad_spike_factor:g} x running median {median:.3g} "
                    f"({excess:.1f} robust sds in log)"
                )
        self._grads.append(log_grad)
        return verdict

    def _entropy_surge(self, entropy: float | None) -> str | None:
        cfg = self.config
        if entropy is None:
            return None
        verdict = None
        if len(self._entropies) >= cfg.min_baseline:
            floor = cfg.entropy_rel_floor * abs(statistics.median(self._entropies))
            excess, median, spread = robust_excess(entropy, list(self._entropies), floor=floor)
            if excess > cfg.entropy_surge_z:
                limit = f"running median {median:.3g} + {cfg.entropy_surge_z:g} x {spread:.3g}"
                verdict = f"entropy {entropy:.3g} > {limit}"
        self._entropies.append(entropy)
        return verdict

    # ------------------------------------------------------------------ flags

    def _displacement_majority(self, share: float | None) -> str | None:
        if share is None:
            return None
        self._shares.append(share)
        if len(self._shares) < min(8, self.config.short):
            return None
        threshold = self.config.neg_displacement_share
        above, mean, margin = _mean_above(list(self._shares), threshold, self.config.z)
        if not above:
            return None
        return (
            f"{mean:.0%} of correct responses lost likelihood in the update over the last {len(self._shares)} "
            f"steps (> {threshold:.0%} + {margin:.0%})"
        )

    def _displacement_drop(self, step: int, delta: float | None) -> str | None:
        cfg = self.config
        if delta is None:
            return None
        if delta < 0 and len(self._displacements) >= cfg.min_baseline:
            excess, _, _ = robust_excess(-delta, [-d for d in self._displacements], floor=cfg.displacement_drop_floor)
            if excess > cfg.displacement_drop_z:
                self._drop_steps.append(step)
        self._displacements.append(delta)
        recent = [s for s in self._drop_steps if step - s < cfg.event_memory]
        if len(recent) < cfg.displacement_drops:
            return None
        return (
            f"correct responses lost likelihood in the update on {len(recent)} of the last {cfg.event_memory} steps "
            f"(Δ {delta:+.3g} nats this step; each drop > {cfg.displacement_drop_z:g} robust sds below the running "
            "median)"
        )

    def _collapsed(self, reward: float | None, entropy: float | None, uniform: float | None) -> str | None:
        """After the fact: the reward below `collapsed_fraction` x its smoothed running best, or entropy above
        `collapsed_fraction` x uniform (`uniform`: the record's own, else `entropy_uniform`). The reward's
        running best counts from the first full trailing window."""
        cfg = self.config
        verdicts = []
        if reward is not None:
            self._recent_rewards.append(reward)
            if len(self._recent_rewards) == cfg.reward_smooth:
                smoothed = statistics.fmean(self._recent_rewards)
                best = self._best_smoothed_reward = max(smoothed, self._best_smoothed_reward or smoothed)
                if best > 0 and smoothed < cfg.collapsed_fraction * best:
                    verdicts.append(
                        f"reward {smoothed:.3g} ({cfg.reward_smooth}-step mean) < {cfg.collapsed_fraction:g} x "
                        f"its best {best:.3g}"
                    )
        uniform = uniform if uniform is not None else cfg.entropy_uniform
        if entropy is not None and uniform is not None and entropy > cfg.collapsed_fraction * uniform:
            verdicts.append(f"entropy {entropy:.3g} > {cfg.collapsed_fraction:g} x uniform {uniform:.3g} nats")
        return "collapsed: " + "; ".join(verdicts) if verdicts else None

    def _incorrect_below(self, correct: float | None, incorrect: float | None) -> str | None:
        if correct is None or incorrect is None:
            return None
        self._gap.append(incorrect - correct)
        if len(self._gap) < min(8, self.config.short):
            return None
        gap = [-g for g in self._gap]
        below, mean, margin = _mean_above(gap, 0.0, self.config.z)
        if not below:
            if -mean >= 0:
                self._incorrect_was_above = True
            return None
        if not self._incorrect_was_above:
            return None
        return f"incorrect-response likelihood {mean:.3g} nats/token below correct's (> {margin:.3g}: significant)"

    def _reward_falling(self, long: Trend | None, short: Trend | None) -> str | None:
        cfg = self.config
        self._r_direction = _direction(self._r_direction, long, cfg.reward_tol, cfg.exit_z)
        short_falling = short is not None and short.falling(cfg.reward_tol)
        falling = self._r_direction < 0 or short_falling
        self._reward_falling_run = self._reward_falling_run + 1 if falling else 0
        if self._reward_falling_run < cfg.decay_consecutive:
            return None
        t = long if self._r_direction < 0 else short
        assert t is not None
        return f"reward falling: slope {t.describe()} for {self._reward_falling_run} steps"

    # ------------------------------------------------------------------ update

    def update(self, metrics: Mapping[str, Any], *, announce: bool = True) -> MonitorStatus:
        """Classify one step. `announce=False` replays history (e.g. on resume) without logging warnings.
        `metrics` is one step's flat dict (keys as in `MonitorConfig`; missing or non-finite values are
        skipped); its "step" (an int) numbers the step, else the previous step + 1."""
        cfg = self.config
        step = int(metrics["step"]) if isinstance(metrics.get("step"), int) else self._step + 1
        self._step = step
        reasons: list[str] = []  # the flags' reasons; the phase's goes first
        flags: list[str] = []

        def flag(name: str, verdict: str | None) -> None:
            if verdict:
                if name not in flags:
                    flags.append(name)
                reasons.append(verdict)

        nonfinite = _finite(metrics, "grad/nonfinite_steps")
        for name, verdict in (
            ("grad_spike", self._grad_spike(_finite(metrics, cfg.grad_key))),
            # An inf/NaN gradient is the explosion itself; StepMetrics keeps it out of grad/norm.
            ("grad_spike", f"{nonfinite:g} optimizer steps had a non-finite gradient norm" if nonfinite else None),
            ("entropy_surge", self._entropy_surge(_finite(metrics, cfg.entropy_key))),
        ):
            if verdict:
                flag(name, verdict)
                self._last_event_step = step

        correct = _finite(metrics, cfg.likelihood_key)
        self._likelihood.add(step, correct)
        self._reward.add(step, _finite(metrics, cfg.reward_key))
        flag("neg_displacement_majority", self._displacement_majority(_finite(metrics, cfg.displacement_key)))
        flag("incorrect_below_correct", self._incorrect_below(correct, _finite(metrics, cfg.incorrect_key)))
        flag("displacement_drop", self._displacement_drop(step, _finite(metrics, cfg.displacement_mean_key)))
        failed = _finite(metrics, cfg.failed_search_key)
        if failed is not None and failed > cfg.max_failed_search_share:
            flag("searches_failing", f"{failed:.0%} of the step's searches failed or were refused by the retriever")
        collapsed = self._collapsed(
            _finite(metrics, cfg.reward_key),
            _finite(metrics, cfg.entropy_key),
            _finite(metrics, cfg.entropy_uniform_key),
        )

        l_long, l_short = self._likelihood.trend(cfg.window), self._likelihood.trend(cfg.short)
        r_long, r_short = self._reward.trend(cfg.window), self._reward.trend(cfg.short)
        flag("reward_falling", self._reward_falling(r_long, r_short))
        phase_reason: list[str] = []
        phase = self._classify(step, l_long, l_short, r_long, "reward_falling" in flags, phase_reason)
        if collapsed:  # outranks every other phase; the likelihood phase's reason is kept after it
            phase, phase_reason = COLLAPSED, [collapsed, *phase_reason]
        reasons = phase_reason + reasons
        self._phase = phase
        warning = phase in WARNING_PHASES or any(f in flags for f in WARNING_FLAGS)
        new = [name for name in (phase, *flags) if name in _ANNOUNCED and name not in self.announced]
        self.announced.update(new)
        noise = self._likelihood.noise
        status = MonitorStatus(
            step,
            phase,
            reasons,
            flags,
            warning,
            new if announce else [],
            None if l_long is None else l_long.slope,
            None if r_long is None else r_long.slope,
            None if l_long is None else l_long.se,
            None if r_long is None else r_long.se,
            None if noise is None else noise[0],
        )
        if announce and new:
            log.warning("step %d: LLD death-spiral warning (%s): %s", step, ", ".join(new), "; ".join(reasons))
        self.history.append(status)
        return status

    def _classify(
        self,
        step: int,
        l_long: Trend | None,
        l_short: Trend | None,
        r_long: Trend | None,
        reward_falling: bool,
        reasons: list[str],
    ) -> str:
        cfg = self.config
        if l_long is None:
            have = len(self._likelihood.points)
            reasons.append(
                f"warming up: {have}/{cfg.min_trend_points} correct-response likelihood points"
                if have
                else "no correct-response likelihood: phases unknown"
            )
            self._falling_run = 0
            return WARMUP
        tol = cfg.likelihood_tol
        self._l_direction = _direction(self._l_direction, l_long, tol, cfg.exit_z)
        falling = self._l_direction < 0
        self._falling_run = self._falling_run + 1 if falling else 0
        reward_rising = self._r_direction > 0
        if r_long is None:
            reward_text = "reward trend unknown"
        else:
            trend_name = {1: "rising", 0: "flat", -1: "falling"}[self._r_direction]
            reward_text = f"reward slope {r_long.describe()} ({trend_name})"
        reference = statistics.median(self._decay_slopes) if self._decay_slopes else -tol
        steep_limit = cfg.accel_factor * min(reference, -tol)
        short_falling = l_short is not None and l_short.falling(tol)
        steep = short_falling and l_short is not None and l_short.slope < steep_limit
        recent_event = self._last_event_step is not None and step - self._last_event_step <= cfg.event_memory
        l_text = f"correct-response likelihood slope {l_long.describe()}"

        if (steep and (recent_event or reward_falling)) or (self._phase == ACCELERATED and (falling or short_falling)):
            why = "a grad spike / entropy surge" if recent_event else "the reward falling" if reward_falling else ""
            short_text = "" if l_short is None else f"short-window likelihood slope {l_short.describe()}, "
            reasons.append(
                f"{short_text}steeper than {cfg.accel_factor:g} x decay slope {reference:+.2e}"
                + (f", with {why}" if why else " before (still falling)")
                + f"; {l_text}; {reward_text}"
            )
            return ACCELERATED
        if self._falling_run >= cfg.decay_consecutive:
            if not steep:
                self._decay_slopes.append(l_long.slope)
            reasons.append(f"{l_text} < -{tol:g}, falling for {self._falling_run} steps; {reward_text}")
            return DECAY
        if reward_rising and self._l_direction == 0:
            reasons.append(f"{l_text} flat while {reward_text}")
            return STAGNATION
        reasons.append(f"{l_text}; {reward_text}")
        return HEALTHY

    # ------------------------------------------------------------------ history

    def replay(self, records: Iterable[Mapping[str, Any]]) -> MonitorStatus | None:
        """Rebuild the state from logged metrics (e.g. `read_metrics` on resume) without re-announcing."""
        status = None
        for record in records:
            status = self.update(record, announce=False)
        return status

    def first_step(self, phase: str) -> int | None:
        """The first step classified as `phase`, if any."""
        return next((s.step for s in self.history if s.phase == phase), None)

    def first_warning_step(self) -> int | None:
        """The first step whose status had `warning` set, if any."""
        return next((s.step for s in self.history if s.warning), None)
