"""GRPO + LLDS losses as pure functions on (B, L) response tensors, usable from any RL framework.

No model, environment or config object is needed: every function takes tensors and keyword options.
"""

from trainer.losses.advantages import group_advantages
from trainer.losses.aggregation import AGGREGATIONS, aggregate, masked_mean, masked_sum
from trainer.losses.entropy import entropy_bonus, entropy_from_logits
from trainer.losses.grpo_llds import LossOptions, grpo_llds_loss
from trainer.losses.kl import KL_ESTIMATORS, kl_loss, kl_penalty
from trainer.losses.llds import GATES, NORMALIZATIONS, answer_weight_schedule, llds_loss
from trainer.losses.policy_loss import clipped_policy_loss
from trainer.losses.spans import action_ids_from_mask, span_sums

__all__ = [
    "AGGREGATIONS",
    "GATES",
    "KL_ESTIMATORS",
    "NORMALIZATIONS",
    "LossOptions",
    "action_ids_from_mask",
    "aggregate",
    "answer_weight_schedule",
    "clipped_policy_loss",
    "entropy_bonus",
    "entropy_from_logits",
    "group_advantages",
    "grpo_llds_loss",
    "kl_loss",
    "kl_penalty",
    "llds_loss",
    "masked_mean",
    "masked_sum",
    "span_sums",
]
