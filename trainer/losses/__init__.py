"""GRPO + LLDS losses, and LLDS's rivals DPPO (`dppo`) and SAPO's conditional KL (`sapo`), as pure functions
on (B, L) response tensors, usable from any RL framework.

No model, environment or config object is needed: every function takes tensors and keyword options.
"""

from trainer.losses.advantages import group_advantages
from trainer.losses.aggregation import AGGREGATIONS, aggregate, aggregation_normalizer, masked_mean, masked_sum
from trainer.losses.dppo import DPPO_DIVERGENCES, dppo_policy_loss, dppo_valid_mask
from trainer.losses.entropy import entropy_bonus, entropy_from_logits
from trainer.losses.grpo_llds import (
    POLICY_LOSSES,
    LossNormalizers,
    LossOptions,
    grpo_llds_loss,
    mini_batch_normalizers,
)
from trainer.losses.kl import KL_ESTIMATORS, kl_loss, kl_penalty
from trainer.losses.llds import (
    DEFAULT_GATE_TOL,
    GATES,
    NORMALIZATIONS,
    answer_weight_schedule,
    llds_loss,
    llds_normalizer,
)
from trainer.losses.policy_loss import clipped_policy_loss
from trainer.losses.sapo import SAPO_ESTIMATORS, check_sapo_estimator, sapo_active_mask, sapo_loss
from trainer.losses.spans import action_ids_from_mask, span_sums

__all__ = [
    "AGGREGATIONS",
    "DEFAULT_GATE_TOL",
    "DPPO_DIVERGENCES",
    "GATES",
    "KL_ESTIMATORS",
    "NORMALIZATIONS",
    "POLICY_LOSSES",
    "SAPO_ESTIMATORS",
    "LossNormalizers",
    "LossOptions",
    "action_ids_from_mask",
    "aggregate",
    "aggregation_normalizer",
    "answer_weight_schedule",
    "check_sapo_estimator",
    "clipped_policy_loss",
    "dppo_policy_loss",
    "dppo_valid_mask",
    "entropy_bonus",
    "entropy_from_logits",
    "group_advantages",
    "grpo_llds_loss",
    "kl_loss",
    "kl_penalty",
    "llds_loss",
    "llds_normalizer",
    "masked_mean",
    "masked_sum",
    "mini_batch_normalizers",
    "sapo_active_mask",
    "sapo_loss",
    "span_sums",
]
