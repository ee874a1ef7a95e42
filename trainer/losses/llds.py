"""LLDS: Lazy Likelihood-Displacement Suppression (arXiv 2512.04220, v2 Sec. 5.5, Eqs. 4-6, App. B.3).

Per generated token the displacement ``d = old_logp - logp`` against the rollout (behaviour) policy
of the same RL step; ``d > 0`` means the token's likelihood fell during this step's updates. The
penalty is the hinge ``max(0, d)``, so gradient reaches only tokens whose likelihood fell, and only
in the preserving set (responses with advantage >= 0; negative-advantage responses are untouched)
and only where the gate fires. The gate is decided on detached values.

On the first mini-batch after a rollout ``logp == old_logp`` up to the rounding noise of recomputing
them (which ``gate_tol`` keeps from firing the gate) and the term is 0: it only acts when there are
several optimizer steps per rollout batch (or an older policy snapshot supplies old_logp).
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
from trainer.losses.aggregation import check_normalizer, masked_sum
from trainer.losses.spans import action_ids_from_mask, span_sums

GATES = ("action", "response", "token")
NORMALIZATIONS = ("paper", "code")
SCHEDULE_FORMS = ("paper", "code")
#: The trainer's gate tolerance (nats per generated token): above the float32 recompute noise of
#: token log-probs, far below a real update's displacement; see `llds_loss` and trainer.config.
DEFAULT_GATE_TOL = 1e-5


def llds_normalizer(loss_mask: torch.Tensor, advantages: torch.Tensor, normalization: str = "code") -> float:
    """The denominator `llds_loss` divides by for this batch, at least 1.

    - ``"code"``: the number of generated tokens (``loss_mask`` (B, L) nonzero).
    - ``"paper"``: the number of preserving responses (advantage (B,) >= 0, at least one generated token).
    Pass the whole mini-batch's to each micro-batch's call so the micro-batch terms add up to the
    mini-batch's (verl's global token normalisation; see trainer.losses.aggregation).
    """
    check_choice("llds_normalization", normalization, NORMALIZATIONS)
    generated = loss_mask.bool()
    if normalization == "code":
        return float(max(int(generated.sum()), 1))
    preserving = (advantages.detach() >= 0) & generated.any(dim=-1)
    return float(max(int(preserving.sum()), 1))


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
    normalization: str = "code",
    answer_weight: float = 1.0,
    gate_tol: float = 0.0,
    normalizer: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``lam * L_LLDS`` and its stats. All tensors (B, L) over the response; advantages (B,).

    Gates (which tokens may be penalised, among the preserving set's generated tokens):
    - ``"action"`` (default, "LLDS-A", Eq. 4): each action span (``action_ids``, derived from the loss
      mask as contiguous runs when not given) is gated on its own signed summed d.
    - ``"response"`` ("LLDS-R", Eq. 10, the v1 form): gated on the response's signed summed d.
    - ``"token"`` (Eq. 9): no span gate; every token's hinge applies (a token "fires" when its own d does).

    Gate tolerance (nats per token): a unit (action, response, or token) fires only when its summed d
    exceeds ``gate_tol`` x its number of generated tokens. The paper and the authors' code fire at an
    exact ``> 0``; with ``gate_tol=0`` this is their form, value and gradient. The tolerance exists
    because the first optimizer step of a round compares the rollout policy with itself: log-probs
    recomputed with other padding or micro-batching differ by float rounding alone, and at ``> 0``
    about half of those zero-mean sums fire, giving those tokens the hinge's full gradient (lam / N
    each, whatever the size of d) and inflating ``llds/activation_rate``. A tolerance above the
    recompute noise (trainer.config's ``llds.gate_tol`` default, measured there) and far below a real
    update's displacement removes that without changing what a real fall does.

    LLDS-MA (Eq. 5): tokens where ``answer_mask`` is True (the final ``<answer>`` span) get weight
    ``answer_weight`` (beta), all others 1 — the paper's form. (The authors' code uses
    ``min(beta * lam, lam)``, i.e. caps beta at 1; here beta > 1 is allowed.)

    Normalisation — the paper and the authors' code differ:
    - ``"code"`` (default: ``dp_actor.py``'s ``masked_mean(gated penalty, loss_mask)``, the form that
      produced the published numbers): the sum of gated weighted penalties over every generated token
      of the batch, so negative-advantage responses add zeros to the numerator but count in the
      denominator.
    - ``"paper"`` (Eq. 4): per preserving response, the sum of gated weighted penalties over that
      response's count of generated tokens, then the mean over the preserving set; 0 when the set is
      empty. The same per-response form is used for every gate (Eq. 9's token variant, as
      reconstructed, pools the tokens of the whole set instead).
    At the same lam the paper's form is stronger by about (batch responses) / (preserving responses)
    when lengths are alike: on mixed G=5 groups (tests/test_losses.py::
    test_llds_paper_form_is_stronger_on_mixed_batches) 2.5x with 2 of 5 responses preserving per group
    (2.68x with lengths of 20-200 tokens), 5x with 1 of 5, 1.25x with 4 of 5; groups whose rewards are
    all equal are all preserving and pull it towards 1.

    ``normalizer`` replaces the denominator (the batch's generated tokens for "code", its preserving
    responses for "paper"; `llds_normalizer`): pass the mini-batch's under gradient accumulation.

    The preserving set holds the responses with advantage >= 0 that have at least one generated token
    (all-padding rows would only dilute the mean). Stats (floats, detached): ``llds/activation_rate``
    (fired units / preserving units), ``llds/gated_token_frac`` (share of preserving tokens inside a
    fired gate), ``llds/mean_penalty`` (mean hinge over gated tokens), the counts behind them
    (``llds/num_fired``, ``llds/num_units``, ``llds/num_gated_tokens``, ``llds/num_preserving_tokens``,
    ``llds/num_preserving`` responses), ``llds/term`` (unscaled L_LLDS) and ``llds/loss`` (= lam * term).
    Raises ValueError for mismatched shapes, an unknown gate or normalisation, or a negative lam,
    answer_weight or gate_tol.
    """
    check_same_shape(logp, old_logp=old_logp, loss_mask=loss_mask, action_ids=action_ids, answer_mask=answer_mask)
    check_advantages(advantages, logp.shape[0])
    check_choice("llds_gate", gate, GATES)
    check_choice("llds_normalization", normalization, NORMALIZATIONS)
    check_nonnegative("llds_lambda", lam)
    check_nonnegative("answer_weight", answer_weight)
    check_nonnegative("gate_tol", gate_tol)
    check_normalizer(normalizer)

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
        sizes = span_sums(keep.to(signed.dtype), ids)
        present = sizes > 0
        present[:, 0] = False  # bucket 0 collects the non-preserving tokens
        fired_spans = (sums > gate_tol * sizes) & present
        gated = torch.gather(fired_spans, 1, ids) & keep
        fired, units = fired_spans.sum(), present.sum()
    elif gate == "response":
        fired_rows = (signed.sum(dim=-1) > gate_tol * keep.sum(dim=-1)) & preserving_rows
        gated = keep & fired_rows.unsqueeze(-1)
        fired, units = fired_rows.sum(), preserving_rows.sum()
    else:
        # relu(d) is 0 with zero gradient at d <= 0, so at gate_tol=0 this is the ungated Eq. 9 exactly.
        gated = keep & (signed > gate_tol)
        fired, units = gated.sum(), keep.sum()

    weights = torch.ones_like(penalty)
    if answer_mask is not None:
        weights = torch.where(answer_mask.bool(), torch.full_like(penalty, float(answer_weight)), weights)
    contribution = torch.where(gated, weights * penalty, zero)

    num_preserving = preserving_rows.sum()
    if normalization == "paper":
        per_response = contribution.sum(dim=-1) / generated.sum(dim=-1).clamp(min=1)
        total = masked_sum(per_response, preserving_rows)
    else:
        total = contribution.sum()
    term = total / (llds_normalizer(loss_mask, advantages, normalization) if normalizer is None else normalizer)
    loss = lam * term

    with torch.no_grad():
        num_gated, num_kept = gated.sum(), keep.sum()
        values = torch.stack(
            [
                fired / units.clamp(min=1),
                num_gated / num_kept.clamp(min=1),
                masked_sum(penalty, gated) / num_gated.clamp(min=1),
                fired.float(),
                units.float(),
                num_gated.float(),
                num_kept.float(),
                num_preserving.float(),
                term,
                loss,
            ]
        ).tolist()
    names = (
        "llds/activation_rate",
        "llds/gated_token_frac",
        "llds/mean_penalty",
        "llds/num_fired",
        "llds/num_units",
        "llds/num_gated_tokens",
        "llds/num_preserving_tokens",
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
