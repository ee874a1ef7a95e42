"""Action spans (turns): contiguous runs of generated tokens between observation blocks."""

from __future__ import annotations

import torch


def action_ids_from_mask(loss_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) int64 ids: 0 where the mask is 0, else t+1 on the t-th contiguous run of generated tokens.

    The authors' `chunk_sums_vectorized`: a run starts where the mask is 1 and the previous position is
    not; the running count of starts numbers the runs. Observation (`<information>`) tokens are 0 in
    the mask, so each run is one model turn.
    """
    if loss_mask.dim() != 2:
        raise ValueError(f"loss_mask must be (B, L); got shape {tuple(loss_mask.shape)}")
    on = loss_mask.bool()
    previous = torch.zeros_like(on)
    previous[:, 1:] = on[:, :-1]
    starts = on & ~previous
    return torch.cumsum(starts.long(), dim=-1) * on.long()


def span_sums(values: torch.Tensor, action_ids: torch.Tensor) -> torch.Tensor:
    """(B, K+1) per-span sums of `values` (B, L), K the largest id; column 0 collects the id-0 tokens."""
    ids = action_ids.long()
    num_spans = int(ids.max().item()) + 1 if ids.numel() else 1
    sums = torch.zeros(values.shape[0], num_spans, dtype=values.dtype, device=values.device)
    return sums.scatter_add(1, ids, values)
