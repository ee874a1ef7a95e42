"""`BatchedStepVectorEnv`: a SyncVectorEnv whose sub-envs are stepped together by one batched call.

gymnasium's SyncVectorEnv steps its sub-envs one by one, i.e. one HTTP round trip per sub-env; this
subclass keeps SyncVectorEnv's reset, spaces, info batching and next-step autoreset (a sub-env whose
episode ended is reset by the next `step`, which ignores its action and answers reward 0), and replaces
only the stepping of the sub-envs that are not resetting with `_step_batch`. SearchQAVectorEnv (one
`/retrieve` request per step) and RemoteSearchVectorEnv (one `/sessions/step` request per step)
implement it.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.vector.utils import concatenate, iterate

StepResult = tuple[Any, Any, bool, bool, dict[str, Any]]


class BatchedStepVectorEnv(SyncVectorEnv):
    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]]):
        super().__init__(env_fns, copy=False, autoreset_mode=AutoresetMode.NEXT_STEP)

    @abstractmethod
    def _step_batch(self, envs: list[gym.Env], actions: list[Any]) -> list[StepResult]:
        """One step of each of `envs` (in order), in one batched call."""

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = list(iterate(self.action_space, actions))
        resetting = [i for i in range(self.num_envs) if self._autoreset_envs[i]]
        stepping = [i for i in range(self.num_envs) if not self._autoreset_envs[i]]
        infos: dict[str, Any] = {}
        results = self._step_batch([self.envs[i] for i in stepping], [actions[i] for i in stepping]) if stepping else []
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
