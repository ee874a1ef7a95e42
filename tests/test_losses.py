"""trainer.losses: GRPO + LLDS loss terms checked against hand-computed values on small tensors."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.losses import (
    DEFAULT_GATE_TOL,
    LossNormalizers,
    LossOptions,
    action_ids_from_mask,
    aggregate,
    aggregation_normalizer,
    answer_weight_schedule,
    clipped_policy_loss,
    entropy_bonus,
    entropy_from_logits,
    group_advantages,
    grpo_llds_loss,
    kl_loss,
    kl_penalty,
    llds_loss,
    llds_normalizer,
    mini_batch_normalizers,
)

LAM = 0.2


def leaf(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, requires_grad=True)


def displaced(d, old: float = -1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(logp leaf, old_logp) with old_logp - logp = d per token."""
    d = torch.tensor(d, dtype=torch.float32)
    old_logp = torch.full_like(d, old)
    return leaf((old_logp - d).tolist()), old_logp


# ---------------------------------------------------------------- advantages


def test_group_advantages_known_group_singleton_and_tied_group():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 5.0, 2.0, 2.0])
    groups = torch.tensor([7, 7, 7, 7, 3, 9, 9])
    adv = group_advantages(rewards, groups)
    # group 7: mean 0.5, unbiased var = 4 * 0.25 / 3 = 1/3, std = 0.577350 -> +-0.5 / 0.577351 = +-0.866024
    # group 3 has one response -> 0; group 9 is tied: 0 / (0 + eps) = 0.
    s = 0.5 / (math.sqrt(1 / 3) + 1e-6)
    assert torch.allclose(adv, torch.tensor([s, -s, -s, s, 0.0, 0.0, 0.0]), atol=1e-6)
    # the same as a per-group loop with torch.std (unbiased)
    for g in (7, 9):
        sel = groups == g
        r = rewards[sel]
        assert torch.allclose(adv[sel], (r - r.mean()) / (r.std() + 1e-6), atol=1e-6)


def test_group_advantages_dr_grpo_mean_only():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 5.0, 3.0, 1.0])
    groups = torch.tensor([0, 0, 0, 0, 1, 2, 2])
    # group 0: r - 0.5; group 1 (size 1): 0; group 2: mean 2 -> +1, -1
    expected = torch.tensor([0.5, -0.5, -0.5, 0.5, 0.0, 1.0, -1.0])
    assert torch.allclose(group_advantages(rewards, groups, scale_by_std=False), expected)


# ---------------------------------------------------------------- aggregation


def test_aggregation_modes_ignore_masked_positions_even_if_not_finite():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, float("inf"), float("nan")]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    assert aggregate(values, mask, "token-mean").item() == pytest.approx(10 / 4)  # (1+2+3+4) / 4
    assert aggregate(values, mask, "seq-mean-token-mean").item() == pytest.approx(3.0)  # (2 + 4) / 2
    # Dr. GRPO: row sums 6 and 4 over the constant max_len, mean over rows
    assert aggregate(values, mask, "seq-mean-token-sum-norm", max_len=4).item() == pytest.approx((6 / 4 + 4 / 4) / 2)
    assert aggregate(values, mask, "seq-mean-token-sum-norm").item() == pytest.approx((6 / 3 + 4 / 3) / 2)  # L = 3


# ---------------------------------------------------------------- clipped policy loss


def test_clipped_policy_loss_value_clipfrac_and_gradient():
    # ratios 1.5 and 0.5 in both rows; row 0 A = +1, row 1 A = -1; clip 0.2 -> [0.8, 1.2]
    old = torch.zeros(2, 2)
    logp = leaf([[math.log(1.5), math.log(0.5)]] * 2)
    adv = torch.tensor([1.0, -1.0])
    mask = torch.ones(2, 2)
    loss, stats = clipped_policy_loss(logp, old, adv, mask)
    # A=+1, r=1.5: max(-1.5, -1.2) = -1.2 (clipped)   A=+1, r=0.5: max(-0.5, -0.8) = -0.5
    # A=-1, r=1.5: max( 1.5,  1.2) =  1.5             A=-1, r=0.5: max( 0.5,  0.8) =  0.8 (clipped)
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 1.5 + 0.8) / 4)  # 0.15
    assert stats["policy/clipfrac"] == pytest.approx(0.5)
    assert stats["policy/ratio_mean"] == pytest.approx(1.0)
    assert stats["policy/approx_kl"] == pytest.approx(-(math.log(1.5) + math.log(0.5)) / 2)  # mean(old - new)
    loss.backward()
    # clipped tokens get no gradient; unclipped: d/dlogp (-A * r) / 4 = -A * r / 4
    expected = torch.tensor([[0.0, -0.5 / 4], [1.5 / 4, 0.0]])
    assert torch.allclose(logp.grad, expected)


