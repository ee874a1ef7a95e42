"""Gymnasium `Text` spaces for the env's observations and actions.

gymnasium's default Text charset is alphanumeric only; ours is explicit: every printable character
of the Basic Multilingual Plane plus tab and newline, since wiki passages and model outputs hold
punctuation and non-ASCII text.
"""

from __future__ import annotations

import copy
from functools import lru_cache

from gymnasium.spaces import Text


@lru_cache(maxsize=1)
def text_charset() -> frozenset[str]:
    chars = {"\t", "\n"}
    chars.update(c for c in map(chr, range(0x20, 0x10000)) if c.isprintable())
    return frozenset(chars)


@lru_cache(maxsize=8)
def _text_space(max_length: int) -> Text:
    return Text(max_length=max_length, min_length=0, charset=text_charset())


def text_space(max_length: int) -> Text:
    """A Text space over `text_charset()`; building one indexes ~55k characters (0.1 s), so spaces
    are built once per length and handed out as shallow copies with their own random generator."""
    space = copy.copy(_text_space(max_length))
    space._np_random = None  # seeded on first use, independently of the other copies
    return space
