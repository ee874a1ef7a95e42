"""The paper's one-step likelihood probe (arXiv 2512.04220 Sec. 5.3, Eq. 3; the protocol of NTHR, 2505.18830).

For each question whose group holds both correct and incorrect responses: from the current weights, apply
one GRPO optimizer step on that question's group alone, measure
``Δ(x) = mean over its correct responses of Σ_t [ln pi_θ'(y_t) - ln pi_θ(y_t)]`` (generated tokens only),
then restore the weights and the optimizer. Fig. 3a plots the share of questions with Δ(x) < 0: it grows
past 50% as the death spiral sets in. The training run's own update round is untouched: the probe runs
before it, on copies of the state, and its log-probs before the step are the round's old_logp.

Cost: one forward/backward on G responses and one forward, per probed question, plus a copy of the model
and optimizer state: cheap for the embedded policy, noticeable for a billion-parameter model, so it is
off by default (`diagnostics.probe_every`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch

from trainer.diagnostics.likelihood import likelihood_displacement


def mixed_groups(rewards: torch.Tensor, group_ids: torch.Tensor, limit: int) -> list[torch.Tensor]:
    """Row indices of up to `limit` groups that hold both a correct (reward > 0) and an incorrect response,
    in order of first appearance."""
    correct = rewards > 0
    out: list[torch.Tensor] = []
    for g in dict.fromkeys(group_ids.tolist()):
        rows = (group_ids == g).nonzero().squeeze(-1)
        if bool(correct[rows].any()) and not bool(correct[rows].all()):
            out.append(rows)
            if len(out) == limit:
                break
    return out


def probe_questions(
    model: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    groups: list[torch.Tensor],
    *,
    update: Callable[[torch.Tensor], Any],
    logprobs_after: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    old_logp: torch.Tensor,
    rewards: torch.Tensor,
) -> dict[str, float]:
    """Run the probe on `groups` (row-index tensors of the rollout batch).

    `update(rows)` takes one optimizer step on those rows (the trainer's own step); `logprobs_after(rows)`
    returns ``(logp (n, L'), loss_mask (n, L'))`` of those rows under the updated model. `old_logp` (B, L)
    holds the log-probs before any update. Returns ``likelihood/probe_neg_share`` (share of probed
    questions with Δ(x) < 0; NaN when none was probed), ``likelihood/probe_delta_mean`` (mean Δ(x)) and
    ``likelihood/probe_questions``. Model, optimizer and scheduler states are restored after each question.
    """
    if not groups:
        return {"likelihood/probe_questions": 0.0, "likelihood/probe_neg_share": math.nan}
    saved = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()), scheduler.state_dict())
    deltas: list[float] = []
    try:
        for rows in groups:
            update(rows)
            logp, mask = logprobs_after(rows)
            delta = likelihood_displacement(old_logp[rows.to(old_logp.device), : logp.shape[1]], logp, mask)
            correct = (rewards[rows] > 0).to(delta.device)
            deltas.append(float(delta[correct].mean()))
            model.load_state_dict(saved[0])
            optimizer.load_state_dict(saved[1])
            scheduler.load_state_dict(saved[2])
    finally:
        model.load_state_dict(saved[0])
        optimizer.load_state_dict(saved[1])
        scheduler.load_state_dict(saved[2])
    return {
        "likelihood/probe_questions": float(len(deltas)),
        "likelihood/probe_neg_share": sum(d < 0 for d in deltas) / len(deltas),
        "likelihood/probe_delta_mean": sum(deltas) / len(deltas),
    }