def test_clip_higher_is_separate_from_clip_low():
    old = torch.zeros(1, 2)
    logp = leaf([[math.log(1.5), math.log(0.5)]])
    loss, stats = clipped_policy_loss(logp, old, torch.tensor([1.0]), torch.ones(1, 2), clip_high=0.6)
    # upper bound 1.6: r=1.5 is unclipped -> -1.5; r=0.5 -> max(-0.5, -0.8) = -0.5
    assert loss.item() == pytest.approx((-1.5 - 0.5) / 2)
    assert stats["policy/clipfrac"] == 0.0


def test_policy_loss_ignores_masked_tokens():
    old = torch.zeros(1, 3)
    logp = leaf([[math.log(0.5), 50.0, -math.inf]])  # the masked tokens would overflow if used
    loss, _ = clipped_policy_loss(logp, old, torch.tensor([2.0]), torch.tensor([[1, 0, 0]]))
    assert loss.item() == pytest.approx(-2.0 * 0.5)
    loss.backward()
    assert torch.isfinite(logp.grad).all()
    assert logp.grad[0, 1:].eq(0).all()


# ---------------------------------------------------------------- KL and entropy


def test_kl_estimators():
    logp = torch.tensor([[math.log(0.5), 0.0]])
    ref = torch.tensor([[math.log(0.25), -3.0]])
    ln2 = math.log(2)
    k1 = kl_penalty(logp, ref, "k1")
    k2 = kl_penalty(logp, ref, "k2")
    k3 = kl_penalty(logp, ref, "low_var_kl")
    assert k1[0, 0].item() == pytest.approx(ln2)  # ln 0.5 - ln 0.25
    assert k2[0, 0].item() == pytest.approx(0.5 * ln2**2)  # 0.240227
    assert k3[0, 0].item() == pytest.approx(0.5 + ln2 - 1)  # exp(-ln2) - (-ln2) - 1 = 0.193147
    assert k3[0, 1].item() == pytest.approx(math.exp(-3) + 3 - 1)  # 2.049787, inside the clamp
    assert kl_penalty(torch.zeros(1, 1), torch.tensor([[15.0]]), "k3").item() == 10.0  # exp(15) - 16 clamps to 10
    mask = torch.tensor([[1, 0]])
    assert kl_loss(logp, ref, mask, estimator="k3").item() == pytest.approx(0.5 + ln2 - 1)


def test_k3_of_huge_gap_is_clamped():
    # exp(ref - logp) would be exp(30): clamped to [-10, 10] like verl; the other side: 30 - 1 > 10
    assert kl_penalty(torch.tensor([[-30.0]]), torch.tensor([[0.0]]), "k3").item() == 10.0
    assert kl_penalty(torch.tensor([[0.0]]), torch.tensor([[-30.0]]), "k3").item() == 10.0


def test_entropy_from_logits_and_bonus():
    logits = torch.zeros(1, 2, 4)
    logits[0, 1, :2] = torch.tensor([0.0, math.log(3)])
    logits[0, 1, 2:] = -math.inf  # probabilities 0.25, 0.75, 0, 0
    h = entropy_from_logits(logits)
    assert h[0, 0].item() == pytest.approx(math.log(4))  # uniform over 4
    assert h[0, 1].item() == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), abs=1e-6)
    rand = torch.randn(3, 5, 11)
    ref = torch.distributions.Categorical(logits=rand).entropy()
    assert torch.allclose(entropy_from_logits(rand, chunk_size=4), ref, atol=1e-5)
    assert torch.allclose(entropy_from_logits(rand, chunk_size=None), ref, atol=1e-5)
    bonus, mean = entropy_bonus(torch.tensor([[1.0, 3.0]]), torch.tensor([[1, 1]]), coef=0.01)
    assert mean.item() == 2.0 and bonus.item() == pytest.approx(-0.02)


# ---------------------------------------------------------------- LLDS

# One response of 8 positions: action 1 at 0-2, an <information> block at 3-4, action 2 at 5-7.
TWO_ACTIONS = [[1, 1, 1, 0, 0, 1, 1, 1]]


