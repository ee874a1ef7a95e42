"""The GRPO + LLDS objective (Eq. 6): clipped policy loss + KL to the reference - entropy bonus + lam * LLDS."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainer.losses._checks import check_choice, check_max_len, check_nonnegative
from trainer.losses.aggregation import AGGREGATIONS, aggregation_normalizer, check_normalizer
from trainer.losses.entropy import entropy_bonus
from trainer.losses.kl import KL_ESTIMATORS, kl_loss
from trainer.losses.llds import DEFAULT_GATE_TOL, GATES, NORMALIZATIONS, llds_loss, llds_normalizer
from trainer.losses.policy_loss import clipped_policy_loss


@dataclass(frozen=True)
class LossOptions:
    """Every knob of the GRPO(+LLDS) loss; defaults follow the authors' run (App. B.2.1 and their verl
    script and yaml: clip 0.2, KL 0.001 low_var_kl, entropy 0.001, lam 0.2, action gate, the code's
    normalisation), plus a gate tolerance for float32 recompute noise (see `llds_loss`).

    ``aggregation`` and ``max_len`` apply to the policy, KL and entropy terms; the LLDS term has its
    own ``llds_normalization``. ``llds=False`` is plain GRPO through the same code path.
    """

    clip_low: float = 0.2
    clip_high: float = 0.2
    aggregation: str = "token-mean"
    max_len: int | None = None
    kl_coef: float = 0.001
    kl_estimator: str = "low_var_kl"
    entropy_coef: float = 0.001
    llds: bool = True
    llds_lambda: float = 0.2
    llds_gate: str = "action"
    llds_normalization: str = "code"
    llds_gate_tol: float = DEFAULT_GATE_TOL
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
        check_nonnegative("llds_gate_tol", self.llds_gate_tol)
        check_nonnegative("answer_weight", self.answer_weight)


@dataclass(frozen=True)
class LossNormalizers:
    """The denominators of a whole mini-batch, handed to each of its micro-batches' `grpo_llds_loss` so
    the micro-batch losses (and their gradients) add up to the mini-batch's whatever the micro-batch
    size: verl's global_batch_info (``batch_num_tokens`` / ``global_batch_size``) for `agg_loss`.

    ``aggregation``: for the policy, KL and entropy terms (`aggregation_normalizer`); ``llds``: for the
    LLDS term (`llds_normalizer`). Both > 0.
    """

    aggregation: float
    llds: float

    def __post_init__(self) -> None:
        check_normalizer(self.aggregation)
        check_normalizer(self.llds)


def mini_batch_normalizers(loss_mask: torch.Tensor, advantages: torch.Tensor, options: LossOptions) -> LossNormalizers:
    """`LossNormalizers` of the mini-batch with this ``loss_mask`` (B, L) and ``advantages`` (B,)."""
    return LossNormalizers(
        aggregation=aggregation_normalizer(loss_mask, options.aggregation, max_len=options.max_len),
        llds=llds_normalizer(loss_mask, advantages, options.llds_normalization),
    )


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
    normalizers: LossNormalizers | None = None,
    terms: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss for one micro-batch and its stats (floats).

    ``total = policy + kl_coef * KL (when kl_coef > 0 and ref_logp is given) - entropy_coef * H (when
    entropy, the (B, L) per-token entropy, is given) + lam * L_LLDS (when options.llds)``.
    Tensors are (B, L) over the response positions, ``advantages`` (B,); see `llds_loss` for the
    LLDS-specific inputs.

    Alone (``normalizers=None``) every term is normalised over this batch. Under gradient accumulation
    pass the mini-batch's `mini_batch_normalizers` to every micro-batch and sum: the losses, their
    gradients and the stats ``policy/loss``, ``kl/loss``, ``entropy/mean``, ``llds/term``, ``llds/loss``
    and ``loss/total`` then add up to the mini-batch's (the other stats stay this batch's means).

    ``terms``, when given, receives the regulariser's share of ``total`` as a tensor under
    ``"regularizer"`` (the lam-weighted LLDS term; absent when no regulariser is on), so a caller can
    take its gradient apart from the policy loss's (`accumulate_mini_batch`'s gradient-norm split).
    """
    options = options if options is not None else LossOptions()
    agg = {
        "aggregation": options.aggregation,
        "max_len": options.max_len,
        "normalizer": None if normalizers is None else normalizers.aggregation,
    }
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
            gate_tol=options.llds_gate_tol,
            normalizer=None if normalizers is None else normalizers.llds,
        )
        total = total + llds
        stats.update(llds_stats)
        if terms is not None:
            terms["regularizer"] = llds

    scalars["loss/total"] = total.detach()
    stats.update(zip(scalars, torch.stack(list(scalars.values())).tolist(), strict=True))
    return total, stats
