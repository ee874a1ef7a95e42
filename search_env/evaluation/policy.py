"""What plays a benchmark: a text `Policy`, or an `EpisodePlayer` that plays whole episodes itself.

A `Policy` writes the next turn's text from the transcript so far; the runner
(search_env.evaluation.runner) plays its episodes. `act` is async so that remote policies (an
OpenAI-compatible server) serve many episodes at once. An `EpisodePlayer` plays a set's questions
its own way and reports one `EpisodeResult` each: the trainer's token-level player
(trainer.evaluation.EnginePlayer) is one, so a Hugging Face model is evaluated on the token stream
it is trained on, while the data sets, the JSONL and the table stay the harness's.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import gymnasium as gym

from search_env.evaluation.results import EpisodeResult
from search_env.evaluation.transcript import Transcript

# Search-R1 cuts every turn after the first of these; policies stop generating there.
STOP_STRINGS: tuple[str, ...] = ("</search>", "</answer>")


@runtime_checkable
class Policy(Protocol):
    name: str

    async def act(self, transcript: Transcript) -> str:
        """The text of the next turn (it should contain one `<search>` or `<answer>` block)."""
        ...


@runtime_checkable
class EpisodePlayer(Protocol):
    name: str

    async def play(
        self,
        make_env: Callable[[], gym.Env],
        *,
        data_set: str = "",
        indices: Sequence[int] | None = None,
        limit: int | None = None,
        seed: int | None = None,
        concurrency: int = 1,
        on_episode: Callable[[EpisodeResult], None] | None = None,
        progress: bool = True,
    ) -> list[EpisodeResult]:
        """Play `indices` (None: `select_indices(n, limit, seed)` over the env's questions), up to
        `concurrency` episodes at once, on envs from `make_env`; results in index order, each also
        passed to `on_episode` as it is done. The same contract as the runner's `evaluate`."""
        ...


async def close_policy(policy: object) -> None:
    """Free a policy's resources (HTTP clients, models) if it has `aclose()` or `close()`."""
    for name in ("aclose", "close"):
        method = getattr(policy, name, None)
        if callable(method):
            result = method()
            if inspect.isawaitable(result):
                await result
            return
