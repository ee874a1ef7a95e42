"""`RemoteSearchVectorEnv`: many env-server sessions at once, with one HTTP request per step.

    envs = gymnasium.make_vec("searchgym/RemoteSearchQA-v0", num_envs=64,
                              server_url="http://127.0.0.1:8001", data="world:default")

Its sub-envs are RemoteSearchEnvs that share one client: each keeps its own session, request ids,
outage wait and rebuild-by-replay, and a step of all of them is one `POST /sessions/step`
(`batched_remote_step`; their searches then go to the retriever in one batch too). Autoreset is
gymnasium's next-step mode, as SearchQAVectorEnv's (search_env.batched_vector_env). A session the
`server_url` may name several env servers (a list or a comma-separated string): the sessions are
spread over them, each step batched per server, and a session whose server dies is rebuilt on
another (search_env.remote_env). A session the
server refuses a step of ends that sub-env's episode truncated with `info["error"]` (the next step
resets it); the other sessions go on. The env server has no batched create or reset: creating the
sessions and resetting each one are one request per session.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from search_env.batched_vector_env import BatchedStepVectorEnv, StepResult
from search_env.remote_env import DEFAULT_MAX_BATCH, RemoteSearchEnv, batched_remote_step, env_server_client
from search_env.turn_budget import check_turn_budget


class RemoteSearchVectorEnv(BatchedStepVectorEnv):
    def __init__(
        self,
        num_envs: int = 1,
        *,
        server_url: str | Sequence[str] = "http://127.0.0.1:8001",
        env_id: str = "searchgym/SearchQA-v0",
        token: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        outage_wait_s: float = 0.0,
        max_batch: int = DEFAULT_MAX_BATCH,
        **options: Any,
    ):
        """Creates `num_envs` sessions of `env_id` with the env `options` (data, split, topk, max_turns...),
        at most `max_batch` steps per request (the server's --max-batch). Raises EnvServerRefused (a bad
        option: 422; too many sessions: 429) or EnvServerUnavailable; sessions created before the
        failure are closed."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if "max_turns" in options:  # before any session is created
            check_turn_budget(options["max_turns"])
        self.max_batch = max_batch
        self.http = env_server_client(
            server_url, token=token, timeout=timeout, retries=retries, backoff=backoff, outage_wait_s=outage_wait_s
        )
        made: list[RemoteSearchEnv] = []

        def make() -> RemoteSearchEnv:
            made.append(RemoteSearchEnv(env_id=env_id, http=self.http, **options))
            return made[-1]

        try:
            super().__init__([make] * num_envs)
        except BaseException:
            for env in made:
                env.close()
            self.http.close()
            raise

    @property
    def session_ids(self) -> list[str]:
        return [env.session_id for env in self.envs]

    def _step_batch(self, envs: list[Any], actions: list[Any]) -> list[StepResult]:
        return batched_remote_step(envs, actions, max_batch=self.max_batch)

    def close_extras(self, **kwargs: Any) -> None:
        super().close_extras(**kwargs)  # closes each session
        self.http.close()
