"""The paper's likelihood measures (arXiv 2512.04220 §1, §4): pure functions on (B, T) log-prob tensors.

`logp` holds one log-prob per response position; `gen_mask` marks the tokens the policy generated, so
tool observations and padding never count (LLD is defined on action tokens only). Masked positions are
dropped with `torch.where`, never by multiplying, so inf/NaN sitting on padding cannot leak in. Every
measure is returned as a Python float under its final metric key (see `step_metrics.METRIC_KEYS`); a
measure over an empty subset (say, no correct response in the batch) is NaN: undefined, not zero.

Two ways to split a batch:
- by correctness (reward > threshold): what the paper's figures and Def. 4.1 talk about;
- by advantage sign (A >= 0 vs A < 0): what the authors' code logs (`pos/neg_avg_old_log_prob`) and
  what LLDS's preserving set is. A >= 0 includes the all-equal-reward groups (A = 0).
"""

from __future__ import annotations

import math

import torch


def _check_per_token(reference: torch.Tensor, **tensors: torch.Tensor) -> None:
    if reference.dim() != 2:
        raise ValueError(f"per-token tensors must be (B, T); got shape {tuple(reference.shape)}")
    for name, tensor in tensors.items():
        if tensor.shape != reference.shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {tuple(reference.shape)}")


def _check_per_response(batch: int, **tensors: torch.Tensor) -> None:
    for name, tensor in tensors.items():
        if tensor.shape != (batch,):
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected ({batch},) (one per response)")


