"""GRPO group-relative advantages: one scalar per response from the rewards of its group."""

from __future__ import annotations

import torch

from trainer.losses._checks import check_nonnegative
from trainer.losses._dtypes import upcast


def group_advantages(
    rewards: torch.Tensor, group_ids: torch.Tensor, *, scale_by_std: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """(N,) advantages ``(r - mean_g) / (std_g + eps)`` per group g (responses to the same prompt).

    ``std_g`` is the unbiased standard deviation (``torch.std``, as in the authors' verl). A group of
    size 1 gets advantage 0: a lone response carries no relative signal. (verl instead sets mean 0,
    std 1 there, which passes the raw reward through.) ``scale_by_std=False`` is Dr. GRPO's mean-only
    centring. Vectorised with index_add over the groups; the ids may be any integers.
    """
    if rewards.dim() != 1 or group_ids.shape != rewards.shape:
        raise ValueError(
            f"rewards and group_ids must both be (N,); got {tuple(rewards.shape)} and {tuple(group_ids.shape)}"
        )
    check_nonnegative("eps", eps)
    rewards = rewards.detach()
    values = upcast(rewards)
    _, group = torch.unique(group_ids, return_inverse=True)
    num_groups = int(group.max().item()) + 1 if group.numel() else 0
    zeros = torch.zeros(num_groups, dtype=values.dtype, device=values.device)
    counts = zeros.index_add(0, group, torch.ones_like(values))
    means = zeros.index_add(0, group, values) / counts.clamp(min=1)
    centred = values - means[group]
    singleton = counts[group] < 2
    if scale_by_std:
        # Two-pass variance (sum of squared deviations) is as stable as torch.std.
        squares = zeros.index_add(0, group, centred.square())
        std = (squares / (counts - 1).clamp(min=1)).sqrt()
        centred = centred / (std[group] + eps)
    return torch.where(singleton, torch.zeros_like(centred), centred)