def test_action_ids_from_mask_with_observation_gaps():
    mask = torch.tensor([[1, 1, 0, 0, 1, 0, 1, 1], [0, 0, 1, 1, 1, 0, 0, 0], [0] * 8, [1] * 8])
    expected = torch.tensor([[1, 1, 0, 0, 2, 0, 3, 3], [0, 0, 1, 1, 1, 0, 0, 0], [0] * 8, [1] * 8])
    assert torch.equal(action_ids_from_mask(mask), expected)
    assert torch.equal(action_ids_from_mask(mask.float()), expected)
    assert torch.equal(action_ids_from_mask(mask.bool()), expected)


def test_llds_zero_value_and_gradient_when_no_likelihood_fell():
    logp, old = displaced([[-0.1, 0.0, -0.3, 0.0, 0.0, -0.2, 0.0, -0.5]])  # d <= 0 everywhere
    for gate in ("action", "response", "token"):
        logp.grad = None
        loss, stats = llds_loss(logp, old, torch.tensor([1.0]), torch.tensor(TWO_ACTIONS), gate=gate)
        loss.backward()
        assert loss.item() == 0.0 and stats["llds/activation_rate"] == 0.0
        assert logp.grad.eq(0).all()


def test_llds_only_fallen_tokens_of_fired_actions_get_gradient():
    # action 1: d = 0.3, -0.1, 0.2 (sum 0.4 > 0, fires); action 2: d = 0.2, -0.5, 0.1 (sum -0.2, does not)
    # the observation tokens have a huge d that must never count
    logp, old = displaced([[0.3, -0.1, 0.2, 100.0, 100.0, 0.2, -0.5, 0.1]])
    loss, stats = llds_loss(logp, old, torch.tensor([1.0]), torch.tensor(TWO_ACTIONS))
    # term = (0.3 + 0.2) / 6 generated tokens = 0.083333; loss = 0.2 * term
    assert stats["llds/term"] == pytest.approx(0.5 / 6)
    assert loss.item() == pytest.approx(LAM * 0.5 / 6)
    assert stats["llds/activation_rate"] == pytest.approx(1 / 2)  # 1 of 2 actions
    assert stats["llds/gated_token_frac"] == pytest.approx(3 / 6)
    assert stats["llds/mean_penalty"] == pytest.approx((0.3 + 0.0 + 0.2) / 3)
    loss.backward()
    # d(lam * relu(old - logp) / 6)/dlogp = -lam / 6 on tokens 0 and 2 only
    expected = torch.zeros(1, 8)
    expected[0, [0, 2]] = -LAM / 6
    assert torch.allclose(logp.grad, expected)


# Three responses: row 0 as above (A > 0), row 1 negative advantage with large drops, row 2 A = 0.
#   row 0: gated penalties 0.3 + 0.2 = 0.5 over 6 generated tokens
#   row 1: 4 generated tokens, d = 1.0 each (would fire any gate) but A < 0
#   row 2: one action of 4 tokens, d = 0.4, 0.4, -0.2, 0 (sum 0.6 fires): penalties 0.8 over 4 tokens
THREE_D = [
    [0.3, -0.1, 0.2, 100.0, 100.0, 0.2, -0.5, 0.1],
    [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0],
    [0.4, 0.4, -0.2, 0.0, 0.0, 0.0, 0.0, 0.0],
]
THREE_MASK = [TWO_ACTIONS[0], [1, 1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0, 0]]
THREE_ADV = [1.0, -0.5, 0.0]


def test_llds_paper_versus_code_normalisation():
    logp, old = displaced(THREE_D)
    adv, mask = torch.tensor(THREE_ADV), torch.tensor(THREE_MASK)
    paper, stats = llds_loss(logp, old, adv, mask, normalization="paper")
    # paper: mean over the preserving set {row 0, row 2} of per-response sums / generated counts
    assert stats["llds/term"] == pytest.approx((0.5 / 6 + 0.8 / 4) / 2)  # 0.141667
    assert paper.item() == pytest.approx(LAM * (0.5 / 6 + 0.8 / 4) / 2)
    assert stats["llds/num_preserving"] == 2
    assert stats["llds/activation_rate"] == pytest.approx(2 / 3)  # actions: row 0 has 2, row 2 has 1; 2 fired
    assert stats["llds/gated_token_frac"] == pytest.approx(7 / 10)  # 3 + 4 of the 6 + 4 preserving tokens
    assert stats["llds/mean_penalty"] == pytest.approx(1.3 / 7)
    code, stats = llds_loss(logp, old, adv, mask, normalization="code")
    # code: all gated penalties over every generated token of the batch, row 1 included: 1.3 / 14
    assert stats["llds/term"] == pytest.approx(1.3 / 14)  # 0.092857
    assert code.item() == pytest.approx(LAM * 1.3 / 14)


