"""DPPO, the divergence-masked trust region (arXiv 2602.04879, "Rethinking the Trust Region in LLM
Reinforcement Learning"), in its Binary-TV and Binary-KL forms, as verl 0.9.1 ships them
(``compute_policy_loss_dppo_tv`` / ``compute_policy_loss_dppo_kl``, policy-loss registry names
``dppo_tv`` / ``dppo_kl`` in verl/trainer/ppo/core_algos.py): tests/test_rival_losses.py checks this
module against verl's functions on random tensors.

PPO clips on the sampled token's ratio; DPPO masks a token's gradient when the policy's divergence from
the rollout policy, estimated from the sampled token's probabilities ``p = exp(log_prob)`` and
``p_old = exp(old_log_prob)`` as a two-outcome (the token / everything else) distribution, exceeds a
threshold in the direction the advantage pushes:

- Binary-TV: ``D = p - p_old``; for ``A > 0`` the token is kept while ``D <= delta_high``, for
  ``A <= 0`` while ``D >= -delta_low``.
- Binary-KL: ``D = p_old * (old_log_prob - log_prob) + (1 - p_old) * log((1 - p_old + 1e-8) / (1 - p + 1e-8))``;
  for ``A > 0`` kept while ``D <= delta_high`` or ``p <= p_old``, for ``A <= 0`` while ``D <= delta_low``
  or ``p >= p_old`` (a move against the advantage's push is never masked).

Per token, ``loss_t = -A * sg[min(ratio, clip_ratio_c)] * log_prob * valid_t`` with
``ratio = exp(clamp(log_prob - old_log_prob, -20, 20))`` and ``sg`` the stop-gradient: its gradient is
the policy gradient ``-A * ratio * grad log_prob``, truncated at ``clip_ratio_c`` (truncated importance
sampling in place of dual-clip PPO, the paper's Sec. 5.4) and zero where masked. Its value is not the
PPO surrogate's: only its gradient is meaningful.
"""

from __future__ import annotations

import torch

from trainer.losses._checks import check_advantages, check_choice, check_same_shape
from trainer.losses._dtypes import upcast
from trainer.losses.aggregation import aggregate, masked_mean
from trainer.losses.policy_loss import LOG_RATIO_CLAMP

DPPO_DIVERGENCES = ("tv", "kl")
#: verl's defaults: the thresholds come from actor.clip_ratio (0.2), the truncation from the
#: ``config.get("clip_ratio_c", 20.0)`` fallback of its DPPO functions ("a large threshold is recommended").
DEFAULT_DPPO_DELTA = 0.2
DEFAULT_DPPO_CLIP_RATIO_C = 20.0


