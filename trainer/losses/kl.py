"""KL penalty to the frozen reference model, per token, with Schulman's estimators."""

from __future__ import annotations

import torch

from trainer.losses._checks import check_choice, check_same_shape
from trainer.losses._dtypes import upcast
from trainer.losses.aggregation import aggregate

# Aliases as verl names them: "kl" = k1, "mse" = k2, "low_var_kl" = k3.
KL_ESTIMATORS = {"k1": "k1", "kl": "k1", "k2": "k2", "mse": "k2", "k3": "k3", "low_var_kl": "k3"}


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from the taken tokens' log-probs (samples from pi).

    - ``k1``: ``logp - ref_logp`` (unbiased, high variance, can be negative).
    - ``k2``: ``0.5 * (logp - ref_logp) ** 2``.
    - ``k3`` / ``low_var_kl``: ``exp(ref - logp) - (ref - logp) - 1``, clamped to [-10, 10] as verl does
      (the log-ratio is also clamped to [-20, 20] before exp, so it cannot overflow).
    """
    check_choice("kl_estimator", estimator, KL_ESTIMATORS)
    diff = upcast(logp) - upcast(ref_logp.detach())
    kind = KL_ESTIMATORS[estimator]
    if kind == "k1":
        return diff
    if kind == "k2":
        return 0.5 * diff.square()
    log_ratio = (-diff).clamp(-20.0, 20.0)
    return (torch.exp(log_ratio) - log_ratio - 1.0).clamp(-10.0, 10.0)


def kl_loss(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    estimator: str = "k3",
    aggregation: str = "token-mean",
    max_len: int | None = None,
    normalizer: float | None = None,
) -> torch.Tensor:
    """The aggregated KL over the generated tokens (unscaled: the caller multiplies by its kl_coef).
    ``normalizer`` replaces the aggregation's denominator (see `aggregate`)."""
    check_same_shape(logp, ref_logp=ref_logp, loss_mask=loss_mask)
    per_token = kl_penalty(logp, ref_logp, estimator)
    return aggregate(per_token, loss_mask, aggregation, max_len=max_len, normalizer=normalizer)