def test_llds_negative_advantage_rows_untouched():
    logp, old = displaced(THREE_D)
    adv, mask = torch.tensor(THREE_ADV), torch.tensor(THREE_MASK)
    loss, _ = llds_loss(logp, old, adv, mask, normalization="paper")
    loss.backward()
    assert logp.grad[1].eq(0).all()  # no gradient into the negative-advantage response
    # its value does not matter under the paper normalisation: without row 1 the term is the same
    keep = [0, 2]
    alone, _ = llds_loss(logp.detach()[keep], old[keep], adv[keep], mask[keep], normalization="paper")
    assert alone.item() == pytest.approx(loss.item())
    # but under "code" it counts in the denominator: 1.3 / 14 with it, 1.3 / 10 without
    with_neg, _ = llds_loss(logp.detach(), old, adv, mask, normalization="code")
    without, _ = llds_loss(logp.detach()[keep], old[keep], adv[keep], mask[keep], normalization="code")
    assert with_neg.item() == pytest.approx(LAM * 1.3 / 14)
    assert without.item() == pytest.approx(LAM * 1.3 / 10)


def test_llds_empty_preserving_set_is_zero():
    logp, old = displaced([[1.0, 1.0]])
    loss, stats = llds_loss(logp, old, torch.tensor([-1.0]), torch.ones(1, 2))
    loss.backward()
    assert loss.item() == 0.0 and stats["llds/num_preserving"] == 0
    assert logp.grad.eq(0).all()


def test_llds_masked_tokens_never_count_even_with_huge_or_infinite_d():
    # generated tokens rose in total (sum d = -0.1); observation tokens d = 1e6 and a padding token at -inf
    logp, old = displaced([[0.2, -0.3, 1e6, 1e6, 0.1, -0.1, 0.0]])
    logp.data[0, 6] = -math.inf
    mask = torch.tensor([[1, 1, 0, 0, 1, 1, 0]])
    for gate in ("response", "action"):
        logp.grad = None
        loss, _ = llds_loss(logp, old, torch.tensor([1.0]), mask, gate=gate, normalization="code")
        loss.backward()
        assert torch.isfinite(logp.grad).all() and logp.grad[0, [2, 3, 6]].eq(0).all()
        if gate == "response":
            assert loss.item() == 0.0  # the response's generated tokens rose: no gate fires
        else:
            # action 1 (0.2, -0.3) sums to -0.1: off; action 2 (0.1, -0.1) sums to 0: off (strictly > 0)
            assert loss.item() == 0.0
    loss, _ = llds_loss(logp, old, torch.tensor([1.0]), mask, gate="token")
    assert loss.item() == pytest.approx(LAM * (0.2 + 0.1) / 4)


def test_action_gate_fires_where_response_gate_does_not():
    # action 1 fell (0.3 + 0.2 = 0.5), action 2 rose more (-0.6 - 0.4 = -1.0): response total -0.5
    mask = torch.tensor([[1, 1, 0, 1, 1]])
    logp, old = displaced([[0.3, 0.2, 9.0, -0.6, -0.4]])
    action, stats_a = llds_loss(logp, old, torch.tensor([1.0]), mask, gate="action")
    response, stats_r = llds_loss(logp, old, torch.tensor([1.0]), mask, gate="response")
    assert action.item() == pytest.approx(LAM * 0.5 / 4)
    assert stats_a["llds/activation_rate"] == pytest.approx(0.5)
    assert response.item() == 0.0 and stats_r["llds/activation_rate"] == 0.0


