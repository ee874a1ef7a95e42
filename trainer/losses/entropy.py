"""Token entropy of the policy from logits, and the entropy bonus term."""

from __future__ import annotations

import torch

from trainer.losses._checks import check_same_shape
from trainer.losses._dtypes import upcast
from trainer.losses.aggregation import aggregate


def entropy_from_logits(logits: torch.Tensor, *, chunk_size: int | None = 1024) -> torch.Tensor:
    """(..., V) logits -> (...) entropy ``logsumexp(z) - sum(softmax(z) * z)`` in float32.

    Computed over `chunk_size` positions at a time so the float32 (positions, V) temporaries stay
    bounded for large vocabularies; ``None`` does it in one pass.
    """
    if chunk_size is not None and chunk_size <= 0:
        raise ValueError(f"chunk_size={chunk_size!r} must be positive or None")
    flat = logits.reshape(-1, logits.shape[-1])
    step = flat.shape[0] if chunk_size is None else chunk_size
    parts = []
    for start in range(0, flat.shape[0], max(step, 1)):
        z = upcast(flat[start : start + step])
        lse = torch.logsumexp(z, dim=-1)
        probs = torch.exp(z - lse.unsqueeze(-1))
        # -inf logits (masked vocabulary) have probability 0; zero them so 0 * -inf cannot give NaN.
        finite_z = torch.where(torch.isneginf(z), torch.zeros_like(z), z)
        parts.append(lse - (probs * finite_z).sum(dim=-1))
    entropy = torch.cat(parts) if parts else flat.new_zeros(0, dtype=torch.float32)
    return entropy.reshape(logits.shape[:-1])


def entropy_bonus(
    entropy: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    coef: float,
    aggregation: str = "token-mean",
    max_len: int | None = None,
    normalizer: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(-coef * H, H)`` with H the aggregated entropy over the generated tokens; adding the first
    to a loss rewards exploration when coef > 0. ``normalizer`` replaces the aggregation's
    denominator (see `aggregate`)."""
    check_same_shape(entropy, loss_mask=loss_mask)
    mean_entropy = aggregate(upcast(entropy), loss_mask, aggregation, max_len=max_len, normalizer=normalizer)
    return -coef * mean_entropy, mean_entropy