def check_dppo_options(divergence: str, delta_low: float, delta_high: float, clip_ratio_c: float) -> None:
    """Raise ValueError for an unknown divergence, a threshold that is not a finite number > 0 (a TV one
    also < 1: a probability difference of 1 or more masks nothing), or a truncation below 1."""
    check_choice("dppo divergence", divergence, DPPO_DIVERGENCES)
    for name, value in (("dppo_delta_low", delta_low), ("dppo_delta_high", delta_high)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or value == float("inf"):
            raise ValueError(f"{name}={value!r} must be a finite number > 0")
        if divergence == "tv" and value >= 1:
            raise ValueError(f"{name}={value!r}: a TV threshold is a probability difference, it must be < 1")
    finite = isinstance(clip_ratio_c, int | float) and not isinstance(clip_ratio_c, bool)
    if not finite or not 1 <= clip_ratio_c < float("inf"):
        raise ValueError(f"dppo_clip_ratio_c={clip_ratio_c!r} must be a finite number >= 1 (the ratio's truncation)")


def dppo_valid_mask(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    *,
    divergence: str = "tv",
    delta_low: float = DEFAULT_DPPO_DELTA,
    delta_high: float = DEFAULT_DPPO_DELTA,
) -> torch.Tensor:
    """Boolean (B, T): tokens inside DPPO's trust region (their gradient is kept), per the module docstring.

    ``log_prob``, ``old_log_prob`` (B, T); ``advantages`` (B,) per response or (B, T) per token, as verl's.
    """
    prob = torch.exp(log_prob)
    old_prob = torch.exp(old_log_prob)
    adv = advantages if advantages.dim() == 2 else advantages.unsqueeze(-1)
    if divergence == "tv":
        keep_pos = (prob - old_prob) <= delta_high
        keep_neg = (prob - old_prob) >= -delta_low
    else:
        binary_kl = old_prob * (old_log_prob - log_prob) + (1 - old_prob) * torch.log(
            (1.0 - old_prob + 1e-8) / (1.0 - prob + 1e-8)
        )
        keep_pos = (binary_kl <= delta_high) | (prob <= old_prob)
        keep_neg = (binary_kl <= delta_low) | (prob >= old_prob)
    return torch.where(adv > 0, keep_pos, keep_neg).detach()


def dppo_policy_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    divergence: str = "tv",
    delta_low: float = DEFAULT_DPPO_DELTA,
    delta_high: float = DEFAULT_DPPO_DELTA,
    clip_ratio_c: float = DEFAULT_DPPO_CLIP_RATIO_C,
    loss_agg_mode: str = "token-mean",
    max_len: int | None = None,
    normalizer: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """DPPO's policy loss (``divergence`` "tv": verl's ``dppo_tv``, "kl": ``dppo_kl``), aggregated over
    ``response_mask`` with ``loss_agg_mode`` (``normalizer`` replaces the denominator, see `aggregate`).

    ``log_prob`` (B, T) carries the gradient, ``old_log_prob`` (B, T) the rollout policy's; ``advantages``
    (B,), one per response; ``response_mask`` (B, T). ``delta_low`` / ``delta_high`` are verl's
    ``clip_ratio_low`` / ``clip_ratio_high`` read as divergence thresholds; ``clip_ratio_c`` truncates the
    (detached) ratio. Stats: ``dppo/masked_frac`` (share of generated tokens outside the trust region,
    verl's ``actor/pg_clipfrac``), ``dppo/truncated_frac`` (share kept but with ratio > clip_ratio_c,
    verl's ``actor/pg_clipfrac_lower``), and the policy stats of `clipped_policy_loss`:
    ``policy/clipfrac`` (= dppo/masked_frac), ``policy/approx_kl``, ``policy/approx_kl_k3``,
    ``policy/ratio_mean``. Raises ValueError for bad options (`check_dppo_options`) or shapes.
    """
    check_same_shape(log_prob, old_log_prob=old_log_prob, response_mask=response_mask)
    check_advantages(advantages, log_prob.shape[0])
    check_dppo_options(divergence, delta_low, delta_high, clip_ratio_c)
    log_prob = upcast(log_prob)
    old_log_prob = upcast(old_log_prob.detach())
    adv = upcast(advantages.detach()).unsqueeze(-1)
    log_ratio = (log_prob - old_log_prob).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    truncated = ratio.clamp(max=clip_ratio_c).detach()
    valid = dppo_valid_mask(
        log_prob, old_log_prob, adv, divergence=divergence, delta_low=delta_low, delta_high=delta_high
    ).to(log_prob.dtype)
    per_token = -adv * truncated * log_prob * valid
    loss = aggregate(per_token, response_mask, loss_agg_mode, max_len=max_len, normalizer=normalizer)
    with torch.no_grad():
        masked = masked_mean(1.0 - valid, response_mask)
        stats = torch.stack(
            [
                masked,
                masked_mean((ratio > clip_ratio_c).to(valid.dtype) * valid, response_mask),
                masked,
                masked_mean(-log_ratio, response_mask),
                masked_mean(torch.expm1(log_ratio) - log_ratio, response_mask),
                masked_mean(ratio, response_mask),
            ]
        ).tolist()
    names = (
        "dppo/masked_frac",
        "dppo/truncated_frac",
        "policy/clipfrac",
        "policy/approx_kl",
        "policy/approx_kl_k3",
        "policy/ratio_mean",
    )
    return loss, dict(zip(names, stats, strict=True))
