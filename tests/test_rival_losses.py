"""LLDS's rivals as loss options: SAPO's conditional KL (trainer.losses.sapo) against hand computations, DPPO
(trainer.losses.dppo) against verl 0.9.1's own dppo_tv / dppo_kl on random tensors, the default loss unchanged,
the config keys, and a 2-step training run of each death-spiral arm through the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from trainer.cli import main as trainer_main
from trainer.config import ConfigError, load_config
from trainer.losses import (
    LossOptions,
    clipped_policy_loss,
    dppo_policy_loss,
    entropy_bonus,
    grpo_llds_loss,
    kl_loss,
    llds_loss,
    mini_batch_normalizers,
    sapo_active_mask,
    sapo_loss,
)


def _random_batch(seed: int, batch: int = 6, length: int = 9, spread: float = 0.6):
    """Sampled tokens' log-probs of a 12-token vocabulary under two nearby policies, ragged masks and
    per-response advantages of both signs (some 0)."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, length, 12, generator=gen)
    tokens = torch.randint(0, 12, (batch, length), generator=gen)
    new_logits = logits + spread * torch.randn(batch, length, 12, generator=gen)
    old = torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    new = torch.log_softmax(new_logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    lengths = torch.randint(1, length + 1, (batch,), generator=gen)
    mask = (torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)).float()
    advantages = torch.randn(batch, generator=gen)
    advantages[0] = 0.0
    return new.requires_grad_(), old, advantages, mask


# -- SAPO ----------------------------------------------------------------------------------------------------


def test_sapo_is_zero_where_the_advantage_is_not_positive_or_the_probability_rose():
    old = torch.full((3, 4), -1.0)
    # row 0: A > 0, tokens 0 and 2 fell; row 1: A < 0, all fell; row 2: A = 0, all fell.
    logp = torch.tensor([[-1.5, -0.5, -2.0, -1.0], [-3.0] * 4, [-3.0] * 4], requires_grad=True)
    advantages = torch.tensor([1.0, -1.0, 0.0])
    mask = torch.ones(3, 4)
    active = sapo_active_mask(logp, old, advantages, mask)
    assert active.tolist() == [[True, False, True, False], [False] * 4, [False] * 4]
    loss, stats = sapo_loss(logp, old, advantages, mask)
    loss.backward()
    assert torch.all(logp.grad[~active] == 0)
    assert torch.all(logp.grad[active] != 0)
    assert stats["sapo/activation_rate"] == pytest.approx(2 / 12)
    assert stats["sapo/num_active"] == 2
    # No active token at all: exactly 0, still differentiable.
    rose = torch.tensor([[-0.5, -0.9]], requires_grad=True)
    zero, zero_stats = sapo_loss(rose, torch.full((1, 2), -1.0), torch.tensor([2.0]), torch.ones(1, 2))
    zero.backward()
    assert zero.item() == 0.0 and torch.all(rose.grad == 0)
    assert zero_stats["sapo/activation_rate"] == 0.0 and zero_stats["sapo/kl_mean"] == 0.0


def test_sapo_ignores_masked_tokens_even_if_they_fell_far():
    logp = torch.tensor([[-1.2, -float("inf")]], requires_grad=True)
    old = torch.tensor([[-1.0, -1.0]])
    loss, stats = sapo_loss(logp, old, torch.tensor([1.0]), torch.tensor([[1.0, 0.0]]))
    loss.backward()
    assert math.isfinite(loss.item()) and torch.isfinite(logp.grad).all()
    assert logp.grad[0, 1] == 0 and stats["sapo/activation_rate"] == 1.0


@pytest.mark.parametrize("estimator", ["k3", "low_var_kl", "k2", "mse"])
def test_sapo_gradient_pulls_fallen_log_probs_back_up(estimator):
    logp, old, advantages, mask = _random_batch(3)
    active = sapo_active_mask(logp, old, advantages, mask)
    assert active.any()
    loss, _ = sapo_loss(logp, old, advantages, mask, coef=1.0, estimator=estimator)
    loss.backward()
    # d loss / d log_prob < 0 where active: a descent step raises those log-probs toward the old ones.
    assert torch.all(logp.grad[active] < 0)
    step = logp.detach() - 0.5 * logp.grad / logp.grad.abs().max()
    gap_before = (old - logp.detach())[active]
    gap_after = (old - step)[active]
    assert torch.all(gap_after < gap_before)


