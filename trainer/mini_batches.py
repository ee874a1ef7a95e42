"""One update round's mini-batches and the gradient of one mini-batch accumulated over micro-batches.

verl's layout (actor.ppo_mini_batch_size, ppo_micro_batch_size_per_gpu): each optimizer step takes a
mini-batch of whole GRPO groups; its gradient is accumulated over micro-batches of episodes. Every
micro-batch's loss is normalised by the whole mini-batch's denominators (its generated tokens for
token-mean and LLDS "code", its sequences for the seq-mean modes, its preserving responses for LLDS
"paper"), as verl's engine does with ``batch_num_tokens`` / ``global_batch_size``, so the accumulated
gradient and the summed loss equal one pass over the mini-batch whatever ``micro_batch_size`` is.

No server or trainer object is needed: `accumulate_mini_batch` takes the model and tensors, so tests
call exactly the code path the trainer runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from trainer.losses import LossOptions, grpo_llds_loss, mini_batch_normalizers
from trainer.rollout.batch import RolloutBatch, token_logprobs

# Stats that are a micro-batch's share of the mini-batch's value (normalised by the mini-batch): summed.
_SHARES = ("policy/loss", "kl/loss", "entropy/mean", "loss/total", "llds/term", "llds/loss", "sapo/loss")
# Counts: summed.
_COUNTS = (
    "llds/num_fired",
    "llds/num_units",
    "llds/num_gated_tokens",
    "llds/num_preserving_tokens",
    "llds/num_preserving",
    "sapo/num_active",
)
# Ratios over the micro-batch: recombined as exact ratios over the mini-batch, weighted by the count
# they divide by (None: the micro-batch's generated tokens, the policy stats' masked means).
_RATIOS = {
    "llds/activation_rate": "llds/num_units",
    "llds/gated_token_frac": "llds/num_preserving_tokens",
    "llds/mean_penalty": "llds/num_gated_tokens",
    "sapo/kl_mean": "sapo/num_active",
}


def mini_batch_rows(
    group_ids: torch.Tensor, ppo_mini_batch_size: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """Row indices (CPU int64) of each mini-batch of one pass over a rollout batch.

    ``group_ids`` (B,) marks the episodes of each question; the questions are shuffled by ``generator``
    and taken ``ppo_mini_batch_size`` at a time, each with all of its episodes, so a pass has
    ceil(questions / ppo_mini_batch_size) mini-batches (the last may be smaller).
    Raises ValueError when ``ppo_mini_batch_size`` < 1.
    """
    if ppo_mini_batch_size < 1:
        raise ValueError(f"ppo_mini_batch_size must be >= 1, got {ppo_mini_batch_size}")
    _, group = torch.unique(group_ids.detach().cpu(), return_inverse=True)
    num_groups = int(group.max()) + 1 if group.numel() else 0
    order = torch.randperm(num_groups, generator=generator)
    return [torch.cat([(group == g).nonzero().flatten() for g in chunk]) for chunk in order.split(ppo_mini_batch_size)]


def accumulate_mini_batch(
    model: Any,
    batch: RolloutBatch,
    rows: torch.Tensor,
    *,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    options: LossOptions,
    micro_batch_size: int,
    ref_logp: torch.Tensor | None = None,
    backward: Callable[[torch.Tensor], None] | None = None,
    split_grad_norm: bool = False,
) -> dict[str, float]:
    """Forward and backward of the mini-batch ``rows`` (int64 indices into ``batch``), in micro-batches
    of ``micro_batch_size`` episodes; gradients accumulate in the parameters' ``.grad`` (the caller
    zeroes them before and steps the optimizer after).

    ``old_logp`` / ``ref_logp`` are (B, T) over the whole batch, ``advantages`` (B,). ``backward``
    defaults to ``loss.backward()`` (the trainer passes ``accelerator.backward``). Returns the
    mini-batch's loss stats: shares of the loss summed, counts summed, ratios recombined exactly
    over the mini-batch (LLDS's by their counts, the policy stats by generated tokens).
    Under data parallelism each process normalises by its own mini-batch and the gradients are
    averaged across processes, as before.

    ``split_grad_norm``: also return ``grad_norm/regularizer`` and ``grad_norm/policy``, the L2 norms
    (before clipping) of the regulariser's gradient (LLDS: ``lam * L_LLDS``) and of the rest of the
    loss's (policy loss, KL, entropy), so a step where LLDS is the only gradient (a zero-variance
    mini-batch) shows as such. The regulariser's gradient is taken by one extra `torch.autograd.grad`
    per micro-batch where it is non-zero (about one more backward pass); under data parallelism the
    norms are this process's.
    """
    if micro_batch_size < 1:
        raise ValueError(f"micro_batch_size must be >= 1, got {micro_batch_size}")
    backward = backward if backward is not None else torch.Tensor.backward
    rows = rows.detach().cpu().long()
    mini = batch.select(rows)
    normalizers = mini_batch_normalizers(mini.loss_mask, advantages[rows.to(advantages.device)], options)
    total_tokens = max(int(mini.loss_mask.sum()), 1)
    sums: dict[str, float] = {}
    weighted: dict[str, float] = {}
    params = [p for p in model.parameters() if p.requires_grad]
    regularizer_grads: list[torch.Tensor] | None = None
    for part in rows.split(micro_batch_size):
        sub = batch.select(part)
        width = sub.input_ids.shape[1]
        logp, entropy = token_logprobs(model, sub, micro_batch_size, with_entropy=True)
        terms: dict[str, torch.Tensor] = {}
        loss, stats = grpo_llds_loss(
            logp,
            old_logp[part.to(old_logp.device), :width],
            advantages[part.to(advantages.device)],
            sub.loss_mask,
            ref_logp=None if ref_logp is None else ref_logp[part.to(ref_logp.device), :width],
            action_ids=sub.action_ids,
            answer_mask=sub.answer_mask,
            entropy=entropy,
            options=options,
            normalizers=normalizers,
            terms=terms,
        )
        regularizer = terms.get("regularizer")
        fired = regularizer is not None and regularizer.requires_grad and float(regularizer.detach()) != 0
        if split_grad_norm and fired:
            grads = torch.autograd.grad(regularizer, params, retain_graph=True, allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
            regularizer_grads = (
                grads if regularizer_grads is None else [a + g for a, g in zip(regularizer_grads, grads, strict=True)]
            )
        backward(loss)
        tokens = float(sub.loss_mask.sum())
        for key, value in stats.items():
            if key in _SHARES or key in _COUNTS:
                sums[key] = sums.get(key, 0.0) + value
            else:
                count_key = _RATIOS.get(key)
                weight = stats[count_key] if count_key is not None else tokens
                weighted[key] = weighted.get(key, 0.0) + value * weight
    merged = dict(sums)
    for key, total in weighted.items():
        count_key = _RATIOS.get(key)
        denominator = sums.get(count_key, 0.0) if count_key is not None else float(total_tokens)
        merged[key] = total / max(denominator, 1.0)
    if split_grad_norm:
        merged.update(_split_norms(params, regularizer_grads))
    return merged


def _split_norms(params: list[torch.Tensor], regularizer_grads: list[torch.Tensor] | None) -> dict[str, float]:
    """The regulariser's gradient norm and the norm of the rest (the accumulated .grad minus it)."""
    total = [torch.zeros_like(p) if p.grad is None else p.grad.detach() for p in params]
    if regularizer_grads is None:
        return {"grad_norm/regularizer": 0.0, "grad_norm/policy": float(_norm(total))}
    rest = [t - r for t, r in zip(total, regularizer_grads, strict=True)]
    return {"grad_norm/regularizer": float(_norm(regularizer_grads)), "grad_norm/policy": float(_norm(rest))}


def _norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.float()) for t in tensors]))
