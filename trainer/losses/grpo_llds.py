"""The GRPO + LLDS objective (Eq. 6): clipped policy loss + KL to the reference - entropy bonus + lam * LLDS."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainer.losses._checks import check_choice, check_max_len, check_nonnegative
from trainer.losses.aggregation import AGGREGATIONS
from trainer.losses.entropy import entropy_bonus
from trainer.losses.kl import KL_ESTIMATORS, kl_loss
from trainer.losses.llds import GATES, NORMALIZATIONS, llds_loss
from trainer.losses.policy_loss import clipped_policy_loss


@dataclass(frozen=True)
class LossOptions:
    """Every knob of the GRPO(+LLDS) loss; defaults follow the paper's Search-R1 setup (App. B.2.1).

    ``aggregation`` and ``max_len`` apply to the policy, KL and entropy terms; the LLDS term has its
    own ``llds_normalization``. ``llds=False`` is plain GRPO through the same code path.
    """

    clip_low: float = 0.2
    clip_high: float = 0.2
    aggregation: str = "token-mean"
    max_len: int | None = None
    kl_coef: float = 0.001
    kl_estimator: str = "k3"
    entropy_coef: float = 0.0
    llds: bool = True
    llds_lambda: float = 0.2
    llds_gate: str = "action"
    llds_normalization: str = "paper"
    answer_weight: float = 1.0

    def __post_init__(self) -> None:
        check_nonnegative("clip_low", self.clip_low)
        if self.clip_low >= 1:
            raise ValueError(f"clip_low={self.clip_low!r} must be < 1")
        check_nonnegative("clip_high", self.clip_high)
        check_choice("aggregation", self.aggregation, AGGREGATIONS)
        check_max_len(self.max_len)
        check_nonnegative("kl_coef", self.kl_coef)
        check_choice("kl_estimator", self.kl_estimator, KL_ESTIMATORS)
        check_nonnegative("entropy_coef", self.entropy_coef)
        if not isinstance(self.llds, bool):
            raise ValueError(f"llds={self.llds!r} must be a bool")
        check_nonnegative("llds_lambda", self.llds_lambda)
        check_choice("llds_gate", self.llds_gate, GATES)
        check_choice("llds_normalization", self.llds_normalization, NORMALIZATIONS)
        check_nonnegative("answer_weight", self.answer_weight)


def grpo_llds_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    ref_logp: torch.Tensor | None = None,
    action_ids: torch.Tensor | None = None,
    answer_mask: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    options: LossOptions | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss for one micro-batch and its stats (floats).

    ``total = policy + kl_coef * KL (when kl_coef > 0 and ref_logp is given) - entropy_coef * H (when
    entropy, the (B, L) per-token entropy, is given) + lam * L_LLDS (when options.llds)``.
    Tensors are (B, L) over the response positions, ``advantages`` (B,); see `llds_loss` for the
    LLDS-specific inputs. Divide by the gradient-accumulation count in the caller, as verl does.
    """
    options = options if options is not None else LossOptions()
    agg = {"aggregation": options.aggregation, "max_len": options.max_len}
    total, stats = clipped_policy_loss(
        logp, old_logp, advantages, loss_mask, clip_low=options.clip_low, clip_high=options.clip_high, **agg
    )
    scalars = {"policy/loss": total.detach()}

    if options.kl_coef > 0 and ref_logp is not None:
        kl = kl_loss(logp, ref_logp, loss_mask, estimator=options.kl_estimator, **agg)
        total = total + options.kl_coef * kl
        scalars["kl/loss"] = kl.detach()

    if entropy is not None:
        bonus, mean_entropy = entropy_bonus(entropy, loss_mask, coef=options.entropy_coef, **agg)
        if options.entropy_coef > 0:
            total = total + bonus
        scalars["entropy/mean"] = mean_entropy.detach()

    if options.llds:
        llds, llds_stats = llds_loss(
            logp,
            old_logp,
            advantages,
            loss_mask,
            action_ids=action_ids,
            answer_mask=answer_mask,
            lam=options.llds_lambda,
            gate=options.llds_gate,
            normalization=options.llds_normalization,
            answer_weight=options.answer_weight,
        )
        total = total + llds
        stats.update(llds_stats)

    scalars["loss/total"] = total.detach()
    stats.update(zip(scalars, torch.stack(list(scalars.values())).tolist(), strict=True))
    return total, stats
