"""PPO clipped-ratio policy loss over the generated tokens (GRPO's policy term)."""

from __future__ import annotations

import torch

from trainer.losses._checks import check_advantages, check_nonnegative, check_same_shape
from trainer.losses._dtypes import upcast
from trainer.losses.aggregation import aggregate, masked_mean

# exp() of a log-ratio beyond this overflows or is meaningless; verl clamps similarly.
LOG_RATIO_CLAMP = 20.0


def clipped_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    aggregation: str = "token-mean",
    max_len: int | None = None,
    normalizer: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Per token ``-min(ratio * A, clip(ratio, 1 - clip_low, 1 + clip_high) * A)``, aggregated over the mask.

    ``ratio = exp(logp - old_logp)`` with the log-ratio clamped to [-20, 20]. Separate ``clip_low`` /
    ``clip_high`` allow DAPO's clip-higher. Stats: ``policy/clipfrac`` (share of masked tokens where the
    clipped branch is the active one), ``policy/approx_kl`` (mean of old - new, verl's ppo_kl),
    ``policy/approx_kl_k3`` (mean of ratio - 1 - log ratio), ``policy/ratio_mean``: token means over
    this call's mask. ``normalizer`` replaces the aggregation's denominator (see `aggregate`).
    """
    check_same_shape(logp, old_logp=old_logp, loss_mask=loss_mask)
    check_advantages(advantages, logp.shape[0])
    check_nonnegative("clip_low", clip_low)
    check_nonnegative("clip_high", clip_high)
    if clip_low >= 1:
        raise ValueError(f"clip_low={clip_low!r} must be < 1 (the lower ratio bound 1 - clip_low must stay positive)")
    log_ratio = (upcast(logp) - upcast(old_logp.detach())).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    adv = upcast(advantages.detach()).unsqueeze(-1)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    per_token = torch.maximum(unclipped, clipped)
    loss = aggregate(per_token, loss_mask, aggregation, max_len=max_len, normalizer=normalizer)
    with torch.no_grad():
        stats = torch.stack(
            [
                masked_mean((clipped > unclipped).float(), loss_mask),
                masked_mean(-log_ratio, loss_mask),
                masked_mean(torch.expm1(log_ratio) - log_ratio, loss_mask),
                masked_mean(ratio, loss_mask),
            ]
        ).tolist()
    names = ("policy/clipfrac", "policy/approx_kl", "policy/approx_kl_k3", "policy/ratio_mean")
    return loss, dict(zip(names, stats, strict=True))
