"""trainer.diagnostics: likelihood measures on hand-computed tensors, the step-metrics builder, the JSONL /
TensorBoard log, the collapse monitor on synthetic Fig. 2-shaped and project-noise series (and the robust
statistics under it), and the diagnostics plot."""

from __future__ import annotations

import json
import logging
import math
import random
import statistics
import sys
from pathlib import Path

import pytest
import torch

from trainer.diagnostics import metrics_log
from trainer.diagnostics.collapse_monitor import (
    ACCELERATED,
    COLLAPSED,
    DECAY,
    HEALTHY,
    STAGNATION,
    WARMUP,
    CollapseMonitor,
    MonitorConfig,
)
from trainer.diagnostics.likelihood import (
    displacement_stats,
    likelihood_by_outcome,
    likelihood_displacement,
    response_logprob_sums,
    span_displacement_stats,
)
from trainer.diagnostics.metrics_log import MetricsLogger, read_metrics
from trainer.diagnostics.plots import plot_main, plot_metrics
from trainer.diagnostics.robust_trends import critical_value, diff_noise_sd, theil_sen, trend
from trainer.diagnostics.step_metrics import METRIC_KEYS, StepMetrics, metric_table_markdown

INF, NAN = math.inf, math.nan
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# ---------------------------------------------------------------- likelihood measures