def test_response_gate_fires_where_action_gate_does_not():
    # action 1: 0.5 + 0.5 = 1.0 (fires); action 2: 0.3 - 0.5 = -0.2 (off); response total 0.8 > 0
    mask = torch.tensor([[1, 1, 0, 1, 1]])
    adv = torch.tensor([1.0])
    logp, old = displaced([[0.5, 0.5, 9.0, 0.3, -0.5]])
    action, _ = llds_loss(logp, old, adv, mask, gate="action")
    action.backward()
    assert action.item() == pytest.approx(LAM * 1.0 / 4)
    assert logp.grad[0, 3].item() == 0.0  # the fallen token of the unfired action
    logp.grad = None
    response, stats = llds_loss(logp, old, adv, mask, gate="response")
    response.backward()
    assert response.item() == pytest.approx(LAM * (0.5 + 0.5 + 0.3) / 4)
    assert stats["llds/activation_rate"] == 1.0
    assert logp.grad[0, 3].item() == pytest.approx(-LAM / 4)
    token, stats = llds_loss(logp, old, adv, mask, gate="token")  # no gate: every fallen token
    assert token.item() == pytest.approx(LAM * 1.3 / 4)
    assert stats["llds/activation_rate"] == pytest.approx(3 / 4)  # tokens with d > 0


def test_explicit_action_ids_override_the_mask_runs():
    # one contiguous run (sum -0.5: off), but the caller says it is two actions: the first (0.5) fires
    logp, old = displaced([[0.3, 0.2, -0.6, -0.4]])
    mask, adv = torch.ones(1, 4), torch.tensor([1.0])
    derived, _ = llds_loss(logp, old, adv, mask)
    explicit, _ = llds_loss(logp, old, adv, mask, action_ids=torch.tensor([[1, 1, 2, 2]]))
    assert derived.item() == 0.0
    assert explicit.item() == pytest.approx(LAM * 0.5 / 4)


def test_llds_ma_weights_answer_tokens():
    # one action, d = 0.2 on all 4 tokens, the last two are the <answer> span, beta = 0.25
    logp, old = displaced([[0.2, 0.2, 0.2, 0.2]])
    answer = torch.tensor([[False, False, True, True]])
    loss, _ = llds_loss(logp, old, torch.tensor([1.0]), torch.ones(1, 4), answer_mask=answer, answer_weight=0.25)
    # (0.2 + 0.2 + 0.25 * 0.2 + 0.25 * 0.2) / 4 = 0.125
    assert loss.item() == pytest.approx(LAM * 0.125)
    loss.backward()
    assert torch.allclose(logp.grad, torch.tensor([[-LAM / 4, -LAM / 4, -LAM * 0.25 / 4, -LAM * 0.25 / 4]]))
    logp.grad = None
    muted, _ = llds_loss(logp, old, torch.tensor([1.0]), torch.ones(1, 4), answer_mask=answer, answer_weight=0.0)
    muted.backward()
    assert logp.grad[0, 2:].eq(0).all() and muted.item() == pytest.approx(LAM * 0.4 / 4)


def test_answer_weight_schedule_forms():
    assert answer_weight_schedule(0.0) == 0.0
    assert answer_weight_schedule(1.0) == 0.5  # paper: V / 2
    assert answer_weight_schedule(3.0) == 1.0
    assert answer_weight_schedule(1.0, form="code") == 0.0  # code: max(V - 1, 0)
    assert answer_weight_schedule(1.5, form="code") == 0.5
    assert answer_weight_schedule(2.5, form="code") == 1.0


# ---------------------------------------------------------------- GRPO + LLDS


