"""The `Policy` protocol: given an episode's transcript so far, write the next turn's text.

`act` is async so that remote policies (an OpenAI-compatible server) serve many episodes at once
and local ones can batch the turns of concurrent episodes (see `HFPolicy`).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from search_env.evaluation.transcript import Transcript

# Search-R1 cuts every turn after the first of these; policies stop generating there.
STOP_STRINGS: tuple[str, ...] = ("</search>", "</answer>")


@runtime_checkable
class Policy(Protocol):
    name: str

    async def act(self, transcript: Transcript) -> str:
        """The text of the next turn (it should contain one `<search>` or `<answer>` block)."""
        ...


def cut_at_stop(text: str, stop: Sequence[str] = STOP_STRINGS) -> str:
    """The text up to and including the earliest stop string (generation may run a token past it)."""
    ends = [text.find(s) + len(s) for s in stop if s in text]
    return text[: min(ends)] if ends else text


async def close_policy(policy: object) -> None:
    """Free a policy's resources (HTTP clients, models) if it has `aclose()` or `close()`."""
    for name in ("aclose", "close"):
        method = getattr(policy, name, None)
        if callable(method):
            result = method()
            if inspect.isawaitable(result):
                await result
            return
