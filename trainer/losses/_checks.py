"""Argument checks shared by the loss functions: every bad value fails early with its name in the message."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


def check_choice(name: str, value: object, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(repr(c) for c in choices)}")


def check_nonnegative(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}={value!r} must be a finite number >= 0")


def check_max_len(max_len: int | None) -> None:
    if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int) or max_len <= 0):
        raise ValueError(f"max_len={max_len!r} must be a positive int or None")


def check_same_shape(reference: torch.Tensor, **tensors: torch.Tensor | None) -> None:
    """All per-token tensors are (B, L) over the response positions."""
    if reference.dim() != 2:
        raise ValueError(f"per-token tensors must be (B, L); got shape {tuple(reference.shape)}")
    for name, tensor in tensors.items():
        if tensor is not None and tensor.shape != reference.shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {tuple(reference.shape)}")


def check_advantages(advantages: torch.Tensor, batch: int) -> None:
    """Advantages are one scalar per response (B,), shared by all of its tokens."""
    if advantages.shape != (batch,):
        raise ValueError(f"advantages has shape {tuple(advantages.shape)}, expected ({batch},) (one per response)")