def _masked(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    values = values.detach().double()
    return torch.where(mask.bool(), values, torch.zeros((), dtype=values.dtype, device=values.device))


def _nan_mean(values: torch.Tensor) -> float:
    return float(values.double().mean()) if values.numel() else math.nan


def per_response_advantage(advantages: torch.Tensor, gen_mask: torch.Tensor) -> torch.Tensor:
    """(B,) advantages from either (B,) or a (B, T) tiling (verl's layout); a tiled row's value is its mean
    over the generated tokens (GRPO tiles one scalar per response, so that is the scalar)."""
    if advantages.dim() == 1:
        return advantages.detach()
    _check_per_token(gen_mask, advantages=advantages)
    counts = gen_mask.bool().sum(-1).clamp(min=1)
    return _masked(advantages, gen_mask).sum(-1) / counts


def correct_from_rewards(rewards: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """(B,) bool: a response is correct when its reward exceeds `threshold` (EM reward: > 0)."""
    return rewards.detach() > threshold


def response_logprob_sums(logp: torch.Tensor, gen_mask: torch.Tensor) -> torch.Tensor:
    """(B,) ln pi(y_i | x): the sum of the generated tokens' log-probs (the paper's trajectory likelihood)."""
    _check_per_token(logp, gen_mask=gen_mask)
    return _masked(logp, gen_mask).sum(-1)


def pooled_token_mean(logp: torch.Tensor, gen_mask: torch.Tensor, rows: torch.Tensor) -> float:
    """Token mean of `logp` over the generated tokens of the responses selected by `rows` (B,) bool,
    pooled across responses (each token weighs the same, as the authors' masked_mean)."""
    _check_per_token(logp, gen_mask=gen_mask)
    _check_per_response(logp.shape[0], rows=rows)
    mask = gen_mask.bool() & rows.bool().unsqueeze(-1)
    count = int(mask.sum())
    return float(_masked(logp, mask).sum() / count) if count else math.nan


def authors_avg_log_prob(logp: torch.Tensor, gen_mask: torch.Tensor, rows: torch.Tensor) -> float:
    """The authors' `pos/neg_avg_old_log_prob` exactly: masked_mean(logp * rows, gen_mask), i.e. the sum
    over the selected responses' tokens divided by ALL generated tokens of the batch. It mixes the
    likelihood with the selected share of tokens; kept only to compare with their logs."""
    _check_per_token(logp, gen_mask=gen_mask)
    _check_per_response(logp.shape[0], rows=rows)
    count = int(gen_mask.bool().sum())
    mask = gen_mask.bool() & rows.bool().unsqueeze(-1)
    return float(_masked(logp, mask).sum() / count) if count else math.nan


def likelihood_by_outcome(
    logp: torch.Tensor,
    gen_mask: torch.Tensor,
    *,
    correct: torch.Tensor | None = None,
    advantages: torch.Tensor | None = None,
) -> dict[str, float]:
    """Mean log-likelihood of the two halves of the batch, split by correctness and/or advantage sign.

    `*_mean` keys are pooled token means over generated tokens; `*_seq_mean` keys are the mean over
    responses of the summed log-prob ln pi(y_i|x). `correct` is (B,) bool; `advantages` (B,) or (B, T).
    """
    _check_per_token(logp, gen_mask=gen_mask)
    sums = response_logprob_sums(logp, gen_mask)
    out: dict[str, float] = {}
    splits: list[tuple[str, str, torch.Tensor]] = []
    if correct is not None:
        _check_per_response(logp.shape[0], correct=correct)
        correct = correct.bool().to(logp.device)
        splits.append(("correct", "incorrect", correct))
    if advantages is not None:
        nonneg = per_response_advantage(advantages, gen_mask).to(logp.device) >= 0
        splits.append(("adv_nonneg", "adv_neg", nonneg))
    for pos_name, neg_name, rows in splits:
        for name, selected in ((pos_name, rows), (neg_name, ~rows)):
            out[f"likelihood/{name}_mean"] = pooled_token_mean(logp, gen_mask, selected)
            out[f"likelihood/{name}_seq_mean"] = _nan_mean(sums[selected])
    if advantages is not None:
        out["likelihood/authors_pos_avg"] = authors_avg_log_prob(logp, gen_mask, nonneg)
        out["likelihood/authors_neg_avg"] = authors_avg_log_prob(logp, gen_mask, ~nonneg)
    return out


def likelihood_displacement(
    logp_before: torch.Tensor, logp_after: torch.Tensor, gen_mask: torch.Tensor
) -> torch.Tensor:
    """(B,) Δ_i = Σ_t [ln pi_after - ln pi_before](y_i,t) over generated tokens: how much an update round
    moved each response's likelihood (Def. 4.1 summed over actions; Δ_i <= 0 on a correct response is LLD).
    Both tensors are the log-probs of the SAME rollout batch, before and after the round."""
    _check_per_token(logp_before, logp_after=logp_after, gen_mask=gen_mask)
    return _masked(logp_after, gen_mask).sum(-1) - _masked(logp_before, gen_mask).sum(-1)


def span_displacement_stats(
    logp_before: torch.Tensor, logp_after: torch.Tensor, gen_mask: torch.Tensor, answer_mask: torch.Tensor,
    correct: torch.Tensor,
) -> dict[str, float]:
    """Where the correct responses' likelihood moved across the update round, per token: the mean change
    of ln pi over their answer-span tokens (``answer_mask``: the last action's ``<answer>...</answer>``,
    tags included) and over their other generated tokens (searches, think, tags), and the share of each
    kind of token whose log-prob fell. All (B, T) but ``correct`` (B,); NaN where a kind has no token.
    Tells a displacement of the answer (the paper's §5.4 "LLD concentrates on the answer") from one of
    the search queries."""
    _check_per_token(logp_before, logp_after=logp_after, gen_mask=gen_mask, answer_mask=answer_mask)
    _check_per_response(logp_before.shape[0], correct=correct)
    delta = (logp_after - logp_before).detach().double()
    rows = correct.bool().to(delta.device)[:, None]
    out = {}
    for name, mask in (("answer", answer_mask.bool()), ("other", ~answer_mask.bool())):
        keep = gen_mask.bool() & mask & rows
        values = delta[keep]
        out[f"likelihood/delta_correct_{name}_token_mean"] = _nan_mean(values)
        out[f"likelihood/delta_correct_{name}_fell_share"] = _nan_mean((values < 0).double())
    return out


def displacement_stats(
    delta: torch.Tensor, correct: torch.Tensor, *, group_ids: torch.Tensor | None = None
) -> dict[str, float]:
    """Summaries of Δ (from `likelihood_displacement`): mean over correct and over incorrect responses,
    and the share of correct responses whose likelihood fell (Δ < 0). With `group_ids`, also the paper's
    per-question Fig. 3a measure: among questions with a correct response, the share whose mean Δ over
    its correct responses is negative."""
    batch = delta.shape[0]
    _check_per_response(batch, delta=delta, correct=correct)
    delta = delta.detach().double()
    correct = correct.bool().to(delta.device)
    pos = delta[correct]
    out = {
        "likelihood/displacement_correct": _nan_mean(pos),
        "likelihood/displacement_incorrect": _nan_mean(delta[~correct]),
        "likelihood/displacement_correct_neg_share": _nan_mean((pos < 0).double()),
    }
    if group_ids is not None:
        _check_per_response(batch, group_ids=group_ids)
        _, group = torch.unique(group_ids.to(delta.device), return_inverse=True)
        size = int(group.max()) + 1 if batch else 0
        zeros = torch.zeros(size, dtype=delta.dtype, device=delta.device)
        n_pos = zeros.index_add(0, group[correct], torch.ones_like(pos))
        sum_pos = zeros.index_add(0, group[correct], pos)
        has_pos = n_pos > 0
        out["likelihood/displacement_question_neg_share"] = _nan_mean((sum_pos[has_pos] / n_pos[has_pos] < 0).double())
    return out
