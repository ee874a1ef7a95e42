"""`SearchQAVectorEnv`: many SearchQAEnv episodes at once, with one `/retrieve` request per step.

gymnasium's SyncVectorEnv would step its sub-envs one by one, i.e. one HTTP round trip per searching
env; this subclass keeps SyncVectorEnv's reset, spaces, info batching and next-step autoreset, and
replaces only the stepping with `batched_step`. `gymnasium.make_vec("searchgym/SearchQA-v0", n)`
builds it (the registered vector entry point).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.vector.utils import concatenate, iterate

from search_env.env_data import load_env_records
from search_env.retriever_client import RetrieverClient
from search_env.search_qa_env import DEFAULT_RETRIEVER_URL, SearchQAEnv, batched_step


class SearchQAVectorEnv(SyncVectorEnv):
    def __init__(
        self,
        num_envs: int = 1,
        *,
        data: Any = "world:default",
        split: str = "train",
        data_config: str | None = None,
        hops: Any = None,
        limit: int | None = None,
        retriever_url: str = DEFAULT_RETRIEVER_URL,
        retriever_timeout: float = 30.0,
        retriever_retries: int = 3,
        **env_kwargs: Any,
    ):
        # One client and one copy of the questions for all sub-envs.
        self.retriever = RetrieverClient(retriever_url, timeout=retriever_timeout, retries=retriever_retries)
        records = load_env_records(data, split=split, config=data_config, hops=hops, limit=limit)

        def make() -> SearchQAEnv:
            return SearchQAEnv(records, split=split, retriever=self.retriever, **env_kwargs)

        super().__init__([make] * num_envs, copy=False, autoreset_mode=AutoresetMode.NEXT_STEP)

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = list(iterate(self.action_space, actions))
        resetting = [i for i in range(self.num_envs) if self._autoreset_envs[i]]
        stepping = [i for i in range(self.num_envs) if not self._autoreset_envs[i]]
        infos: dict[str, Any] = {}
        results = batched_step([self.envs[i] for i in stepping], [actions[i] for i in stepping], self.retriever)
        for i, (obs, reward, terminated, truncated, info) in zip(stepping, results, strict=True):
            self._env_obs[i] = obs
            self._rewards[i], self._terminations[i], self._truncations[i] = reward, terminated, truncated
            infos = self._add_info(infos, info, i)
        for i in resetting:
            self._env_obs[i], info = self.envs[i].reset()
            self._rewards[i], self._terminations[i], self._truncations[i] = 0.0, False, False
            infos = self._add_info(infos, info, i)
        self._observations = concatenate(self.single_observation_space, self._env_obs, self._observations)
        self._autoreset_envs = np.logical_or(self._terminations, self._truncations)
        return (
            self._observations,
            np.copy(self._rewards),
            np.copy(self._terminations),
            np.copy(self._truncations),
            infos,
        )

    def close_extras(self, **kwargs: Any) -> None:
        super().close_extras(**kwargs)
        self.retriever.close()
