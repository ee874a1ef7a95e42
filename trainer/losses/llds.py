"""LLDS: Lazy Likelihood-Displacement Suppression (arXiv 2512.04220, v2 Sec. 5.5, Eqs. 4-6, App. B.3).

Per generated token the displacement ``d = old_logp - logp`` against the rollout (behaviour) policy
of the same RL step; ``d > 0`` means the token's likelihood fell during this step's updates. The
penalty is the hinge ``max(0, d)``, so gradient reaches only tokens whose likelihood fell, and only
in the preserving set (responses with advantage >= 0; negative-advantage responses are untouched)
and only where the gate fires. The gate is decided on detached values.

On the first mini-batch after a rollout ``logp == old_logp`` and the term is 0: it only acts when
there are several optimizer steps per rollout batch (or an older policy snapshot supplies old_logp).
"""

from __future__ import annotations

import torch

from trainer.losses._checks import (
    check_advantages,
    check_choice,
    check_nonnegative,
    check_same_shape,
)
from trainer.losses._dtypes import upcast
from trainer.losses.aggregation import masked_sum
from trainer.losses.spans import action_ids_from_mask, span_sums

GATES = ("action", "response", "token")
NORMALIZATIONS = ("paper", "code")
SCHEDULE_FORMS = ("paper", "code")


def llds_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    action_ids: torch.Tensor | None = None,
    answer_mask: torch.Tensor | None = None,
    lam: float = 0.2,
    gate: str = "action",
    normalization: str = "paper",
    answer_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``lam * L_LLDS`` and its stats. All tensors (B, L) over the response; advantages (B,).

    Gates (which tokens may be penalised, among the preserving set's generated tokens):
    - ``"action"`` (default, "LLDS-A", Eq. 4): each action span (``action_ids``, derived from the loss
      mask as contiguous runs when not given) is gated on its own signed summed ``d > 0``.
    - ``"response"`` ("LLDS-R", Eq. 10, the v1 form): gated on the response's signed summed ``d > 0``.
    - ``"token"`` (Eq. 9): no gate; every token's hinge applies.

    LLDS-MA (Eq. 5): tokens where ``answer_mask`` is True (the final ``<answer>`` span) get weight
    ``answer_weight`` (beta), all others 1 — the paper's form. (The authors' code uses
    ``min(beta * lam, lam)``, i.e. caps beta at 1; here beta > 1 is allowed.)

    Normalisation — the paper and the authors' code differ:
    - ``"paper"`` (default, Eq. 4): per preserving response, the sum of gated weighted penalties over
      that response's count of generated tokens, then the mean over the preserving set; 0 when the set
      is empty. The same per-response form is used for every gate (Eq. 9's token variant, as
      reconstructed, pools the tokens of the whole set instead).
    - ``"code"`` (``dp_actor.py``): ``masked_mean(gated penalty, loss_mask)`` over every generated
      token of the micro-batch, so negative-advantage responses add zeros to the numerator but count
      in the denominator.

    The preserving set holds the responses with advantage >= 0 that have at least one generated token
    (all-padding rows would only dilute the mean). Stats (floats, detached): ``llds/activation_rate``
    (fired units / preserving units; units are actions, responses, or for the token gate tokens, which
    fire when their own d > 0), ``llds/gated_token_frac`` (share of preserving tokens inside a fired
    gate), ``llds/mean_penalty`` (mean hinge over gated tokens), ``llds/num_preserving``, ``llds/term``
    (unscaled L_LLDS) and ``llds/loss`` (= lam * term).
    """
    check_same_shape(logp, old_logp=old_logp, loss_mask=loss_mask, action_ids=action_ids, answer_mask=answer_mask)
    check_advantages(advantages, logp.shape[0])
    check_choice("llds_gate", gate, GATES)
    check_choice("llds_normalization", normalization, NORMALIZATIONS)
    check_nonnegative("llds_lambda", lam)
    check_nonnegative("answer_weight", answer_weight)

    generated = loss_mask.bool()
    preserving_rows = (advantages.detach() >= 0) & generated.any(dim=-1)
    keep = generated & preserving_rows.unsqueeze(-1)
    zero = torch.zeros((), dtype=torch.float32, device=logp.device)

    # d with grad through logp only; masked positions are replaced, never multiplied (they may hold inf).
    displacement = torch.where(keep, upcast(old_logp.detach()) - upcast(logp), zero)
    penalty = torch.relu(displacement)
    signed = displacement.detach()

    if gate == "action":
        ids = action_ids_from_mask(loss_mask) if action_ids is None else action_ids.long()
        ids = torch.where(keep, ids, torch.zeros_like(ids))
        sums = span_sums(signed, ids)
        present = span_sums(keep.float(), ids) > 0
        present[:, 0] = False  # bucket 0 collects the non-preserving tokens
        fired_spans = (sums > 0) & present
        gated = torch.gather(fired_spans, 1, ids) & keep
        fired, units = fired_spans.sum(), present.sum()
    elif gate == "response":
        fired_rows = (signed.sum(dim=-1) > 0) & preserving_rows
        gated = keep & fired_rows.unsqueeze(-1)
        fired, units = fired_rows.sum(), preserving_rows.sum()
    else:
        gated = keep
        fired, units = (keep & (signed > 0)).sum(), keep.sum()

    weights = torch.ones_like(penalty)
    if answer_mask is not None:
        weights = torch.where(answer_mask.bool(), torch.full_like(penalty, float(answer_weight)), weights)
    contribution = torch.where(gated, weights * penalty, zero)

    num_preserving = preserving_rows.sum()
    if normalization == "paper":
        per_response = contribution.sum(dim=-1) / generated.sum(dim=-1).clamp(min=1)
        term = masked_sum(per_response, preserving_rows) / num_preserving.clamp(min=1)
    else:
        term = contribution.sum() / generated.sum().clamp(min=1)
    loss = lam * term

    with torch.no_grad():
        num_gated = gated.sum()
        values = torch.stack(
            [
                fired / units.clamp(min=1),
                num_gated / keep.sum().clamp(min=1),
                masked_sum(penalty, gated) / num_gated.clamp(min=1),
                num_preserving.float(),
                term,
                loss,
            ]
        ).tolist()
    names = (
        "llds/activation_rate",
        "llds/gated_token_frac",
        "llds/mean_penalty",
        "llds/num_preserving",
        "llds/term",
        "llds/loss",
    )
    return loss, dict(zip(names, values, strict=True))


def answer_weight_schedule(mean_valid_searches: float, target: float = 2.0, form: str = "paper") -> float:
    """LLDS-MA's beta ramp from the batch-mean number of valid searches V (App. B.2.1).

    - ``"paper"``: ``min(V / target, 1)`` (beta rises linearly from 0 at V = 0).
    - ``"code"``: ``min(max(V - (target - 1), 0), 1)``; with target 2 this is the authors'
      ``min(max(V - 1, 0), 1)`` (0 until one search on average, 1 at two).
    Both reach 1 at V = target; they differ below it (at V = 1: 0.5 against 0).
    """
    check_choice("form", form, SCHEDULE_FORMS)
    check_nonnegative("mean_valid_searches", mean_valid_searches)
    if isinstance(target, bool) or not isinstance(target, int | float) or not target > 0:
        raise ValueError(f"target={target!r} must be a number > 0")
    if form == "paper":
        return float(min(mean_valid_searches / target, 1.0))
    return float(min(max(mean_valid_searches - (target - 1.0), 0.0), 1.0))
