"""Reducing a (B, L) per-token loss to a scalar over the loss mask, in the aggregation modes of verl.

The loss mask is read as boolean (nonzero = a generated token). Masked positions are excluded with
`torch.where`, never by multiplying, so inf/NaN on padding or observation tokens cannot leak in.
"""

from __future__ import annotations

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


def aggregate(
    values: torch.Tensor, mask: torch.Tensor, mode: str = "token-mean", *, max_len: int | None = None
) -> torch.Tensor:
    """Scalar from per-token `values` (B, L).

    - ``token-mean``: sum over all masked tokens / their count (Search-R1 / verl default).
    - ``seq-mean-token-mean``: each response's token mean, then the mean over responses that have any
      masked token (empty rows would otherwise be 0/0).
    - ``seq-mean-token-sum-norm`` (Dr. GRPO): each response's token sum / a constant ``max_len``
      (default L, the padded length), then the mean over all B responses. verl instead sums the rows;
      the mean keeps the scale independent of the micro-batch size, as in Dr. GRPO's 1/G.
    """
    check_choice("aggregation", mode, AGGREGATIONS)
    check_max_len(max_len)
    if mode == "token-mean":
        return masked_mean(values, mask)
    row_sums = masked_sum(values, mask, dim=-1)
    if mode == "seq-mean-token-mean":
        row_counts = mask.bool().sum(dim=-1)
        has_tokens = row_counts > 0
        row_means = row_sums / row_counts.clamp(min=1)
        return masked_mean(row_means, has_tokens)
    return row_sums.mean() / float(max_len if max_len is not None else values.shape[-1])
