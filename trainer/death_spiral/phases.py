"""Is it the paper's spiral? A run's metrics cut into the phases of arXiv 2512.04220 Fig. 2 and checked
against what the paper reports for each.

The paper (Fig. 2, Qwen2.5-3B-Instruct on NQ) describes three phases: I stagnation (the reward rises while
the correct-response likelihood stays flat), II steady decay (the likelihood falls slowly while the reward
still rises and the gradient norm is stable), III accelerated collapse (the likelihood drops sharply, the
gradient norm surges, the reward collapses). The phases are cut from the run's own curves, declared here
and not tuned per run:

- the reward peak is the step of the highest 5-step trailing mean of the reward before the collapse (the
  experiment's criterion, `CollapseCriterion`), or in the whole run when it did not collapse;
- I = the first half of the steps up to the peak, II = the second half, III = from the peak to the end
  (the collapse, the criterion's step, lies inside III).

Each phase gets Theil-Sen slopes (per step) of the reward and of the correct-response likelihood (token
mean), the median and maximum gradient norm, the median entropy and the mean share of correct responses
whose likelihood fell across the round; the checks compare them with the paper's description:
I reward rising; I likelihood flat (|slope| under `FLAT` nats/token/step); II likelihood falling;
III likelihood falling faster than in II; III gradient-norm surge (max over III above `SURGE` x the median
over I-II); III reward falling. A check is None where a phase has under 3 points of its series.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from trainer.death_spiral.criterion import CollapseCriterion
from trainer.diagnostics.robust_trends import theil_sen

FLAT = 2e-3  # nats/token/step: a slower likelihood trend counts as flat (0.1 nats over 50 steps)
SURGE = 3.0  # a gradient-norm surge: III's max above this x the median over I-II
PHASES = ("I", "II", "III")


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _series(records: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    kept = [(float(r["step"]), float(r[key])) for r in records if _finite(r.get(key))]
    return [s for s, _ in kept], [v for _, v in kept]


def _slope(records: Sequence[Mapping[str, Any]], key: str) -> float | None:
    xs, ys = _series(records, key)
    return theil_sen(xs, ys) if len(xs) >= 3 else None


def _stat(records: Sequence[Mapping[str, Any]], key: str, how: str) -> float | None:
    _, ys = _series(records, key)
    if not ys:
        return None
    return {"median": statistics.median, "max": max, "mean": statistics.fmean}[how](ys)


def reward_peak(records: Sequence[Mapping[str, Any]], criterion: CollapseCriterion | None = None) -> int | None:
    """The step of the highest smoothed reward before the collapse (or in the whole run)."""
    criterion = criterion or CollapseCriterion()
    collapse = criterion.collapse_step(records)
    smoothed = [(s, v) for s, v in criterion.smoothed(records) if collapse is None or s <= collapse]
    return max(smoothed, key=lambda sv: sv[1])[0] if smoothed else None


def phase_table(records: Sequence[Mapping[str, Any]], criterion: CollapseCriterion | None = None) -> dict[str, Any]:
    """The run's phases (module docstring): per phase its steps and statistics, and the paper's checks."""
    criterion = criterion or CollapseCriterion()
    records = sorted((r for r in records if isinstance(r.get("step"), int)), key=lambda r: r["step"])
    peak = reward_peak(records, criterion)
    if peak is None or not records:
        return {"peak": None, "collapse": None, "phases": {}, "checks": {}}
    first = records[0]["step"]
    middle = first + (peak - first) // 2
    cuts = {
        "I": [r for r in records if r["step"] <= middle],
        "II": [r for r in records if middle < r["step"] <= peak],
        "III": [r for r in records if r["step"] > peak],
    }
    phases = {}
    for name, part in cuts.items():
        phases[name] = {
            "steps": [part[0]["step"], part[-1]["step"]] if part else None,
            "reward_slope": _slope(part, "reward/mean"),
            "reward_mean": _stat(part, "reward/mean", "mean"),
            "correct_loglik_slope": _slope(part, "likelihood/correct_mean"),
            "correct_loglik_mean": _stat(part, "likelihood/correct_mean", "mean"),
            "grad_norm_median": _stat(part, "grad/norm", "median"),
            "grad_norm_max": _stat(part, "grad/norm", "max"),
            "entropy_median": _stat(part, "policy/entropy", "median"),
            "displacement_neg_share": _stat(part, "likelihood/displacement_correct_neg_share", "mean"),
        }
    before = cuts["I"] + cuts["II"]
    grad_before = _stat(before, "grad/norm", "median")
    one, two, three = phases["I"], phases["II"], phases["III"]

    def known(*values: Any) -> bool:
        return all(v is not None for v in values)

    checks = {
        "I reward rising": one["reward_slope"] > 0 if known(one["reward_slope"]) else None,
        "I likelihood flat": abs(one["correct_loglik_slope"]) < FLAT if known(one["correct_loglik_slope"]) else None,
        "II likelihood falling": two["correct_loglik_slope"] < 0 if known(two["correct_loglik_slope"]) else None,
        "III likelihood falling faster than II": (
            three["correct_loglik_slope"] < min(two["correct_loglik_slope"], 0)
            if known(three["correct_loglik_slope"], two["correct_loglik_slope"])
            else None
        ),
        "III gradient-norm surge": (
            three["grad_norm_max"] > SURGE * grad_before if known(three["grad_norm_max"], grad_before) else None
        ),
        "III reward falling": three["reward_slope"] < 0 if known(three["reward_slope"]) else None,
    }
    return {"peak": peak, "collapse": criterion.collapse_step(records), "phases": phases, "checks": checks}


def _fmt(value: Any, spec: str = ".3g") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return f"{value[0]}-{value[1]}"
    return format(value, spec)


def phase_markdown(runs: Mapping[str, Sequence[Mapping[str, Any]]], criterion: CollapseCriterion | None = None) -> str:
    """Two markdown tables for `runs` (label -> records): the phases' statistics and the paper's checks."""
    tables = {label: phase_table(records, criterion) for label, records in runs.items()}
    stats = [
        "| run | phase | steps | reward (mean, slope/step) | correct log-lik (mean, slope/step) "
        "| grad norm (median, max) | entropy (median) | share of correct losing likelihood |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, table in tables.items():
        for name in PHASES:
            p = table["phases"].get(name)
            if not p:
                continue
            stats.append(
                f"| {label} | {name} | {_fmt(p['steps'])} | {_fmt(p['reward_mean'], '.2f')}, "
                f"{_fmt(p['reward_slope'], '+.4f')} | {_fmt(p['correct_loglik_mean'], '.3f')}, "
                f"{_fmt(p['correct_loglik_slope'], '+.4f')} | {_fmt(p['grad_norm_median'])}, "
                f"{_fmt(p['grad_norm_max'])} | {_fmt(p['entropy_median'], '.2f')} "
                f"| {_fmt(p['displacement_neg_share'], '.2f')} |"
            )
    names = list(next((t["checks"] for t in tables.values() if t["checks"]), {}))
    checks = ["| run | reward peak | collapse | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 3)]
    for label, table in tables.items():
        cells = " | ".join(_fmt(table["checks"].get(n)) for n in names)
        checks.append(f"| {label} | {_fmt(table['peak'])} | {_fmt(table['collapse'])} | {cells} |")
    return "\n".join(stats) + "\n\n" + "\n".join(checks) + "\n"
