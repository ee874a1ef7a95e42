"""SAPO's conditional KL (arXiv 2603.10069, "Improving Search Agent with One Line of Code"): a KL penalty
between the current and the old (rollout) policy, applied only on positive-advantage tokens whose
probability fell.

Not verl's ``sapo`` policy loss: that is Soft Adaptive Policy Optimization (Qwen, arXiv 2511.20347), a
sigmoid gate in place of the PPO clip. This one is a regulariser added to the GRPO loss, a rival of LLDS.

The paper publishes no code, and the form below is reconstructed from its abstract ("a conditional
token-level KL constraint [...] applied only to positive tokens with low probabilities where the policy
has shifted excessively", "one-line code modification to standard GRPO"). Assumed, each a choice of ours:

- **Condition.** Token t of response i is penalised when ``A_i > 0`` and ``log_prob < old_log_prob``
  (ratio below 1): "positive tokens" are the tokens of positive-advantage responses, "low probability"
  is read as "fell below the rollout policy's". No tolerance band: the per-token KL is ~d**2 / 2 for a
  fall of d nats, so the recompute noise (d ~ 1e-6) adds ~1e-12.
- **Estimator.** verl's ``low_var_kl`` (k3) with the old policy in the reference's place, the one line
  that turns Search-R1's KL-to-reference into a KL-to-old: with ``r = old_log_prob - log_prob``,
  ``k3 = exp(r) - 1 - r``, clamped to [-10, 10] as verl does (`trainer.losses.kl.kl_penalty`). Its
  gradient in ``log_prob``, ``1 - exp(r)``, grows as ``1/ratio`` where the ratio collapses, which is the
  drift (ISDD) the paper names. ``k2`` (``r**2 / 2``) is offered; ``k1`` (``log_prob - old_log_prob``)
  is refused: it is negative where the penalty is on, so minimising it would push the probability
  further down.
- **Coefficient.** 1.0 by default (the abstract gives none): at 1, the restoring gradient of a token
  equals a unit advantage's policy gradient when its ratio has fallen to 1/2 (k3's ``1/ratio - 1 = 1``).
- **Aggregation.** The policy loss's: the penalty is a per-token term added to the policy loss's
  per-token matrix before verl's ``agg_loss`` (token-mean by default, over every generated token of the
  mini-batch, the inactive ones counting 0), so it shares the policy loss's normaliser.

Objective (our Eq., minimised): ``L = L_GRPO + coef * agg_t[1(A_i > 0, log_prob_t < old_log_prob_t) * KL_t]``.
"""

from __future__ import annotations

import torch

from trainer.losses._checks import check_advantages, check_choice, check_nonnegative, check_same_shape
from trainer.losses.aggregation import aggregate, masked_sum
from trainer.losses.kl import KL_ESTIMATORS, kl_penalty

#: Estimators of the per-token KL; verl's names are aliases ("low_var_kl" = k3, "mse" = k2).
SAPO_ESTIMATORS = ("k3", "low_var_kl", "k2", "mse")
DEFAULT_SAPO_COEF = 1.0
DEFAULT_SAPO_ESTIMATOR = "k3"


def check_sapo_estimator(estimator: str) -> None:
    """Raise ValueError for an estimator SAPO cannot use, saying why k1 is refused."""
    if estimator in KL_ESTIMATORS and KL_ESTIMATORS[estimator] == "k1":
        raise ValueError(
            f"sapo estimator {estimator!r} (k1 = log_prob - old_log_prob) is negative wherever the penalty is on "
            "(the probability fell), so minimising it would push the probability further down; use k3 "
            "(low_var_kl) or k2 (mse)"
        )
    check_choice("sapo_estimator", estimator, SAPO_ESTIMATORS)


def sapo_active_mask(
    log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, response_mask: torch.Tensor
) -> torch.Tensor:
    """Boolean (B, T): generated tokens of positive-advantage responses whose log-prob fell below the old one.

    ``log_prob``, ``old_log_prob``, ``response_mask`` are (B, T); ``advantages`` is (B,), one per response.
    The condition carries no gradient. Raises ValueError on mismatched shapes.
    """
    check_same_shape(log_prob, old_log_prob=old_log_prob, response_mask=response_mask)
    check_advantages(advantages, log_prob.shape[0])
    fell = log_prob.detach() < old_log_prob.detach()
    return fell & (advantages.detach() > 0).unsqueeze(-1) & response_mask.bool()


def sapo_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    coef: float = DEFAULT_SAPO_COEF,
    estimator: str = DEFAULT_SAPO_ESTIMATOR,
    loss_agg_mode: str = "token-mean",
    max_len: int | None = None,
    normalizer: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """SAPO's conditional KL term, already multiplied by ``coef`` (see the module docstring for the form).

    ``log_prob`` (B, T) carries the gradient; ``old_log_prob`` (B, T) is the rollout policy's (detached);
    ``advantages`` (B,); ``response_mask`` (B, T) marks the generated tokens. Aggregated with
    ``loss_agg_mode`` over ``response_mask`` (`trainer.losses.aggregation.aggregate`; ``normalizer``
    replaces its denominator under gradient accumulation).

    Stats: ``sapo/activation_rate`` (share of the generated tokens where the penalty is on),
    ``sapo/kl_mean`` (mean per-token KL over those tokens, 0 when none), ``sapo/num_active`` (their count),
    ``sapo/loss`` (this term, coef included). Raises ValueError for a negative or non-finite ``coef``, an
    unusable ``estimator`` (k1 included, see `check_sapo_estimator`) or mismatched shapes.
    """
    check_nonnegative("sapo_coef", coef)
    check_sapo_estimator(estimator)
    active = sapo_active_mask(log_prob, old_log_prob, advantages, response_mask)
    per_token = kl_penalty(log_prob, old_log_prob, estimator)
    per_token = torch.where(active, per_token, torch.zeros((), dtype=per_token.dtype, device=per_token.device))
    loss = coef * aggregate(per_token, response_mask, loss_agg_mode, max_len=max_len, normalizer=normalizer)
    with torch.no_grad():
        num_active = active.sum()
        tokens = response_mask.bool().sum().clamp(min=1)
        values = torch.stack(
            [
                num_active / tokens,
                masked_sum(per_token, active) / num_active.clamp(min=1),
                num_active.to(per_token.dtype),
                loss.detach(),
            ]
        ).tolist()
    names = ("sapo/activation_rate", "sapo/kl_mean", "sapo/num_active", "sapo/loss")
    return loss, dict(zip(names, values, strict=True))
