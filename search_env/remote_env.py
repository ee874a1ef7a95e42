"""`RemoteSearchEnv`: a `gymnasium.Env` played on an env server (`agent-server env`) over HTTP.

An external agent benchmarks with nothing but
    gymnasium.make("searchgym/RemoteSearchQA-v0", server_url="http://127.0.0.1:8001", data="world:default")
The session is created on the server at construction and closed by close().

Requests are retried on timeouts and 502/503/504; create and step carry a fresh request id per call,
the same on its retries, so a step the server applied but whose answer was lost is not applied again:
the retry gets the recorded answer.
"""

from __future__ import annotations

import contextlib
import operator
import secrets
from typing import Any, SupportsFloat

import gymnasium as gym

from search_env.env_schema import (
    CreateSessionRequest,
    ResetRequest,
    ResetResponse,
    SessionInfo,
    StepRequest,
    StepResponse,
)
from search_env.http_client import JsonHttpClient, RequestRefused, ServiceUnavailable
from search_env.text_spaces import text_space


class EnvServerUnavailable(ServiceUnavailable):
    """The env server (or, through it, the retrieval server) stayed unavailable after every retry."""


class EnvServerRefused(RequestRefused):
    """The env server refused the request (4xx), e.g. step after the end: `status` and its message."""


def new_request_id() -> str:
    """A fresh id for one logical call (its retries reuse it)."""
    return secrets.token_urlsafe(16)


class RemoteSearchEnv(gym.Env[str, str]):
    metadata = {"render_modes": []}

    def __init__(
        self,
        server_url: str = "http://127.0.0.1:8001",
        env_id: str = "searchgym/SearchQA-v0",
        *,
        token: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        **options: Any,
    ):
        self.http = JsonHttpClient(
            server_url,
            what="env server",
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            token=token,
            unavailable=EnvServerUnavailable,
            refused=EnvServerRefused,
        )
        request = CreateSessionRequest(env_id=env_id, options=options, request_id=new_request_id())
        self.session = SessionInfo.model_validate(self.http.request("POST", "/sessions", json=request.model_dump()))
        self.observation_space = text_space(self.session.max_obs_chars)
        self.action_space = text_space(self.session.max_action_chars)
        self._path = f"/sessions/{self.session.session_id}"

    @property
    def session_id(self) -> str:
        return self.session.session_id

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        seed = None if seed is None else operator.index(seed)  # numpy ints too; the schema takes Python ints
        body = ResetRequest(seed=seed, options=options).model_dump(exclude_none=True)
        answer = ResetResponse.model_validate(self.http.request("POST", self._path + "/reset", json=body))
        return answer.observation, answer.info

    def step(self, action: str) -> tuple[str, SupportsFloat, bool, bool, dict[str, Any]]:
        body = StepRequest(action=action, request_id=new_request_id()).model_dump()
        answer = StepResponse.model_validate(self.http.request("POST", self._path + "/step", json=body))
        return answer.observation, answer.reward, answer.terminated, answer.truncated, answer.info

    def close(self) -> None:
        if self._path:
            # Already expired, or the server is gone: nothing left to free there.
            with contextlib.suppress(ServiceUnavailable, RequestRefused):
                self.http.request("DELETE", self._path, retries=0)
            self._path = ""
        self.http.close()
        super().close()
