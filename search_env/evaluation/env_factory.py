"""Env factories for the runner: one call makes one env for one concurrent episode.

The runner accepts any `Callable[[], gymnasium.Env]`; these two build the searchgym envs:
- `LocalEnvFactory`: `searchgym/SearchQA-v0` in process, all envs sharing the set's questions
  (loaded once) and one retriever client;
- `RemoteEnvFactory`: `searchgym/RemoteSearchQA-v0`, sessions on an env server that loads the
  questions itself from the set's data options.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym

import search_env  # noqa: F401  (registers the env ids)
from search_env.evaluation.datasets import EvalSet
from search_env.qa_data import QARecord
from search_env.registration import REMOTE_ID
from search_env.retriever_client import RetrieverClient

LOCAL_ID = "searchgym/SearchQA-v0"
EnvFactory = Callable[[], gym.Env]


class LocalEnvFactory:
    def __init__(
        self,
        records: Sequence[QARecord],
        retriever_url: str,
        *,
        topk: int = 3,
        max_turns: int = 4,
        env_id: str = LOCAL_ID,
        **env_kwargs: Any,
    ):
        self.records = list(records)
        self.retriever = RetrieverClient(retriever_url)
        self.env_id = env_id
        self.kwargs = {"topk": topk, "max_turns": max_turns, **env_kwargs}

    def __call__(self) -> gym.Env:
        return gym.make(self.env_id, data=self.records, retriever=self.retriever, **self.kwargs)

    async def aclose(self) -> None:
        # The envs do not own the shared client; its async connections belong to the runner's loop.
        await self.retriever.aclose()


class RemoteEnvFactory:
    def __init__(self, server_url: str, eval_set: EvalSet, *, topk: int = 3, max_turns: int = 4, **options: Any):
        self.server_url = server_url
        self.options = {**eval_set.env_options(), "topk": topk, "max_turns": max_turns, **options}

    def __call__(self) -> gym.Env:
        return gym.make(REMOTE_ID, server_url=self.server_url, **self.options)
