"""Gymnasium `Text` spaces for the env's observations and actions.

gymnasium's default Text charset is alphanumeric only; ours is explicit: every printable character
of the Basic Multilingual Plane plus tab and newline, since wiki passages and model outputs hold
punctuation and non-ASCII text.
"""

from __future__ import annotations

from functools import lru_cache

from gymnasium.spaces import Text


@lru_cache(maxsize=1)
def text_charset() -> frozenset[str]:
    chars = {"\t", "\n"}
    chars.update(c for c in map(chr, range(0x20, 0x10000)) if c.isprintable())
    return frozenset(chars)


def text_space(max_length: int) -> Text:
    return Text(max_length=max_length, min_length=0, charset=text_charset())
