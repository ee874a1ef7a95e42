"""Reducing a (B, L) per-token loss to a scalar over the loss mask, in the aggregation modes of verl.

The loss mask is read as boolean (nonzero = a generated token). Masked positions are excluded with
`torch.where`, never by multiplying, so inf/NaN on padding or observation tokens cannot leak in.

Every mode is a numerator over a denominator. A lone call divides by the denominator of its own mask;
under gradient accumulation each micro-batch passes the whole mini-batch's denominator
(`aggregation_normalizer` of the mini-batch's mask) so that the micro-batch losses sum to the
mini-batch's loss whatever the micro-batch size: verl's `agg_loss(..., batch_num_tokens=,
global_batch_size=)` (verl/trainer/ppo/core_algos.py, fed by the engine's forward_backward_batch).
"""

from __future__ import annotations

import math

import torch

from trainer.losses._checks import check_choice, check_max_len

AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    kept = torch.where(mask.bool(), values, torch.zeros((), dtype=values.dtype, device=values.device))
    return kept.sum() if dim is None else kept.sum(dim=dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the masked positions; 0 (still attached to the graph) when the mask is empty."""
    count = mask.bool().sum().clamp(min=1)
    return masked_sum(values, mask) / count


def check_normalizer(normalizer: float | None) -> None:
    """A denominator passed in place of a call's own: None, or a finite number > 0."""
    if normalizer is None:
        return
    if isinstance(normalizer, bool) or not isinstance(normalizer, int | float) or not math.isfinite(normalizer):
        raise ValueError(f"normalizer={normalizer!r} must be a finite number > 0 or None")
    if normalizer <= 0:
        raise ValueError(f"normalizer={normalizer!r} must be > 0")


def aggregation_normalizer(mask: torch.Tensor, mode: str = "token-mean", *, max_len: int | None = None) -> float:
    """The denominator `aggregate` divides by for `mask` (B, L), at least 1 (an empty mask gives 0, not NaN).

    - ``token-mean``: the number of masked tokens (verl's ``batch_num_tokens``).
    - ``seq-mean-token-mean``: the number of rows with any masked token (verl's ``global_batch_size``).
    - ``seq-mean-token-sum-norm``: ``B * max_len`` (``max_len`` defaults to L, the padded length).
    """
    check_choice("aggregation", mode, AGGREGATIONS)
    check_max_len(max_len)
    on = mask.bool()
    if mode == "token-mean":
        count = int(on.sum())
    elif mode == "seq-mean-token-mean":
        count = int(on.any(dim=-1).sum())
    else:
        count = on.shape[0] * (max_len if max_len is not None else on.shape[-1])
    return float(max(count, 1))


def aggregate(
    values: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "token-mean",
    *,
    max_len: int | None = None,
    normalizer: float | None = None,
) -> torch.Tensor:
    """Scalar from per-token `values` (B, L).

    - ``token-mean``: sum over all masked tokens / their count (Search-R1 / verl default).
    - ``seq-mean-token-mean``: each response's token mean, summed over the responses that have any
      masked token (empty rows would otherwise be 0/0), / their count.
    - ``seq-mean-token-sum-norm`` (Dr. GRPO): each response's token sum, summed over all B rows, /
      ``B * max_len`` (``max_len`` a constant, default L). verl sums the rows without the 1/B; the
      mean keeps the scale independent of the batch size, as in Dr. GRPO's 1/G.

    ``normalizer``: a denominator to divide by instead of this mask's own (`aggregation_normalizer`);
    pass the whole mini-batch's so micro-batch losses add up to the mini-batch's. Raises ValueError
    for an unknown mode, a bad ``max_len`` or a normalizer that is not a number > 0.
    """
    check_choice("aggregation", mode, AGGREGATIONS)
    check_max_len(max_len)
    check_normalizer(normalizer)
    denominator = aggregation_normalizer(mask, mode, max_len=max_len) if normalizer is None else normalizer
    if mode == "token-mean":
        return masked_sum(values, mask) / denominator
    row_sums = masked_sum(values, mask, dim=-1)
    if mode == "seq-mean-token-mean":
        row_means = row_sums / mask.bool().sum(dim=-1).clamp(min=1)  # rows without tokens: 0 / 1 = 0
        return row_means.sum() / denominator
    return row_sums.sum() / denominator