# Three responses; observation tokens carry absurd values (-50, -inf) and padding NaN: none may count.
LOGP = torch.tensor(
    [
        [-1.0, -2.0, -50.0, -3.0],  # correct, A = +1: generated -1, -2, -3 (sum -6, 3 tokens)
        [-4.0, -INF, -2.0, NAN],  # incorrect, A = -1: generated -4, -2 (sum -6, 2 tokens)
        [-0.5, -0.5, -INF, NAN],  # incorrect, A = 0 (all-equal group): generated -0.5, -0.5 (sum -1)
    ],
    dtype=torch.float64,
)
GEN_MASK = torch.tensor([[1, 1, 0, 1], [1, 0, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
CORRECT = torch.tensor([True, False, False])
ADVANTAGES = torch.tensor([1.0, -1.0, 0.0])


def test_summed_likelihood_ignores_observations_and_padding() -> None:
    assert response_logprob_sums(LOGP, GEN_MASK).tolist() == [-6.0, -6.0, -1.0]


@pytest.mark.parametrize("advantages", [ADVANTAGES, ADVANTAGES[:, None] * GEN_MASK], ids=["per-response", "tiled"])
def test_likelihood_by_correctness_and_by_advantage_sign(advantages: torch.Tensor) -> None:
    out = likelihood_by_outcome(LOGP, GEN_MASK, correct=CORRECT, advantages=advantages)
    expected = {
        "likelihood/correct_mean": -6 / 3,
        "likelihood/incorrect_mean": (-4 - 2 - 0.5 - 0.5) / 4,  # pooled over the tokens of rows 1 and 2
        "likelihood/correct_seq_mean": -6.0,
        "likelihood/incorrect_seq_mean": (-6 - 1) / 2,
        "likelihood/adv_nonneg_mean": (-6 - 1) / 5,  # A >= 0: rows 0 and 2
        "likelihood/adv_neg_mean": -6 / 2,
        "likelihood/adv_nonneg_seq_mean": (-6 - 1) / 2,
        "likelihood/adv_neg_seq_mean": -6.0,
        "likelihood/authors_pos_avg": (-6 - 1) / 7,  # authors' masked_mean: ALL 7 generated tokens below
        "likelihood/authors_neg_avg": -6 / 7,
    }
    assert out.keys() == expected.keys()
    for key, value in expected.items():
        assert out[key] == pytest.approx(value), key


def test_empty_subset_is_nan_not_zero() -> None:
    out = likelihood_by_outcome(LOGP, GEN_MASK, correct=torch.zeros(3, dtype=torch.bool))
    assert math.isnan(out["likelihood/correct_mean"]) and math.isnan(out["likelihood/correct_seq_mean"])


def test_shape_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="gen_mask"):
        likelihood_by_outcome(LOGP, GEN_MASK[:, :3], correct=CORRECT)
    with pytest.raises(ValueError, match="correct"):
        likelihood_by_outcome(LOGP, GEN_MASK, correct=CORRECT[:2])


def test_displacement_across_an_update() -> None:
    mask = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 1, 0], [1, 0, 0], [1, 1, 0]], dtype=torch.bool)
    change = torch.tensor(
        [
            [0.2, -0.5, 9.0],  # correct, Δ = -0.3 (the +9 on the observation token must not count)
            [-1.0, -1.0, 9.0],  # incorrect, Δ = -2
            [0.4, 0.3, -9.0],  # correct, Δ = 0.7
            [-0.1, 5.0, 0.0],  # correct, Δ = -0.1 (second token is padding)
            [0.5, 0.5, 0.0],  # incorrect, Δ = 1
        ],
        dtype=torch.float64,
    )
    before = -torch.rand(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    delta = likelihood_displacement(before, before + change, mask)
    assert delta.tolist() == pytest.approx([-0.3, -2.0, 0.7, -0.1, 1.0])
    correct = torch.tensor([True, False, True, True, False])
    out = displacement_stats(delta, correct, group_ids=torch.tensor([0, 0, 1, 1, 2]))
    assert out["likelihood/displacement_correct"] == pytest.approx((-0.3 + 0.7 - 0.1) / 3)
    assert out["likelihood/displacement_incorrect"] == pytest.approx((-2.0 + 1.0) / 2)
    assert out["likelihood/displacement_correct_neg_share"] == pytest.approx(2 / 3)
    # Questions with a correct response: 0 (mean Δ -0.3 < 0) and 1 (mean 0.3); question 2 has none.
    assert out["likelihood/displacement_question_neg_share"] == pytest.approx(1 / 2)


def test_span_displacement_splits_correct_responses_answer_from_other_tokens():
    """Row 0 correct: search tokens rose (+0.2, +0.4), answer tokens fell (-0.5, -0.1); row 1 incorrect (left out);
    row 2 correct, no answer span, one token fell (-0.3); padding (mask 0) never counts."""
    gen = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    answer = torch.tensor([[0, 0, 1, 1, 0], [0, 0, 0, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    change = torch.tensor(
        [[0.2, 0.4, -0.5, -0.1, 9.0], [-1.0, -1.0, -1.0, -1.0, -1.0], [-0.3, 0.1, 5.0, 5.0, 5.0]], dtype=torch.float64
    )
    before = torch.full((3, 5), -1.0, dtype=torch.float64)
    out = span_displacement_stats(before, before + change, gen, answer, torch.tensor([True, False, True]))
    assert out["likelihood/delta_correct_answer_token_mean"] == pytest.approx(-0.3)
    assert out["likelihood/delta_correct_answer_fell_share"] == pytest.approx(1.0)
    assert out["likelihood/delta_correct_other_token_mean"] == pytest.approx((0.2 + 0.4 - 0.3 + 0.1) / 4)
    assert out["likelihood/delta_correct_other_fell_share"] == pytest.approx(1 / 4)
    none = span_displacement_stats(before, before + change, gen, answer, torch.tensor([False, False, False]))
    assert math.isnan(none["likelihood/delta_correct_answer_token_mean"])
    with pytest.raises(ValueError, match="answer_mask"):
        span_displacement_stats(before, before, gen, answer[:, :3], torch.tensor([True, False, True]))


# ---------------------------------------------------------------- step metrics


def test_step_metrics_builds_documented_keys() -> None:
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    m = StepMetrics(7)
    m.rollout(
        rewards=rewards,
        group_ids=groups,
        em=rewards,
        f1=[1.0, 1.0, 0.5, 1.0, 0.0, 0.0],
        valid_action=[1.0] * 6,
        turns=[2, 2, 3, 1, 3, 3],
        searches=[1, 1, 2, 0, 2, 2],
        failed_searches=[0, 1, 0, 0, 1, 0],
        gen_tokens=[10, 20, 30, 40, 50, 60],
    )
    logp = -torch.rand(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(6, 5, dtype=torch.bool)
    m.likelihood(logp, mask, rewards=rewards, advantages=rewards - 0.5)
    m.displacement(logp, logp - 0.01, mask, rewards=rewards, group_ids=groups)
    m.optimizer_step({"llds/activation_rate": 0.2, "llds/magnitude": torch.tensor(0.1)}, grad_norm=1.0, lr=1e-6)
    m.optimizer_step({"llds/activation_rate": 0.4, "llds/magnitude": 0.3}, grad_norm=torch.tensor(3.0), lr=2e-6)
    m.optimizer_step({"llds/activation_rate": 0.6, "llds/magnitude": 0.5}, grad_norm=INF, lr=3e-6)
    m.timings(rollout_s=10.0, update_s=5.0)
    out = m.build()

    assert set(out) <= set(METRIC_KEYS)
    assert out["step"] == 7
    assert out["reward/mean"] == pytest.approx(0.5) and out["reward/std"] == pytest.approx(0.5)
    assert out["reward/zero_var_group_share"] == pytest.approx(2 / 3)  # groups 0 ([1, 1]) and 2 ([0, 0])
    assert out["reward/group_std_mean"] == pytest.approx(math.sqrt(0.5) / 3)
    assert out["eval/f1"] == pytest.approx(3.5 / 6) and out["env/searches_mean"] == pytest.approx(8 / 6)
    assert out["response/gen_tokens_mean"] == 35 and out["response/gen_tokens_max"] == 60
    assert out["env/failed_searches"] == 2 and out["env/failed_search_share"] == pytest.approx(2 / 8)
    assert out["llds/activation_rate"] == pytest.approx(0.4) and out["llds/magnitude"] == pytest.approx(0.3)
    assert out["llds/first_step_activation_rate"] == pytest.approx(0.2)  # the round's first step alone
    assert out["grad/norm"] == pytest.approx(2.0) and out["grad/norm_max"] == 3.0  # the inf step is counted apart
    assert out["grad/nonfinite_steps"] == 1 and out["optim/steps"] == 3 and out["optim/lr"] == 3e-6
    assert out["likelihood/displacement_correct"] == pytest.approx(-0.05)  # 5 tokens x -0.01
    assert out["likelihood/displacement_correct_neg_share"] == 1.0
    assert out["perf/tokens_per_s"] == pytest.approx(210 / 15) and out["time/step_s"] == 15.0
    assert metric_table_markdown().count("\n") == len(METRIC_KEYS) + 1


def test_sampler_gap_compares_the_samplers_log_probs_with_the_trainers_on_generated_tokens_only():
    trainer = torch.log(torch.tensor([[0.5, 0.5, 0.25, 0.9], [0.5, 0.1, 0.2, 0.5]]))
    sampler = torch.log(torch.tensor([[0.9, 0.5, 0.5, 0.3], [0.1, 0.1, 0.2, 0.5]]))
    mask = torch.tensor([[False, True, True, False], [False, True, True, True]])  # prompt and pad masked out
    out = StepMetrics(1).sampler_gap(sampler, trainer, mask).build()
    assert out["rollout/logprob_gap_mean"] == pytest.approx(math.log(2) / 5, abs=1e-6)  # one token doubled
    assert out["rollout/probs_diff_mean"] == pytest.approx(0.25 / 5) and out["rollout/probs_diff_max"] == 0.25
    assert "rollout/logprob_gap_mean" not in StepMetrics(1).sampler_gap(sampler, trainer, mask & False).build()


# ---------------------------------------------------------------- collapse monitor

REWARD_FALLS_AT = 130


def fig2_series(n: int = 170, seed: int = 0) -> list[dict]:
    """Shaped like the paper's Fig. 2: correct-response likelihood flat (steps 0-59) while reward rises, then
    slowly falling (60-119) while reward still rises and grad norm is stable, then falling sharply (120+)
    with an entropy surge and a grad-norm explosion (135+); reward turns down at step 130. Incorrect-
    response likelihood starts above correct's and falls below it around step 90 (Fig. 9a). Little noise."""
    rng = random.Random(seed)
    out = []
    for s in range(n):
        lik = -0.30 if s < 60 else -0.30 - 0.0015 * (s - 60) if s < 120 else -0.39 - 0.012 * (s - 120)
        inc = lik + 0.03 - (0.001 * (s - 60) if s >= 60 else 0.0)
        reward = 0.2 + 0.3 * s / REWARD_FALLS_AT if s < REWARD_FALLS_AT else 0.5 - 0.01 * (s - REWARD_FALLS_AT)
        grad = 0.3 if s < 135 else 0.3 * (1 + 0.5 * (s - 134))
        entropy = 0.5 + 0.0005 * s if s < 125 else 0.56 + 0.03 * (s - 125)
        out.append(
            {
                "step": s,
                "likelihood/correct_mean": lik + rng.gauss(0, 0.004),
                "likelihood/incorrect_mean": inc + rng.gauss(0, 0.004),
                "reward/mean": reward + rng.gauss(0, 0.015),
                "grad/norm": grad * (1 + rng.gauss(0, 0.05)),
                "policy/entropy": entropy + rng.gauss(0, 0.005),
                "likelihood/displacement_correct": 0.2 - 0.004 * s + rng.gauss(0, 0.02),
                "likelihood/displacement_incorrect": -0.3 - 0.004 * s + rng.gauss(0, 0.02),
                "llds/activation_rate": 0.0,
            }
        )
    return out


def healthy_series(n: int = 170, seed: int = 1) -> list[dict]:
    """Correct-response likelihood rises with the reward and both level off; grad norm and entropy steady."""
    rng = random.Random(seed)
    out = []
    for s in range(n):
        progress = 1 - math.exp(-s / 60)
        lik = -0.70 + 0.6 * progress
        out.append(
            {
                "step": s,
                "likelihood/correct_mean": lik + rng.gauss(0, 0.004),
                "likelihood/incorrect_mean": lik + 0.05 + rng.gauss(0, 0.004),
                "reward/mean": 0.2 + 0.3 * progress + rng.gauss(0, 0.015),
                "grad/norm": 0.3 * (1 + rng.gauss(0, 0.1)),
                "policy/entropy": 0.5 + rng.gauss(0, 0.005),
                "likelihood/displacement_correct_neg_share": 0.2,
            }
        )
    return out


def noisy_run(phases: bool, noise: float, seed: int, n: int = 260) -> list[dict]:
    """Shaped like this project's runs (16 x 5 rollouts): likelihood batch noise `noise` nats/token, NaN on
    ~4% of steps (no correct response), reward a mean of 80 draws. phases=False: flat and healthy.
    phases=True: the paper's three phases, II from step 80 (-0.004 nats/token/step), III from 170 (sharp fall,
    grad spikes, entropy surge), reward turning down at 180 (smoothed below half its best by ~200)."""
    rng = random.Random(seed)
    out = []
    for s in range(n):
        lik, reward, grad, entropy = -0.35, 0.3, 0.3, 0.5
        if phases:
            reward = 0.15 + 0.3 * min(s, 180) / 180 * (math.exp(-(s - 180) / 20) if s > 180 else 1.0)
            lik -= 0.004 * max(s - 80, 0) + 4e-4 * max(s - 170, 0) ** 2
            grad *= 1 + 0.3 * max(s - 180, 0)
            entropy += 0.01 * max(s - 170, 0)
        out.append(
            {
                "step": s,
                "likelihood/correct_mean": math.nan if rng.random() < 0.04 else lik + rng.gauss(0, noise),
                "reward/mean": sum(rng.random() < reward for _ in range(80)) / 80,
                "grad/norm": grad * math.exp(rng.gauss(0, 0.25)),
                "policy/entropy": entropy + rng.gauss(0, 0.02),
            }
        )
    return out


def test_healthy_series_stays_healthy(caplog: pytest.LogCaptureFixture) -> None:
    monitor = CollapseMonitor()
    with caplog.at_level(logging.WARNING):
        statuses = [monitor.update(record) for record in healthy_series()]
    warmup = MonitorConfig().min_points - 1
    assert all(s.phase == WARMUP for s in statuses[:warmup])
    assert {s.phase for s in statuses[warmup:]} == {HEALTHY}
    assert not any(s.warning or s.flags for s in statuses)
    assert not caplog.records and monitor.first_warning_step() is None


@pytest.mark.parametrize("noise", [0.01, 0.15, 0.2])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noisy_flat_series_gives_no_warning(noise: float, seed: int) -> None:
    """The old monitor called a flat likelihood with noise 0.01 "steady_decay" (an EMA slope against a fixed
    5e-4 tolerance); the project's batch noise is ~0.15 at fixed weights."""
    monitor = CollapseMonitor()
    statuses = [monitor.update(record, announce=False) for record in noisy_run(False, noise, seed)]
    assert [s.step for s in statuses if s.warning] == []
    assert not {DECAY, ACCELERATED} & {s.phase for s in statuses}
    noise_estimate = statuses[-1].likelihood_noise
    assert noise_estimate is not None and noise_estimate == pytest.approx(noise, rel=0.25)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noisy_three_phase_collapse_warns_after_decay_starts_and_before_reward_falls(seed: int) -> None:
    series = noisy_run(True, 0.1, seed)
    monitor = CollapseMonitor()
    statuses = [monitor.update(record, announce=False) for record in series]
    first = monitor.first_warning_step()
    assert first == next(s.step for s in statuses if s.warning)
    # reward falls: the trailing 10-step mean below half its running best
    smooth = [sum(r["reward/mean"] for r in series[i - 9 : i + 1]) / 10 for i in range(9, len(series))]
    falls = next(i + 9 for i, v in enumerate(smooth) if v < 0.5 * max(smooth[: i + 1]))
    assert first is not None and 80 <= first < falls, (first, falls)
    assert monitor.first_step(ACCELERATED) is not None and monitor.first_step(ACCELERATED) > first


def _steady(step: int, displacement: float, reward: float = 0.5, entropy: float = 0.5) -> dict:
    return {
        "step": step,
        "reward/mean": reward,
        "policy/entropy": entropy,
        "likelihood/displacement_correct": displacement,
    }


def test_displacement_drop_needs_two_far_drops_below_the_runs_own_baseline():
    rng = random.Random(0)
    baseline = [0.15 + rng.gauss(0, 0.05) for _ in range(20)]  # a healthy round raises correct responses
    for drops, expect in (({25: -0.6}, False), ({25: -0.6, 30: -0.5}, True), ({25: -0.6, 40: -0.5}, False)):
        monitor = CollapseMonitor()
        values = baseline + [0.15] * 30
        for step, value in drops.items():
            values[step - 1] = value
        statuses = [monitor.update(_steady(i + 1, v)) for i, v in enumerate(values)]
        flagged = [s.step for s in statuses if "displacement_drop" in s.flags]
        assert bool(flagged) is expect, (drops, flagged)
        if expect:  # raised at the second drop, held while both are within event_memory, and a warning
            assert flagged[0] == 30 and flagged[-1] == 34 and all(s.warning for s in statuses[29:34])
    # a negative Δ inside the run's own noise is not a drop: a run whose Δ is always around 0
    monitor = CollapseMonitor()
    noisy = [monitor.update(_steady(i + 1, rng.gauss(0, 0.3))) for i in range(60)]
    assert not any("displacement_drop" in s.flags for s in noisy)


def test_failing_searches_warn_whatever_the_phase():
    monitor = CollapseMonitor()
    shares = [0.0] * 5 + [0.1, 0.5, math.nan, 0.0]  # 10% is the limit itself; NaN: no searches that step
    statuses = [monitor.update({"step": i + 1, "env/failed_search_share": v}) for i, v in enumerate(shares)]
    assert [s.step for s in statuses if "searches_failing" in s.flags] == [7]
    assert statuses[6].warning and "50% of the step's searches" in statuses[6].reasons[-1]
    assert statuses[6].as_metrics()["monitor/searches_failing"] == 1 and not statuses[8].warning


def test_never_healthy_while_the_reward_is_below_half_its_best_or_the_entropy_near_uniform():
    uniform = math.log(4096)
    monitor = CollapseMonitor(MonitorConfig(entropy_uniform=uniform))
    rewards = [0.1 + 0.02 * i for i in range(20)] + [0.1] * 20  # best 5-step mean 0.44, then 0.1
    statuses = [monitor.update(_steady(i + 1, 0.1, r)) for i, r in enumerate(rewards)]
    assert all(s.phase != COLLAPSED for s in statuses[:20])
    assert all(s.phase == COLLAPSED and s.warning for s in statuses[24:])  # the 5-step mean is all 0.1 there
    monitor = CollapseMonitor(MonitorConfig(entropy_uniform=uniform))
    statuses = [monitor.update(_steady(i + 1, 0.1, 0.5, 0.3 if i < 30 else 0.6 * uniform)) for i in range(40)]
    assert {s.phase for s in statuses[30:]} == {COLLAPSED} and COLLAPSED not in {s.phase for s in statuses[:30]}
    assert "entropy" in statuses[-1].reasons[0]
    with pytest.raises(ValueError):
        MonitorConfig(entropy_uniform=0.0)


def test_fig2_series_walks_through_the_three_phases_and_warns_before_reward_falls(
    caplog: pytest.LogCaptureFixture,
) -> None:
    monitor = CollapseMonitor()
    with caplog.at_level(logging.WARNING, logger="trainer.diagnostics.collapse_monitor"):
        statuses = [monitor.update(record) for record in fig2_series()]
    phases = [s.phase for s in statuses]

    first = {phase: monitor.first_step(phase) for phase in (STAGNATION, DECAY, ACCELERATED)}
    assert None not in first.values(), phases
    assert first[STAGNATION] < first[DECAY] < first[ACCELERATED]
    assert 60 <= first[DECAY] < 100 and 120 <= first[ACCELERATED] < 150
    # Phase I is mostly stagnation; decay and acceleration never precede their onsets; it ends collapsed.
    assert phases[30:60].count(STAGNATION) >= 25
    assert ACCELERATED not in phases[:120] and DECAY not in phases[:60]
    # ... and once the reward is below half its best it is called collapsed, never anything milder
    assert set(phases[150:]) <= {ACCELERATED, COLLAPSED} and phases[-1] == COLLAPSED

    first_warning = next(s for s in statuses if s.warning)
    assert first_warning.step == monitor.first_warning_step() == first[DECAY]
    assert first_warning.new_warnings == [DECAY] and first_warning.step < REWARD_FALLS_AT  # "before rewards fall"
    assert "(rising)" in first_warning.reasons[0]  # the case reward curves cannot show
    accel = statuses[first[ACCELERATED]]
    recent_events = {flag for status in statuses[first[ACCELERATED] - 10 :] for flag in status.flags}
    assert recent_events & {"grad_spike", "entropy_surge"}
    assert accel.warning and ACCELERATED in accel.new_warnings
    # Fig. 9a: incorrect-response likelihood drops below correct's, mid-decay.
    crossing = next(s.step for s in statuses if "incorrect_below_correct" in s.flags)
    assert 80 <= crossing <= 110
    # Each warning is logged once, when first entered.
    warned = [r.getMessage() for r in caplog.records]
    assert sum(DECAY in msg for msg in warned) == 1 and sum(ACCELERATED in msg for msg in warned) == 1
    assert warned[0].startswith(f"step {first_warning.step}:")

    metrics = accel.as_metrics()
    assert metrics["monitor/phase"] == ACCELERATED and metrics["monitor/phase_id"] == 3
    assert metrics["monitor/warning"] == 1 and set(metrics) <= set(METRIC_KEYS)


def test_negative_displacement_majority_needs_a_significant_run() -> None:
    key = "likelihood/displacement_correct_neg_share"
    # One batch's share of a handful of correct responses says little: a single 0.8 among 0.3s is no majority.
    monitor = CollapseMonitor()
    single = [monitor.update({"step": s, key: 0.8 if s == 12 else 0.3}) for s in range(20)]
    assert not any("neg_displacement_majority" in s.flags or s.warning for s in single)
    # A sustained majority is: the mean over the short window clears 0.5 by more than its standard error allows.
    monitor = CollapseMonitor()
    sustained = [monitor.update({"step": s, key: 0.62 + 0.02 * (-1) ** s}) for s in range(10)]
    flagged = [s for s in sustained if "neg_displacement_majority" in s.flags]
    assert flagged and flagged[0].step == 7 and flagged[0].warning  # 8 points needed
    assert flagged[0].new_warnings == ["neg_displacement_majority"] and "62%" in " ".join(flagged[0].reasons)
    # ... and not when the shares straddle 0.5 too widely to tell
    monitor = CollapseMonitor()
    noisy = [monitor.update({"step": s, key: 0.62 + 0.4 * (-1) ** s}) for s in range(15)]
    assert not any("neg_displacement_majority" in s.flags for s in noisy)
    stricter = CollapseMonitor(MonitorConfig(neg_displacement_share=0.7))
    assert not any(stricter.update({"step": s, key: 0.62}).flags for s in range(15))


def test_reward_falling_is_a_warning_even_without_likelihood() -> None:
    monitor = CollapseMonitor()
    statuses = [monitor.update({"step": s, "reward/mean": 0.5 - 0.01 * max(s - 40, 0)}) for s in range(80)]
    # no likelihood: no phase, until the reward is below half its best (collapsed, from the reward alone)
    assert {s.phase for s in statuses[:60]} == {WARMUP} and {s.phase for s in statuses[70:]} == {COLLAPSED}
    first = monitor.first_warning_step()
    assert first is not None and 40 < first <= 55  # the short window (15 points), 3 steps running
    assert "reward_falling" in statuses[first].flags and statuses[first].new_warnings == ["reward_falling"]
    assert statuses[first].as_metrics()["monitor/reward_falling"] == 1


def test_nonfinite_gradient_counts_as_a_spike() -> None:
    monitor = CollapseMonitor()
    assert not monitor.update({"step": 0, "grad/norm": 0.3, "grad/nonfinite_steps": 0.0}).flags
    assert monitor.update({"step": 1, "grad/nonfinite_steps": 2.0}).flags == ["grad_spike"]


def test_grad_spike_needs_both_factor_and_robust_excess() -> None:
    rng = random.Random(0)
    # Heavy-tailed grad norms (log-sd 0.5): 3x the median is only ~2 log-sds, not a spike.
    monitor = CollapseMonitor()
    grads = [0.3 * math.exp(rng.gauss(0, 0.5)) for _ in range(60)]
    noisy = [monitor.update({"step": s, "grad/norm": g}) for s, g in enumerate(grads)]
    assert sum("grad_spike" in s.flags for s in noisy) <= 1
    monitor = CollapseMonitor()
    steady = [monitor.update({"step": s, "grad/norm": 0.3 * math.exp(rng.gauss(0, 0.05))}) for s in range(30)]
    assert not any(s.flags for s in steady)
    assert monitor.update({"step": 30, "grad/norm": 3.0}).flags == ["grad_spike"]


def test_replay_restores_state_without_announcing(caplog: pytest.LogCaptureFixture) -> None:
    series = fig2_series()
    monitor = CollapseMonitor()
    with caplog.at_level(logging.WARNING):
        monitor.replay(series[:100])
        status = monitor.update(series[100])
    assert status.phase == DECAY and status.new_warnings == [] and not caplog.records
    assert monitor.first_warning_step() is not None and monitor.first_warning_step() < 100


def test_monitor_config_is_validated() -> None:
    with pytest.raises(ValueError):
        MonitorConfig(window=4)
    with pytest.raises(ValueError):
        MonitorConfig(z=0.0)
    with pytest.raises(ValueError):
        MonitorConfig(exit_z=4.0)  # above z: a trend could hold where it could never enter
    assert MonitorConfig(window=10).min_trend_points == 10  # the trainer's old window still works


# ---------------------------------------------------------------- robust trend statistics


def test_noise_estimate_ignores_a_trend_and_a_few_wild_points() -> None:
    rng = random.Random(3)
    values = [-0.01 * s + rng.gauss(0, 0.15) for s in range(100)]
    values[10] += 5.0  # a batch with one odd correct response
    sd = diff_noise_sd(values)
    diffs = [b - a for a, b in zip(values[:-1], values[1:], strict=True)]
    plain = statistics.stdev(diffs) / math.sqrt(2)  # ~0.5: the one point would triple it
    assert sd is not None and 0.13 < sd < 0.21 and plain > 2.5 * sd
    assert diff_noise_sd([1.0, 2.0, 3.0]) is None


def test_trend_is_significant_only_beyond_the_noise() -> None:
    rng = random.Random(4)
    xs = list(range(50))
    flat = [rng.gauss(0, 0.15) for _ in xs]
    falling = [-0.01 * x + rng.gauss(0, 0.15) for x in xs]
    t_flat = trend(xs, flat, 0.15, z=3.0, dof=60)
    t_fall = trend(xs, falling, 0.15, z=3.0, dof=60)
    assert t_flat is not None and t_fall is not None
    assert not t_flat.falling(1e-3) and not t_flat.rising(1e-3)
    assert t_fall.falling(1e-3) and t_fall.slope == pytest.approx(-0.01, abs=0.004)
    assert not t_fall.falling(0.05)  # significant but below the practical tolerance
    # Theil-Sen shrugs off one wild point that would tilt a least-squares line.
    spiked = falling[:-1] + [falling[-1] - 3.0]
    assert theil_sen(xs, spiked) == pytest.approx(t_fall.slope, abs=0.002)


def test_critical_value_widens_for_few_degrees_of_freedom() -> None:
    assert critical_value(3.0, 1e6) == pytest.approx(3.0, abs=1e-3)
    assert critical_value(3.0, 20) == pytest.approx(3.42, abs=0.03)  # Student t(20) at the 3-sigma level
    assert critical_value(3.0, 5) > critical_value(3.0, 10) > critical_value(3.0, 40)


# ---------------------------------------------------------------- metrics log


def test_metrics_log_appends_resumes_without_duplicates_and_writes_tensorboard(tmp_path: Path) -> None:
    with MetricsLogger(tmp_path) as logger:
        assert logger.tensorboard_enabled
        for step in range(5):
            logger.log({"step": step, "reward/mean": step / 10, "grad/norm": NAN, "monitor/phase": "healthy"})
    # A crash mid-write leaves a partial line; the resumed logger drops it.
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 5, "reward/me')
    with MetricsLogger(tmp_path) as logger:
        written = [logger.log({"reward/mean": step / 10}, step=step) for step in range(3, 8)]
    assert written == [False, False, True, True, True]

    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(8))
    assert records[1]["reward/mean"] == 0.1 and records[1]["grad/norm"] is None  # NaN -> null
    assert records[0]["monitor/phase"] == "healthy"
    json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])  # strict JSON
    assert read_metrics(tmp_path) == records  # a run directory works too
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_metrics_log_without_tensorboard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now raises ImportError
    monkeypatch.setattr(metrics_log, "_warned_no_tensorboard", False)
    with caplog.at_level(logging.WARNING):
        for name in ("a", "b"):
            with MetricsLogger(tmp_path / name) as logger:
                assert not logger.tensorboard_enabled
                logger.log({"step": 0, "reward/mean": 1.0})
    assert sum("tensorboard is not installed" in r.getMessage() for r in caplog.records) == 1
    [record] = read_metrics(tmp_path / "a")
    assert record["step"] == 0 and record["reward/mean"] == 1.0
    assert not (tmp_path / "a" / "tensorboard").exists()


# ---------------------------------------------------------------- plots


def _with_phases(series: list[dict]) -> list[dict]:
    monitor = CollapseMonitor()
    return [{**record, **monitor.update(record, announce=False).as_metrics()} for record in series]


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 20_000


def test_plot_one_run_and_a_comparison(tmp_path: Path) -> None:
    grpo = _with_phases(fig2_series())
    out = plot_metrics(grpo, tmp_path / "one.png")
    assert out == tmp_path / "one.png"
    _assert_png(out)
    llds = _with_phases(healthy_series())
    _assert_png(plot_metrics(grpo, tmp_path / "cmp" / "two.png", compare={"GRPO+LLDS": llds}, label="GRPO"))


def test_plot_main_from_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, series in (("grpo", fig2_series()), ("llds", healthy_series())):
        with MetricsLogger(tmp_path / name, tensorboard=False) as logger:
            for record in _with_phases(series):
                logger.log(record)
    assert plot_main([str(tmp_path / "grpo" / "metrics.jsonl")]) == 0
    _assert_png(tmp_path / "grpo" / "diagnostics.png")
    assert capsys.readouterr().out.strip() == str(tmp_path / "grpo" / "diagnostics.png")
    out = tmp_path / "cmp.png"
    assert plot_main([str(tmp_path / "grpo"), "--out", str(out), "--compare", f"llds={tmp_path / 'llds'}"]) == 0
    _assert_png(out)
    with pytest.raises(SystemExit):
        plot_main([str(tmp_path / "grpo"), "--compare", "no-equals-sign"])


def test_docs_metrics_table_is_the_metric_keys():
    # docs/metrics.md is what the README links for the keys: it must not drift from METRIC_KEYS.
    from pathlib import Path

    docs = (Path(__file__).resolve().parent.parent / "docs" / "metrics.md").read_text()
    assert metric_table_markdown() in docs
