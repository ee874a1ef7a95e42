"""LLDS as a verl policy loss: ``actor_rollout_ref.actor.policy_loss.loss_mode=llds``.

Importing this module registers `compute_policy_loss_llds` in verl's own registry
(``verl.trainer.ppo.core_algos.register_policy_loss``) under the name ``"llds"``. verl looks the loss
up by name in every actor worker (``verl/workers/utils/losses.py``, ``ppo_loss``), so the module has
to be imported in those processes; three ways, each enough alone:

- searchgym declares it as a ``verl.plugins`` entry point (pyproject.toml), which ``import verl``
  loads in every process when searchgym is installed in the same environment (verl >= 0.9,
  ``VERL_USE_EXTERNAL_PLUGINS``, default ``auto``);
- ``policy_loss._target_: trainer.integrations.verl.LLDSPolicyLossConfig`` imports it when verl builds
  the actor config (hydra ``instantiate``, in the driver and in each actor worker);
- ``VERL_USE_EXTERNAL_MODULES=trainer.integrations.verl``.

Config: LLDS's knobs live in the same block as ``loss_mode``. verl builds that block with hydra from
its ``_target_`` (``PolicyLossConfig``, which rejects unknown keys), so `LLDSPolicyLossConfig`
extends it with the LLDS fields; point ``_target_`` at it (examples/verl/ does). A plain
``PolicyLossConfig`` with ``loss_mode=llds`` runs with the LLDS defaults (the authors' run).

The loss is verl's vanilla clipped loss (`compute_policy_loss_vanilla`, unchanged: clip ratios,
dual-clip, ``loss_agg_mode``, rollout importance weights) plus searchgym's `llds_loss` (arXiv
2512.04220 Eq. 6: ``L = L_GRPO + lam * L_LLDS``), computed from verl's tensors as verl passes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from verl.trainer.ppo.core_algos import compute_policy_loss_vanilla, register_policy_loss
from verl.workers.config import PolicyLossConfig

from trainer.losses._checks import check_choice, check_nonnegative
from trainer.losses.llds import DEFAULT_GATE_TOL, GATES, NORMALIZATIONS, llds_loss, llds_normalizer

#: The name verl's ``policy_loss.loss_mode`` selects this loss by.
LOSS_MODE = "llds"
#: Prefix of the LLDS stats in the metrics dict, next to verl's ``actor/pg_clipfrac`` etc.
METRIC_PREFIX = "actor/"


@dataclass
class LLDSPolicyLossConfig(PolicyLossConfig):
    """verl's ``PolicyLossConfig`` with LLDS's knobs (defaults: the authors' run, App. B.2.1).

    - ``llds_lambda``: lam >= 0 of Eq. 6 (0.2 in the paper; 0.3 for Qwen2.5-7B-Instruct).
    - ``llds_gate``: ``"action"`` (LLDS-A, Eq. 4), ``"response"`` (LLDS-R) or ``"token"``.
    - ``llds_normalization``: ``"code"`` (the authors' code: over every response token of the
      mini-batch, verl's ``batch_num_tokens``) or ``"paper"`` (Eq. 4: over the preserving responses).
    - ``llds_gate_tol``: nats per token a unit's summed displacement must exceed to fire (0 = the
      paper's ``> 0``); see `trainer.losses.llds.llds_loss`.

    Raises ValueError on a bad value (hydra builds this when verl instantiates the actor config, so a
    typo fails at start-up, not at the first update).
    """

    llds_lambda: float = 0.2
    llds_gate: str = "action"
    llds_normalization: str = "code"
    llds_gate_tol: float = DEFAULT_GATE_TOL

    def __post_init__(self) -> None:
        check_nonnegative("llds_lambda", self.llds_lambda)
        check_choice("llds_gate", self.llds_gate, GATES)
        check_choice("llds_normalization", self.llds_normalization, NORMALIZATIONS)
        check_nonnegative("llds_gate_tol", self.llds_gate_tol)


@dataclass(frozen=True)
class LLDSOptions:
    lam: float
    gate: str
    normalization: str
    gate_tol: float


def llds_options(policy_loss: Mapping[str, Any] | None) -> LLDSOptions:
    """LLDS's knobs read from verl's ``actor.policy_loss`` block; absent keys take the defaults."""
    block = policy_loss if policy_loss is not None else {}
    defaults = LLDSPolicyLossConfig()
    options = LLDSOptions(
        lam=block.get("llds_lambda", defaults.llds_lambda),
        gate=block.get("llds_gate", defaults.llds_gate),
        normalization=block.get("llds_normalization", defaults.llds_normalization),
        gate_tol=block.get("llds_gate_tol", defaults.llds_gate_tol),
    )
    check_nonnegative("llds_lambda", options.lam)
    check_choice("llds_gate", options.gate, GATES)
    check_choice("llds_normalization", options.normalization, NORMALIZATIONS)
    check_nonnegative("llds_gate_tol", options.gate_tol)
    return options


def response_advantages(advantages: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """(B,) one advantage per response from verl's token-level (B, L) ``advantages``.

    LLDS's preserving set is a set of responses (Eq. 4: those with advantage >= 0). verl's outcome
    estimators (grpo, rloo, ...) tile one scalar over the response (times the mask), so this is that
    scalar: the mean over the response's mask-1 tokens (0 for a row without any). Raises ValueError
    when a response's tokens carry advantages of both signs (GAE and other token-level estimators),
    where "the response's advantage" is undefined.
    """
    if advantages.shape != response_mask.shape or advantages.dim() != 2:
        raise ValueError(
            f"advantages {tuple(advantages.shape)} and response_mask {tuple(response_mask.shape)} must both be (B, L)"
        )
    on = response_mask.bool()
    adv = advantages.detach()
    nonnegative = torch.where(on, adv >= 0, True).all(dim=-1)
    negative = torch.where(on, adv < 0, True).all(dim=-1)
    mixed = ~(nonnegative | negative)
    if bool(mixed.any()):
        rows = mixed.nonzero().flatten().tolist()
        raise ValueError(
            f"loss_mode={LOSS_MODE!r} needs one advantage sign per response (its preserving set is the responses "
            f"with advantage >= 0), but rows {rows[:8]} have both signs on their response tokens: use an outcome "
            "advantage estimator (algorithm.adv_estimator=grpo, rloo, ...)"
        )
    summed = torch.where(on, adv, torch.zeros((), dtype=adv.dtype, device=adv.device)).sum(dim=-1)
    return summed / on.sum(dim=-1).clamp(min=1)


def verl_llds_normalizer(
    response_mask: torch.Tensor,
    advantages: torch.Tensor,
    normalization: str,
    global_batch_info: Mapping[str, Any] | None,
) -> float | None:
    """The denominator `llds_loss` divides this micro-batch's term by, in verl's global convention.

    verl normalises each micro-batch's loss by the whole mini-batch across data-parallel ranks and
    multiplies by ``dp_size`` (the ranks' gradients are averaged), from ``config.global_batch_info``
    (``agg_loss``: ``dp_size``, ``batch_num_tokens``, ``global_batch_size``). The LLDS term follows
    it, so its micro-batch terms add up to the mini-batch's whatever the micro-batch size or dp size:

    - ``"code"``: ``batch_num_tokens / dp_size``, i.e. the term is verl's
      ``agg_loss(gated penalty, response_mask, "token-mean", ...)``: exact.
    - ``"paper"``: the preserving responses are not counted across micro-batches and ranks by verl, so
      each micro-batch's Eq. 4 mean (over its own preserving responses) is weighted by its share of the
      mini-batch's responses: ``preserving_here * global_batch_size / (dp_size * B)``. That is Eq. 4
      over the mini-batch when it is one micro-batch on one rank, or when every micro-batch holds the
      same share of preserving responses; otherwise a response-weighted mean of micro-batch Eq. 4 terms.

    None (no global info, one rank): `llds_loss` normalises over this batch alone. Raises ValueError,
    as verl's ``agg_loss`` does, when ``dp_size > 1`` comes without the count it needs.
    """
    info = global_batch_info if global_batch_info is not None else {}
    dp_size = int(info.get("dp_size") or 1)
    if normalization == "code":
        batch_num_tokens = info.get("batch_num_tokens")
        if batch_num_tokens is None:
            if dp_size > 1:
                raise ValueError("(global) batch_num_tokens is required when dp_size > 1")
            return None
        return max(float(batch_num_tokens), 1.0) / dp_size
    global_batch_size = info.get("global_batch_size")
    if global_batch_size is None:
        if dp_size > 1:
            raise ValueError("global_batch_size is required when dp_size > 1")
        return None
    rows = max(response_mask.shape[0], 1)
    preserving = llds_normalizer(response_mask, advantages, "paper")
    return preserving * max(float(global_batch_size), 1.0) / (dp_size * rows)


@register_policy_loss(LOSS_MODE)
def compute_policy_loss_llds(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any = None,
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """verl's vanilla clipped loss + ``lam * L_LLDS``, and verl's metrics plus LLDS's.

    verl's policy-loss signature and layout (``verl.trainer.ppo.core_algos.PolicyLossFn``): all
    tensors (B, L) over the response positions; ``old_log_prob`` the rollout policy's per-token
    log-probs (recomputed by the actor before the update), ``log_prob`` the current ones (with grad),
    ``advantages`` token-level (one scalar per response, see `response_advantages`),
    ``response_mask`` 1 on generated tokens and 0 on padding and, in multi-turn agent-loop rollouts,
    on tool/observation tokens: LLDS's action spans are its contiguous runs of 1
    (`trainer.losses.spans.action_ids_from_mask`). ``loss_agg_mode`` and ``rollout_is_weights`` go to
    the vanilla loss only; the LLDS term has its own ``llds_normalization`` (like the authors' code,
    where it is a token mean whatever the policy term's aggregation) and is not importance-weighted.
    ``config``: verl's ``ActorConfig`` (clip ratios, ``policy_loss`` with the LLDS knobs, and
    ``global_batch_info``; see `verl_llds_normalizer`).

    Metrics: verl's (``actor/pg_clipfrac``, ``actor/ppo_kl``, ``actor/pg_clipfrac_lower``) and
    `llds_loss`'s under ``actor/`` (``actor/llds/activation_rate``, ``actor/llds/loss``, ...), all of
    this micro-batch; with verl's global normalisers ``llds/term`` and ``llds/loss`` are this
    micro-batch's share of the mini-batch's (they add up, where verl's metric reduction averages).
    Raises ValueError for mixed-sign advantages within a response or a bad LLDS option.
    """
    if config is None:
        raise ValueError(f"loss_mode={LOSS_MODE!r} needs verl's actor config (clip ratios, policy_loss)")
    pg_loss, pg_metrics = compute_policy_loss_vanilla(
        old_log_prob=old_log_prob,
        log_prob=log_prob,
        advantages=advantages,
        response_mask=response_mask,
        loss_agg_mode=loss_agg_mode,
        config=config,
        rollout_is_weights=rollout_is_weights,
    )
    options = llds_options(config.get("policy_loss"))
    per_response = response_advantages(advantages, response_mask)
    normalizer = verl_llds_normalizer(
        response_mask, per_response, options.normalization, config.get("global_batch_info")
    )
    llds, llds_stats = llds_loss(
        log_prob,
        old_log_prob,
        per_response,
        response_mask,
        lam=options.lam,
        gate=options.gate,
        normalization=options.normalization,
        gate_tol=options.gate_tol,
        normalizer=normalizer,
    )
    metrics = dict(pg_metrics)
    metrics.update({f"{METRIC_PREFIX}{name}": value for name, value in llds_stats.items()})
    return pg_loss + llds, metrics
