"""The GRPO + LLDS objective (Eq. 6): clipped policy loss + KL to the reference - entropy bonus + lam * LLDS,
with its rivals as options: DPPO's divergence-masked policy loss in place of the clipped one
(`trainer.losses.dppo`) and SAPO's conditional KL to the old policy as a regulariser (`trainer.losses.sapo`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainer.losses._checks import check_choice, check_max_len, check_nonnegative
from trainer.losses.aggregation import AGGREGATIONS, aggregation_normalizer, check_normalizer
from trainer.losses.dppo import DEFAULT_DPPO_CLIP_RATIO_C, DEFAULT_DPPO_DELTA, check_dppo_options, dppo_policy_loss
from trainer.losses.entropy import entropy_bonus
from trainer.losses.kl import KL_ESTIMATORS, kl_loss
from trainer.losses.llds import DEFAULT_GATE_TOL, GATES, NORMALIZATIONS, llds_loss, llds_normalizer
from trainer.losses.policy_loss import clipped_policy_loss
from trainer.losses.sapo import DEFAULT_SAPO_COEF, DEFAULT_SAPO_ESTIMATOR, check_sapo_estimator, sapo_loss

#: ``LossOptions.policy_loss``: "grpo" the PPO-clipped loss, "dppo_tv" / "dppo_kl" DPPO's (verl's names).
POLICY_LOSSES = ("grpo", "dppo_tv", "dppo_kl")


@dataclass(frozen=True)
class LossOptions:
    """Every knob of the GRPO(+LLDS) loss; defaults follow the authors' run (App. B.2.1 and their verl
    script and yaml: clip 0.2, KL 0.001 low_var_kl, entropy 0.001, lam 0.2, action gate, the code's
    normalisation), plus a gate tolerance for float32 recompute noise (see `llds_loss`).

    ``aggregation`` and ``max_len`` apply to the policy, KL and entropy terms; the LLDS term has its
    own ``llds_normalization``. ``llds=False`` is plain GRPO through the same code path.

    The rivals, off by default (the loss is then exactly the GRPO(+LLDS) one): ``policy_loss`` "dppo_tv" /
    "dppo_kl" replaces the clipped policy loss by DPPO's (thresholds ``dppo_delta_low`` / ``dppo_delta_high``,
    ratio truncation ``dppo_clip_ratio_c``; ``clip_low`` / ``clip_high`` are then unused); ``sapo`` adds
    SAPO's conditional KL, ``sapo_coef`` x its ``sapo_estimator``. Raises ValueError on a bad value.
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
    policy_loss: str = "grpo"
    dppo_delta_low: float = DEFAULT_DPPO_DELTA
    dppo_delta_high: float = DEFAULT_DPPO_DELTA
    dppo_clip_ratio_c: float = DEFAULT_DPPO_CLIP_RATIO_C
    sapo: bool = False
    sapo_coef: float = DEFAULT_SAPO_COEF
    sapo_estimator: str = DEFAULT_SAPO_ESTIMATOR

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
        check_choice("policy_loss", self.policy_loss, POLICY_LOSSES)
        if self.policy_loss != "grpo":
            divergence = self.policy_loss.removeprefix("dppo_")
            check_dppo_options(divergence, self.dppo_delta_low, self.dppo_delta_high, self.dppo_clip_ratio_c)
        if not isinstance(self.sapo, bool):
            raise ValueError(f"sapo={self.sapo!r} must be a bool")
        check_nonnegative("sapo_coef", self.sapo_coef)
        check_sapo_estimator(self.sapo_estimator)


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

    ``options.policy_loss`` "dppo_tv" / "dppo_kl" puts `dppo_policy_loss` in the clipped loss's place
    (its stats ``dppo/*`` added); ``options.sapo`` adds `sapo_loss` (``+ sapo_coef * KL`` on the
    positive-advantage tokens whose probability fell; stats ``sapo/*``), normalised as the policy term.

    ``terms``, when given, receives the regulariser's share of ``total`` as a tensor under
    ``"regularizer"`` (the lam-weighted LLDS term plus the SAPO term; absent when no regulariser is on), so a
    caller can take its gradient apart from the policy loss's (`accumulate_mini_batch`'s gradient-norm split).
    """
    options = options if options is not None else LossOptions()
    agg = {
        "aggregation": options.aggregation,
        "max_len": options.max_len,
        "normalizer": None if normalizers is None else normalizers.aggregation,
    }
    if options.policy_loss == "grpo":
        total, stats = clipped_policy_loss(
            logp, old_logp, advantages, loss_mask, clip_low=options.clip_low, clip_high=options.clip_high, **agg
        )
    else:
        total, stats = dppo_policy_loss(
            logp,
            old_logp,
            advantages,
            loss_mask,
            divergence=options.policy_loss.removeprefix("dppo_"),
            delta_low=options.dppo_delta_low,
            delta_high=options.dppo_delta_high,
            clip_ratio_c=options.dppo_clip_ratio_c,
            loss_agg_mode=options.aggregation,
            max_len=options.max_len,
            normalizer=agg["normalizer"],
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

    if options.sapo:
        sapo, sapo_stats = sapo_loss(
            logp,
            old_logp,
            advantages,
            loss_mask,
            coef=options.sapo_coef,
            estimator=options.sapo_estimator,
            loss_agg_mode=options.aggregation,
            max_len=options.max_len,
            normalizer=agg["normalizer"],
        )
        total = total + sapo
        stats.update(sapo_stats)
        if terms is not None:
            terms["regularizer"] = terms["regularizer"] + sapo if "regularizer" in terms else sapo

    scalars["loss/total"] = total.detach()
    stats.update(zip(scalars, torch.stack(list(scalars.values())).tolist(), strict=True))
    return total, stats