def batch(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.tensor([[1, 1, 1, 0, 0, 1, 1, 0], [1, 1, 1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 1, 1, 1]])
    old = -torch.rand(3, 8, generator=gen) * 3
    # likelihoods drift down on average (old - logp ~ 0.15 +- 0.3), so some LLDS gates fire
    logp = leaf((old - 0.15 + 0.3 * torch.randn(3, 8, generator=gen)).tolist())
    ref = old + 0.2 * torch.randn(3, 8, generator=gen)
    entropy = torch.rand(3, 8, generator=gen)
    answer = torch.zeros(3, 8, dtype=torch.bool)
    answer[:, 5:7] = True
    return logp, old, torch.tensor([0.8, -1.1, 0.0]), mask, ref, entropy, answer


def test_llds_false_is_exactly_plain_grpo():
    logp, old, adv, mask, ref, entropy, _ = batch()
    plain, stats = grpo_llds_loss(logp, old, adv, mask, ref_logp=ref, options=LossOptions(llds=False))
    pg, _ = clipped_policy_loss(logp, old, adv, mask)
    assert torch.equal(plain, pg + 0.001 * kl_loss(logp, ref, mask))
    assert not any(k.startswith("llds/") for k in stats)
    with_llds, stats = grpo_llds_loss(logp, old, adv, mask, ref_logp=ref)
    assert torch.equal(with_llds, plain + llds_loss(logp, old, adv, mask, gate_tol=DEFAULT_GATE_TOL)[0])
    assert stats["llds/loss"] > 0
    # without a reference the KL term is skipped; entropy only enters with a coefficient
    no_bonus = LossOptions(llds=False, entropy_coef=0.0)
    no_ref, _ = grpo_llds_loss(logp, old, adv, mask, entropy=entropy, options=no_bonus)
    assert torch.equal(no_ref, pg)
    options = LossOptions(llds=False, entropy_coef=0.1)
    ent, stats = grpo_llds_loss(logp, old, adv, mask, entropy=entropy, options=options)
    assert ent.item() == pytest.approx((pg - 0.1 * stats["entropy/mean"]).item())


def test_grpo_llds_backpropagates_finite_gradients():
    logp, old, adv, mask, ref, entropy, answer = batch(1)
    options = LossOptions(answer_weight=0.5, entropy_coef=0.001, aggregation="seq-mean-token-mean")
    total, stats = grpo_llds_loss(
        logp, old, adv, mask, ref_logp=ref, answer_mask=answer, entropy=entropy, options=options
    )
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(logp.grad).all()
    assert logp.grad[mask == 0].eq(0).all() and logp.grad[mask == 1].ne(0).any()
    assert all(math.isfinite(v) for v in stats.values())
    assert stats["llds/activation_rate"] > 0 and stats["llds/loss"] > 0  # the LLDS path was exercised
    assert stats["loss/total"] == pytest.approx(total.item())


def test_grpo_llds_gradcheck_float64():
    logp, old, adv, mask, ref, _, answer = batch(2)
    x = logp.detach().double().requires_grad_(True)
    for gate in ("action", "response", "token"):
        options = LossOptions(llds_gate=gate, answer_weight=0.5, clip_low=0.1, clip_high=0.3)

        def total(lp, options=options):
            return grpo_llds_loss(
                lp, old.double(), adv.double(), mask, ref_logp=ref.double(), answer_mask=answer, options=options
            )[0]

        assert torch.autograd.gradcheck(total, (x,), eps=1e-6, atol=1e-5)


def test_bf16_inputs_compute_in_float32():
    logp, old, adv, mask, ref, _, _ = batch(3)
    total, _ = grpo_llds_loss(
        logp.detach().bfloat16().requires_grad_(True), old.bfloat16(), adv, mask, ref_logp=ref.bfloat16()
    )
    assert total.dtype == torch.float32


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"llds_gate": "trajectory"}, "trajectory"),
        ({"llds_normalization": "mean"}, "mean"),
        ({"aggregation": "seq-sum"}, "seq-sum"),
        ({"kl_estimator": "k4"}, "k4"),
        ({"clip_low": 1.5}, "1.5"),
        ({"clip_high": -0.1}, "-0.1"),
        ({"llds_lambda": -0.2}, "-0.2"),
        ({"llds_gate_tol": -1e-3}, "-0.001"),
        ({"answer_weight": float("nan")}, "nan"),
        ({"kl_coef": -1.0}, "-1.0"),
        ({"max_len": 0}, "max_len=0"),
        ({"llds": "yes"}, "yes"),
    ],
)
def test_bad_options_raise(kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        LossOptions(**kwargs)


def test_bad_arguments_raise():
    logp, old = displaced([[0.1, 0.2]])
    mask = torch.ones(1, 2)
    with pytest.raises(ValueError, match="'sometimes'"):
        llds_loss(logp, old, torch.tensor([1.0]), mask, gate="sometimes")
    with pytest.raises(ValueError, match="advantages"):
        llds_loss(logp, old, torch.ones(1, 2), mask)
    with pytest.raises(ValueError, match="loss_mask"):
        clipped_policy_loss(logp, old, torch.tensor([1.0]), torch.ones(1, 3))
    with pytest.raises(ValueError, match="'k9'"):
        kl_penalty(logp, old, "k9")
    with pytest.raises(ValueError, match="'linear'"):
        answer_weight_schedule(1.0, form="linear")
    with pytest.raises(ValueError, match="group_ids"):
        group_advantages(torch.ones(3), torch.zeros(2, dtype=torch.long))


def test_code_normalisation_matches_a_transcription_of_the_authors_dp_actor():
    """The research notes' section 3 steps 2-7 (A-gate and R-gate), written out with plain tensor ops."""
    logp, old, adv, mask, _, _, answer = batch(4)
    beta = 0.5
    pos = (adv >= 0).float().unsqueeze(-1).expand_as(mask)
    diff = old - logp.detach()
    base_penalty = diff.clamp(min=0)
    m = mask * pos
    starts = m.bool() & ~torch.nn.functional.pad(m.bool()[:, :-1], (1, 0))
    chunk_id = torch.cumsum(starts.long(), -1) * m.long()
    chunk_sum = torch.zeros(3, 9).scatter_add(1, chunk_id, diff * m)
    a_gate = torch.gather(chunk_sum > 0, 1, chunk_id).float() * m
    r_gate = ((diff * pos * mask).sum(-1) > 0).float().unsqueeze(-1) * pos
    coeff = torch.where(answer, torch.tensor(min(beta * LAM, LAM)), torch.tensor(LAM))
    for gate, gate_mask in (("action", a_gate), ("response", r_gate)):
        expected = ((gate_mask * base_penalty * coeff) * mask).sum() / mask.sum()
        loss, _ = llds_loss(
            logp, old, adv, mask, gate=gate, normalization="code", answer_mask=answer, answer_weight=beta
        )
        assert expected.item() > 0
        assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


# ---------------------------------------------------------------- gate tolerance


@pytest.mark.parametrize("gate", ["action", "response", "token"])
def test_gate_tolerance_ignores_rounding_noise_but_not_a_real_fall(gate):
    # one action of 4 tokens: rounding-sized d (mean 2.5e-7 per token) and a real fall (mean 2e-4);
    # old_logp 0 so that d is exactly the float32 number written
    mask, adv = torch.ones(1, 4), torch.tensor([1.0])
    noise = [[4e-7, -2e-7, 6e-7, 2e-7]]
    for tol in (DEFAULT_GATE_TOL, 1e-6):
        logp, old = displaced(noise, old=0.0)
        loss, stats = llds_loss(logp, old, adv, mask, gate=gate, gate_tol=tol)
        loss.backward()
        assert stats["llds/num_fired"] == 0 and loss.item() == 0.0 and logp.grad.eq(0).all()
    logp, old = displaced(noise, old=0.0)
    at_zero, stats = llds_loss(logp, old, adv, mask, gate=gate, gate_tol=0.0)  # the paper's exact > 0
    at_zero.backward()
    assert stats["llds/num_fired"] > 0 and logp.grad.ne(0).any()  # noise alone gets the hinge's full gradient
    logp, old = displaced([[3e-4, -1e-4, 5e-4, 1e-4]], old=0.0)
    real, stats = llds_loss(logp, old, adv, mask, gate=gate, gate_tol=DEFAULT_GATE_TOL)
    exact, _ = llds_loss(logp, old, adv, mask, gate=gate, gate_tol=0.0)
    assert stats["llds/num_fired"] > 0
    assert real.item() == pytest.approx(exact.item(), rel=1e-6) and real.item() == pytest.approx(LAM * 9e-4 / 4)


def test_gate_tolerance_is_per_token_of_each_unit():
    # two actions with the same mean fall per token, 1 and 3 tokens long: both fire or neither
    mask = torch.tensor([[1, 0, 1, 1, 1]])
    for mean, fires in ((2e-5, True), (5e-6, False)):
        logp, old = displaced([[mean, 9.0, mean, mean, mean]], old=0.0)
        _, stats = llds_loss(logp, old, torch.tensor([1.0]), mask, gate_tol=1e-5)
        assert stats["llds/num_units"] == 2 and stats["llds/num_fired"] == (2 if fires else 0)


# ---------------------------------------------------------------- mini-batch normalisers


def micro_batch_sum(fn, rows: list[list[int]]) -> torch.Tensor:
    return sum(fn(r) for r in rows)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_aggregate_with_the_mini_batch_normalizer_adds_up_over_micro_batches(mode):
    # rows of 1 and 3 generated tokens, per-token loss 1 and 0, and an empty row
    values = torch.tensor([[1.0, 0, 0], [0, 0, 0], [1.0, 0, 0], [5.0, 5.0, 5.0]])
    mask = torch.tensor([[1, 0, 0], [1, 1, 1], [1, 0, 0], [0, 0, 0]])
    whole = aggregate(values, mask, mode)
    norm = aggregation_normalizer(mask, mode)
    expected = {"token-mean": 2 / 5, "seq-mean-token-mean": 2 / 3, "seq-mean-token-sum-norm": 2 / (4 * 3)}[mode]
    assert whole.item() == pytest.approx(expected)
    for size in (1, 2):
        parts = [list(range(i, min(i + size, 4))) for i in range(0, 4, size)]
        total = micro_batch_sum(lambda r: aggregate(values[r], mask[r], mode, normalizer=norm, max_len=3), parts)
        assert total.item() == pytest.approx(expected)
    if mode == "token-mean":  # the per-micro-batch mean that rows used to be weighted by: 0.5, not 0.4
        per_row = sum(aggregate(values[[i]], mask[[i]], mode) for i in range(3)) / 3
        assert per_row.item() == pytest.approx(2 / 3)


@pytest.mark.parametrize("normalization", ["code", "paper"])
def test_llds_with_the_mini_batch_normalizer_adds_up_over_micro_batches(normalization):
    logp, old = displaced(THREE_D)
    adv, mask = torch.tensor(THREE_ADV), torch.tensor(THREE_MASK)
    whole, _ = llds_loss(logp, old, adv, mask, normalization=normalization)
    norm = llds_normalizer(mask, adv, normalization)
    assert norm == {"code": 14.0, "paper": 2.0}[normalization]
    parts = [[0], [1], [2]]
    total = micro_batch_sum(
        lambda r: llds_loss(logp[r], old[r], adv[r], mask[r], normalization=normalization, normalizer=norm)[0], parts
    )
    assert total.item() == pytest.approx(whole.item(), rel=1e-6)
    total.backward()
    grad = logp.grad.clone()
    logp.grad = None
    whole.backward()
    assert torch.allclose(grad, logp.grad)


def test_grpo_llds_normalizers_are_the_lone_calls_denominators():
    logp, old, adv, mask, ref, entropy, answer = batch(5)
    options = LossOptions(entropy_coef=0.01, aggregation="seq-mean-token-mean")
    norms = mini_batch_normalizers(mask, adv, options)
    assert norms == LossNormalizers(aggregation=3.0, llds=float(mask.sum()))
    kwargs = {"ref_logp": ref, "answer_mask": answer, "entropy": entropy, "options": options}
    alone, _ = grpo_llds_loss(logp, old, adv, mask, **kwargs)
    given, _ = grpo_llds_loss(logp, old, adv, mask, normalizers=norms, **kwargs)
    assert torch.equal(alone, given)
    with pytest.raises(ValueError, match="normalizer"):
        LossNormalizers(aggregation=0.0, llds=1.0)


# ---------------------------------------------------------------- paper against code normalisation


def test_llds_paper_form_is_stronger_on_mixed_batches():
    """At the same lam, paper / code = (generated tokens of the batch) / (preserving responses x their mean
    length) on a mixed batch: with equal lengths, (batch responses) / (preserving responses).

    Measured here on 8 groups of G=5, every group mixed (c correct, advantage > 0; the rest < 0), every
    action of the preserving responses displaced alike: c = 1, 2, 3, 4 give 5.0, 2.5, 1.67, 1.25 with equal
    lengths, and 5.56, 2.68, 1.66, 1.25 with lengths drawn from 20-200 tokens (seed 0). So the paper's form is
    ~2.5x stronger when 2 of 5 responses per group are preserving, more when fewer are; groups whose
    rewards are all equal (advantage 0, all preserving) pull the ratio towards 1.
    """
    gen = torch.Generator().manual_seed(0)
    for equal in (True, False):
        lengths = torch.full((40,), 100) if equal else torch.randint(20, 201, (40,), generator=gen)
        width = int(lengths.max())
        mask = torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)
        d = torch.where(mask, 0.05 + 0.1 * torch.rand(40, width, generator=gen), torch.zeros(()))
        logp, old = displaced(d.tolist())
        ratios = []
        for correct in (1, 2, 3, 4):
            adv = torch.tensor(([1.0] * correct + [-1.0] * (5 - correct)) * 8)
            paper, _ = llds_loss(logp, old, adv, mask, normalization="paper")
            code, _ = llds_loss(logp, old, adv, mask, normalization="code")
            ratios.append(paper.item() / code.item())
        expected = [5 / c for c in (1, 2, 3, 4)]
        if equal:
            assert ratios == pytest.approx(expected, rel=1e-5)
        else:
            assert ratios == pytest.approx([5.562, 2.678, 1.658, 1.250], abs=1e-3)  # lengths move it a little
            assert ratios == sorted(ratios, reverse=True)
