"""`SearchQAVectorEnv`: many SearchQAEnv episodes at once, with one `/retrieve` request per step.

The sub-envs share one retriever client and are stepped together by `batched_step`
(search_env.batched_vector_env: SyncVectorEnv's reset, spaces, info batching and next-step
autoreset). `gymnasium.make_vec("searchgym/SearchQA-v0", n)` builds it (the registered vector
entry point).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from search_env.batched_vector_env import BatchedStepVectorEnv, StepResult
from search_env.env_data import load_env_records
from search_env.retriever_client import RetrieverClient
from search_env.search_qa_env import DEFAULT_RETRIEVER_URL, SearchQAEnv, batched_step
from search_env.turn_budget import check_turn_budget


class SearchQAVectorEnv(BatchedStepVectorEnv):
    def __init__(
        self,
        num_envs: int = 1,
        *,
        data: Any = "world:default",
        split: str = "train",
        data_config: str | None = None,
        hops: Any = None,
        limit: int | None = None,
        retriever_url: str | Sequence[str] = DEFAULT_RETRIEVER_URL,
        retriever_timeout: float = 30.0,
        retriever_retries: int = 3,
        **env_kwargs: Any,
    ):
        if "max_turns" in env_kwargs:  # before the questions load and the client opens
            check_turn_budget(env_kwargs["max_turns"])
        # One client and one copy of the questions for all sub-envs.
        self.retriever = RetrieverClient(retriever_url, timeout=retriever_timeout, retries=retriever_retries)
        records = load_env_records(data, split=split, config=data_config, hops=hops, limit=limit)

        def make() -> SearchQAEnv:
            return SearchQAEnv(records, split=split, retriever=self.retriever, **env_kwargs)

        super().__init__([make] * num_envs)

    def _step_batch(self, envs: list[Any], actions: list[Any]) -> list[StepResult]:
        return batched_step(envs, actions, self.retriever)

    def close_extras(self, **kwargs: Any) -> None:
        super().close_extras(**kwargs)
        self.retriever.close()
