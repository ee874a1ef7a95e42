"""Loss arithmetic runs in at least float32: bf16/fp16 log-probs are upcast, float64 stays float64."""

from __future__ import annotations

import torch


def upcast(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))