def test_sapo_equals_a_hand_computation():
    # r = old - logp per token; active: A > 0 rows, r > 0 tokens, in the mask.
    old = torch.tensor([[-1.0, -1.0, -2.0], [-0.5, -0.5, -0.5]], dtype=torch.float64)
    logp = torch.tensor([[-1.3, -0.8, -2.5], [-0.9, -0.9, -0.9]], dtype=torch.float64, requires_grad=True)
    advantages = torch.tensor([0.7, -0.7], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    coef = 0.5
    # Only row 0 token 0 is active (token 1 rose, token 2 is masked; row 1 has A < 0): r = 0.3.
    r = 0.3
    k3 = math.exp(r) - 1 - r
    loss, stats = sapo_loss(logp, old, advantages, mask, coef=coef, estimator="k3")
    assert loss.item() == pytest.approx(coef * k3 / 5, rel=1e-12)  # token-mean over the 5 generated tokens
    assert stats["sapo/kl_mean"] == pytest.approx(k3, rel=1e-12)
    assert stats["sapo/activation_rate"] == pytest.approx(1 / 5)
    loss.backward()
    expected = torch.zeros(2, 3, dtype=torch.float64)
    expected[0, 0] = coef * (1 - math.exp(r)) / 5  # d k3 / d logp = 1 - exp(old - logp)
    torch.testing.assert_close(logp.grad, expected, rtol=1e-12, atol=0)
    k2, _ = sapo_loss(logp, old, advantages, mask, coef=coef, estimator="k2")
    assert k2.item() == pytest.approx(coef * 0.5 * r**2 / 5, rel=1e-12)
    # seq-mean-token-mean: row 0's mean over its 2 tokens, over the 2 rows.
    seq, _ = sapo_loss(logp, old, advantages, mask, coef=coef, loss_agg_mode="seq-mean-token-mean")
    assert seq.item() == pytest.approx(coef * (k3 / 2) / 2, rel=1e-12)


def test_sapo_refuses_k1_and_bad_coefficients():
    logp, old, advantages, mask = _random_batch(0)
    with pytest.raises(ValueError, match="push the probability further down"):
        sapo_loss(logp, old, advantages, mask, estimator="k1")
    with pytest.raises(ValueError, match="push the probability further down"):
        LossOptions(sapo=True, sapo_estimator="kl")
    with pytest.raises(ValueError, match="sapo_estimator"):
        sapo_loss(logp, old, advantages, mask, estimator="k4")
    with pytest.raises(ValueError, match="sapo_coef"):
        sapo_loss(logp, old, advantages, mask, coef=-1.0)
    with pytest.raises(ValueError, match=r"expected \(6,\)"):
        sapo_loss(logp, old, advantages[:2], mask)


def test_sapo_in_the_combined_loss_is_added_and_reported_as_a_regulariser():
    logp, old, advantages, mask = _random_batch(5)
    plain_options = LossOptions(llds=False, kl_coef=0.0, entropy_coef=0.0)
    plain, plain_stats = grpo_llds_loss(logp, old, advantages, mask, options=plain_options)
    terms: dict[str, torch.Tensor] = {}
    options = LossOptions(llds=False, kl_coef=0.0, entropy_coef=0.0, sapo=True, sapo_coef=2.0)
    total, stats = grpo_llds_loss(logp, old, advantages, mask, options=options, terms=terms)
    alone, _ = sapo_loss(logp, old, advantages, mask, coef=2.0)
    assert total.item() == pytest.approx(plain.item() + alone.item(), rel=1e-6)
    assert terms["regularizer"].item() == pytest.approx(alone.item(), rel=1e-6)
    assert stats["sapo/loss"] == pytest.approx(alone.item(), rel=1e-6) and "sapo/loss" not in plain_stats
    # With LLDS too, the regulariser is the sum of both terms.
    both: dict[str, torch.Tensor] = {}
    grpo_llds_loss(logp, old, advantages, mask, options=LossOptions(sapo=True), terms=both)
    llds, _ = llds_loss(logp, old, advantages, mask, lam=0.2, gate_tol=LossOptions().llds_gate_tol)
    sapo_part, _ = sapo_loss(logp, old, advantages, mask)
    assert both["regularizer"].item() == pytest.approx((llds + sapo_part).item(), rel=1e-6)


@pytest.mark.parametrize("policy_loss", ["grpo", "dppo_tv", "dppo_kl"])
@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_rivals_add_up_over_micro_batches_with_the_mini_batch_normalizers(policy_loss, aggregation):
    logp, old, advantages, mask = _random_batch(11, batch=8)
    options = LossOptions(policy_loss=policy_loss, sapo=True, aggregation=aggregation, kl_coef=0.0)
    whole, whole_stats = grpo_llds_loss(logp, old, advantages, mask, options=options)
    normalizers = mini_batch_normalizers(mask, advantages, options)
    parts = [
        grpo_llds_loss(logp[rows], old[rows], advantages[rows], mask[rows], options=options, normalizers=normalizers)
        for rows in (slice(0, 3), slice(3, 8))
    ]
    assert sum(p[0] for p in parts).item() == pytest.approx(whole.item(), rel=1e-5, abs=1e-7)
    assert sum(p[1]["sapo/loss"] for p in parts) == pytest.approx(whole_stats["sapo/loss"], rel=1e-5, abs=1e-7)


# -- DPPO against verl -----------------------------------------------------------------------------------------


class _VerlActorConfig(dict):
    """What verl's DPPO functions read from their ActorConfig: clip_ratio(_low/_high), get('clip_ratio_c'),
    global_batch_info (empty: a lone call normalises over its own mask)."""

    def __init__(self, delta_low: float, delta_high: float, clip_ratio_c: float):
        super().__init__(clip_ratio_c=clip_ratio_c)
        self.clip_ratio = delta_high
        self.clip_ratio_low = delta_low
        self.clip_ratio_high = delta_high
        self.global_batch_info: dict = {}


def _verl_loss(name: str):
    core_algos = pytest.importorskip(
        "verl.trainer.ppo.core_algos",
        reason="verl is not installed (make install: verl==0.9.1 --no-deps + the verl extra)",
    )
    if name not in core_algos.POLICY_LOSS_REGISTRY:
        pytest.skip(f"the installed verl has no {name!r} policy loss (it came with verl 0.9)")
    return core_algos.get_policy_loss_fn(name)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("variant", ["tv", "kl"])
@pytest.mark.parametrize(
    ("delta_low", "delta_high", "clip_ratio_c", "mode"),
    [(0.2, 0.2, 20.0, "token-mean"), (0.05, 0.1, 1.5, "seq-mean-token-mean"), (0.1, 0.3, 3.0, "token-mean")],
)
def test_dppo_equals_verls_on_random_tensors(seed, variant, delta_low, delta_high, clip_ratio_c, mode):
    verl_fn = _verl_loss(f"dppo_{variant}")
    logp, old, advantages, mask = _random_batch(seed, batch=8, length=12, spread=1.2)
    ours, stats = dppo_policy_loss(
        logp,
        old,
        advantages,
        mask,
        divergence=variant,
        delta_low=delta_low,
        delta_high=delta_high,
        clip_ratio_c=clip_ratio_c,
        loss_agg_mode=mode,
    )
    (ours_grad,) = torch.autograd.grad(ours, logp)
    theirs_logp = logp.detach().clone().requires_grad_()
    per_token_adv = advantages.unsqueeze(-1).expand_as(mask)  # verl's advantages are (B, T)
    theirs, metrics = verl_fn(
        old_log_prob=old,
        log_prob=theirs_logp,
        advantages=per_token_adv,
        response_mask=mask,
        loss_agg_mode=mode,
        config=_VerlActorConfig(delta_low, delta_high, clip_ratio_c),
    )
    theirs.backward()
    torch.testing.assert_close(ours.detach(), theirs.detach(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ours_grad, theirs_logp.grad, rtol=1e-6, atol=1e-7)
    assert stats["dppo/masked_frac"] == pytest.approx(metrics["actor/pg_clipfrac"], abs=1e-7)
    assert stats["dppo/truncated_frac"] == pytest.approx(metrics["actor/pg_clipfrac_lower"], abs=1e-7)
    assert stats["policy/approx_kl"] == pytest.approx(metrics["actor/ppo_kl"], rel=1e-5, abs=1e-7)


def test_dppo_random_cases_exercise_both_the_mask_and_the_truncation():
    # The comparison above means something only if some tokens are masked and some truncated.
    logp, old, advantages, mask = _random_batch(0, batch=8, length=12, spread=1.2)
    for variant in ("tv", "kl"):
        _, stats = dppo_policy_loss(logp, old, advantages, mask, divergence=variant, delta_low=0.05, delta_high=0.1)
        assert 0 < stats["dppo/masked_frac"] < 1, variant
        _, stats = dppo_policy_loss(logp, old, advantages, mask, divergence=variant, clip_ratio_c=1.5)
        assert stats["dppo/truncated_frac"] > 0, variant


def test_dppo_masks_only_moves_in_the_advantages_direction():
    old = torch.log(torch.tensor([[0.5, 0.5]]))
    logp = torch.log(torch.tensor([[0.9, 0.1]])).requires_grad_()  # +0.4 and -0.4 in probability
    for adv, kept in ((1.0, [0.0, 1.0]), (-1.0, [1.0, 0.0])):  # A > 0: the rise is masked; A < 0: the fall
        loss, stats = dppo_policy_loss(logp, old, torch.tensor([adv]), torch.ones(1, 2), divergence="tv")
        (grad,) = torch.autograd.grad(loss, logp)
        assert (grad != 0).float().tolist() == [kept]
        assert stats["dppo/masked_frac"] == 0.5 and stats["policy/clipfrac"] == 0.5


def test_dppo_refuses_bad_thresholds():
    logp, old, advantages, mask = _random_batch(0)
    with pytest.raises(ValueError, match="probability difference"):
        dppo_policy_loss(logp, old, advantages, mask, divergence="tv", delta_high=1.0)
    with pytest.raises(ValueError, match="dppo_delta_low"):
        dppo_policy_loss(logp, old, advantages, mask, divergence="kl", delta_low=0.0)
    with pytest.raises(ValueError, match="clip_ratio_c"):
        dppo_policy_loss(logp, old, advantages, mask, clip_ratio_c=0.5)
    with pytest.raises(ValueError, match="divergence"):
        dppo_policy_loss(logp, old, advantages, mask, divergence="js")
    with pytest.raises(ValueError, match="policy_loss"):
        LossOptions(policy_loss="ppo")


# -- the default loss is unchanged -----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 7])
def test_default_options_give_the_grpo_llds_loss_bit_for_bit(seed):
    """With the rivals off (the defaults) the total and its gradient are the sum of the same terms, in the same
    order, as the loss before the rivals existed: clipped policy + kl_coef * KL - entropy bonus + LLDS."""
    logp, old, advantages, mask = _random_batch(seed)
    ref = old + 0.1
    entropy = torch.rand(mask.shape, generator=torch.Generator().manual_seed(seed), requires_grad=True)
    options = LossOptions()
    total, stats = grpo_llds_loss(logp, old, advantages, mask, ref_logp=ref, entropy=entropy, options=options)
    grads = torch.autograd.grad(total, (logp, entropy))

    expected, _ = clipped_policy_loss(logp, old, advantages, mask, clip_low=0.2, clip_high=0.2)
    expected = expected + options.kl_coef * kl_loss(logp, ref, mask, estimator=options.kl_estimator)
    bonus, _ = entropy_bonus(entropy, mask, coef=options.entropy_coef)
    expected = expected + bonus
    llds, _ = llds_loss(logp, old, advantages, mask, lam=0.2, gate_tol=options.llds_gate_tol)
    expected = expected + llds
    expected_grads = torch.autograd.grad(expected, (logp, entropy))
    assert torch.equal(total, expected)
    assert all(torch.equal(a, b) for a, b in zip(grads, expected_grads, strict=True))
    assert not any(key.startswith(("sapo/", "dppo/")) for key in stats)


# -- config -------------------------------------------------------------------------------------------------


def test_config_defaults_and_clear_errors():
    loss = load_config(None).loss
    assert (loss.policy_loss, loss.sapo, loss.sapo_coef, loss.sapo_estimator) == ("grpo", False, 1.0, "k3")
    assert (loss.dppo_delta_low, loss.dppo_delta_high, loss.dppo_clip_ratio_c) == (0.2, 0.2, 20.0)
    cfg = load_config(None, ["loss.policy_loss=dppo_kl", "loss.dppo_delta_high=2.0", "loss.sapo=true"])
    assert cfg.loss.policy_loss == "dppo_kl" and cfg.loss.sapo
    bad = {
        "loss.policy_loss=ppo": "loss.policy_loss",
        "loss.sapo_estimator=k1": "push the probability further down",
        "loss.sapo_coef=-0.1": "loss.sapo_coef",
        "loss.dppo_delta_low=0": "loss.dppo_delta_low",
        "loss.dppo_clip_ratio_c=0.5": "loss.dppo_clip_ratio_c",
    }
    for override, message in bad.items():
        with pytest.raises(ConfigError, match=message):
            load_config(None, [override])
    with pytest.raises(ConfigError, match="probability difference"):  # a TV threshold of 1 masks nothing
        load_config(None, ["loss.policy_loss=dppo_tv", "loss.dppo_delta_high=1.0"])


def test_trainer_passes_the_rival_keys_to_the_loss():
    from trainer.grpo_trainer import GRPOTrainer, method_name

    cfg = load_config(None, ["loss.policy_loss=dppo_tv", "loss.dppo_delta_low=0.1", "loss.sapo=true"])
    cfg = cfg.model_copy(update={"loss": cfg.loss.model_copy(update={"sapo_coef": 0.3, "sapo_estimator": "k2"})})
    trainer = GRPOTrainer.__new__(GRPOTrainer)  # _loss_options reads only the config and the reference
    trainer.config, trainer.reference = cfg, None
    options = trainer._loss_options(mean_searches=1.0)
    assert (options.policy_loss, options.dppo_delta_low, options.dppo_delta_high) == ("dppo_tv", 0.1, 0.2)
    assert (options.sapo, options.sapo_coef, options.sapo_estimator) == (True, 0.3, "k2")
    assert method_name(cfg) == "DPPO-TV+LLDS+SAPO"
    assert method_name(load_config(None, ["llds.enabled=false"])) == "GRPO"


# -- a real run of each arm ---------------------------------------------------------------------------------


def test_sapo_and_dppo_arms_train_two_steps_through_the_cli(bm25_server, tmp_path):
    from trainer.death_spiral.runner import ARMS

    assert ARMS["sapo"] == ["llds.enabled=false", "loss.sapo=true"]
    assert ARMS["dppo"] == ["llds.enabled=false", "loss.policy_loss=dppo_tv"]
    out = tmp_path / "rivals"
    # As tests/test_death_spiral.py's quick run, cut to the bone: warm-start seed 1 (cached there too).
    smaller = ["model.embedded_sft_examples=16", "model.embedded_sft_steps=4"]
    smaller += ["model.embedded_sft_first_action_steps=4", "model.embedded_seed=1"]
    smaller += ["run.steps=2", "run.eval_questions=2", "rollout.questions_per_step=2", "rollout.group_size=2"]
    smaller += ["optim.ppo_mini_batch_size=1"]  # two optimizer steps per round: the second sees a moved policy
    sets = [x for item in smaller for x in ("--set", item)]
    args = ["death-spiral", "--out", str(out), "--quick", "--arms", "sapo,dppo", "--retriever-url", bm25_server.url]
    assert trainer_main([*args, *sets]) == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = {(r["arm"], r["finished"], r["steps_logged"]) for r in summary["runs"]}
    assert rows == {("sapo", True, 2), ("dppo", True, 2)}

    def metrics(arm: str) -> list[dict]:
        lines = (out / arm / "seed-1" / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    for record in metrics("sapo"):
        assert 0.0 <= record["sapo/activation_rate"] <= 1.0 and record["sapo/kl_mean"] >= 0.0
        assert not any(key.startswith(("llds/activation", "dppo/")) for key in record)
    for record in metrics("dppo"):
        assert 0.0 <= record["dppo/masked_frac"] <= 1.0 and 0.0 <= record["dppo/truncated_frac"] <= 1.0
        assert record["policy/clipfrac"] == pytest.approx(record["dppo/masked_frac"])
        assert not any(key.startswith("sapo/") for key in record)
