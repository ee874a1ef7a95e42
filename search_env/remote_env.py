"""`RemoteSearchEnv`: a `gymnasium.Env` played on an env server (`agent-server env`) over HTTP.

An external agent benchmarks with nothing but
    gymnasium.make("searchgym/RemoteSearchQA-v0", server_url="http://127.0.0.1:8001", data="world:default")
The session is created on the server at construction and closed by close().

Requests are retried on timeouts and 502/503/504; create and step carry a fresh request id per call,
the same on its retries, so a step the server applied but whose answer was lost is not applied again:
the retry gets the recorded answer. With `outage_wait_s`, a server that is down (restarting) is
waited for that long (the http_client's outage wait, logged).

A restarted env server has lost its sessions; so has one that expired an idle session. The env keeps
what it needs to rebuild its episode: the reset's arguments and every action with its answer. When
the server answers 404 for the session, it creates a new one, resets it to the same question, replays
the actions (their answers must match the recorded ones: the env is deterministic given question and
actions; if not, EpisodeReplayMismatch), then makes the pending call. A replay costs one retrieval per
past search; nothing the client holds is lost.

Several env servers: `server_url` may be a list, or one comma-separated string (search_env.http_client
routes over them). A session is created on the least loaded healthy server and stays there, every
call on it pinned to that server; when that server dies (refuses connections, times out, answers
5xx) while another is healthy, the episode is rebuilt on another one by the same replay (checked
against the record). A server that is only briefly unable (a 503 while its own retriever restarts)
is taken for dead too: the replay is correct, only slower than waiting.

`batched_remote_step` steps many RemoteSearchEnvs that share one client in one
`POST /sessions/step` request per server: each session keeps its own request ids, record and rebuild-by-replay
(a session the server lost is rebuilt and stepped alone), and a session the server refuses ends
truncated with the refusal in its info, leaving the others' steps standing. `RemoteSearchVectorEnv`
(search_env.remote_vector_env) and the trainer's rollout engine step through it.
"""

from __future__ import annotations

import contextlib
import logging
import operator
import secrets
from collections.abc import Sequence
from typing import Any, SupportsFloat

import gymnasium as gym

from search_env.env_schema import (
    BatchStepItem,
    BatchStepRequest,
    BatchStepResponse,
    CreateSessionRequest,
    ResetRequest,
    ResetResponse,
    SessionInfo,
    StepRequest,
    StepResponse,
)
from search_env.http_client import JsonHttpClient, ReplicaLost, RequestRefused, ServiceUnavailable
from search_env.text_spaces import text_space
from search_env.turn_budget import check_turn_budget


class EnvServerUnavailable(ServiceUnavailable):
    """The env server (or, through it, the retrieval server) stayed unavailable after every retry."""


class EnvServerRefused(RequestRefused):
    """The env server refused the request (4xx), e.g. step after the end: `status` and its message."""


class EpisodeReplayMismatch(RuntimeError):
    """A replayed episode (its session lost to a server restart) answered differently from the original."""


log = logging.getLogger("search_env.remote_env")

StepResult = tuple[str, SupportsFloat, bool, bool, dict[str, Any]]
#: the env server's default `--max-batch`: steps per `POST /sessions/step`
DEFAULT_MAX_BATCH = 4096


def new_request_id() -> str:
    """A fresh id for one logical call (its retries reuse it)."""
    return secrets.token_urlsafe(16)


def env_server_client(
    server_url: str | Sequence[str],
    *,
    token: str | None = None,
    timeout: float = 60.0,
    retries: int = 3,
    backoff: float = 0.5,
    outage_wait_s: float = 0.0,
) -> JsonHttpClient:
    """The HTTP client of an env server, or of several (a list or a comma-separated string): the
    project's one retry policy, search_env.http_client. Raises ValueError for a list naming no URL."""
    return JsonHttpClient(
        server_url,
        what="env server",
        timeout=timeout,
        retries=retries,
        backoff=backoff,
        outage_wait_s=outage_wait_s,
        token=token,
        unavailable=EnvServerUnavailable,
        refused=EnvServerRefused,
    )


class RemoteSearchEnv(gym.Env[str, str]):
    metadata = {"render_modes": []}

    def __init__(
        self,
        server_url: str | Sequence[str] = "http://127.0.0.1:8001",
        env_id: str = "searchgym/SearchQA-v0",
        *,
        token: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        outage_wait_s: float = 0.0,
        http: JsonHttpClient | None = None,
        **options: Any,
    ):
        """Creates the session. `http`: a client shared with other sessions of the same server (then
        server_url, token, timeout, retries, backoff and outage_wait_s are its own, and close() leaves
        it open). Raises EnvServerRefused (a bad option: 422) or EnvServerUnavailable."""
        if "max_turns" in options:  # refused here, before a session is asked for, with the server's message
            check_turn_budget(options["max_turns"])
        self._owns_http = http is None
        self.http = http or env_server_client(
            server_url, token=token, timeout=timeout, retries=retries, backoff=backoff, outage_wait_s=outage_wait_s
        )
        self._env_id = env_id
        self._options = options
        self._path = ""
        self._replica = ""  # the base URL of the server holding the session
        self._open_session()
        self.observation_space = text_space(self.session.max_obs_chars)
        self.action_space = text_space(self.session.max_action_chars)
        # The episode so far, to rebuild it on a new session: how it was reset, and each step's answer.
        self._reset_body: dict[str, Any] | None = None
        self._reset_answer: ResetResponse | None = None
        self._steps: list[tuple[str, StepResponse]] = []
        self.rebuilds = 0

    def _open_session(self) -> None:
        request = CreateSessionRequest(env_id=self._env_id, options=self._options, request_id=new_request_id())
        body, self._replica = self.http.request_routed("POST", "/sessions", json=request.model_dump())
        self.session = SessionInfo.model_validate(body)
        self._path = f"/sessions/{self.session.session_id}"

    @property
    def session_id(self) -> str:
        return self.session.session_id

    @property
    def server_url(self) -> str:
        """The base URL of the env server that holds the session (one of `http.base_urls`)."""
        return self._replica

    def _post(self, suffix: str, body: dict[str, Any]) -> Any:
        return self.http.request("POST", self._path + suffix, json=body, replica=self._replica)

    def _call(self, suffix: str, body: dict[str, Any]) -> Any:
        """POST to the session. A session the server does not know (it restarted, or expired the
        session) is rebuilt once; one whose server died (ReplicaLost: another server is healthy), even
        during a replay, is rebuilt on another, once per server at most; then the call is made on
        the new one. Raises as reset()/step() do; EnvServerUnavailable when every server was lost."""
        rebuilt_lost_session = False
        servers_lost = 0
        rebuild = False
        while True:
            try:
                if rebuild:
                    self._rebuild()
                return self._post(suffix, body)
            except EnvServerRefused as err:
                if err.status != 404 or rebuilt_lost_session or rebuild:
                    raise
                rebuilt_lost_session = True
                log.warning("env server at %s lost session %s (%s): rebuilding it", self._replica, self.session_id, err)
            except ReplicaLost as err:
                servers_lost += 1
                if servers_lost > len(self.http.base_urls):
                    raise EnvServerUnavailable(f"every env server was lost in turn: {err}") from err
                log.warning("session %s: %s; rebuilding it on another env server", self.session_id, err)
            rebuild = True

    def _rebuild(self) -> None:
        """A new session with the episode so far replayed on it; EpisodeReplayMismatch if it differs."""
        lost = self.session_id
        self._open_session()
        self.rebuilds += 1
        if self._reset_body is None or self._reset_answer is None:
            log.warning("session %s replaced by %s (no episode to replay)", lost, self.session_id)
            return
        question = self._reset_answer.info.get("question_id")
        where = f"episode of question {question!r} (session {lost}, rebuilt as {self.session_id})"
        reset = ResetResponse.model_validate(self._post("/reset", self._replay_reset_body()))
        if reset.observation != self._reset_answer.observation:
            raise EpisodeReplayMismatch(f"{where}: the replayed reset gave another prompt")
        for turn, (action, recorded) in enumerate(self._steps, 1):
            body = StepRequest(action=action, request_id=new_request_id()).model_dump()
            again = StepResponse.model_validate(self._post("/step", body))
            same = (again.observation, again.reward, again.terminated, again.truncated) == (
                recorded.observation,
                recorded.reward,
                recorded.terminated,
                recorded.truncated,
            )
            if not same:
                raise EpisodeReplayMismatch(f"{where}: turn {turn} replayed gave another answer than recorded")
        log.warning("%s: replayed the reset and %d steps", where, len(self._steps))

    def _replay_reset_body(self) -> dict[str, Any]:
        """The reset as made; one that drew its question from the session's own random state (no
        seed, no options) is replayed by the question's id, which a fresh session cannot draw again."""
        assert self._reset_body is not None and self._reset_answer is not None
        if self._reset_body.get("seed") is None and not self._reset_body.get("options"):
            question = self._reset_answer.info.get("question_id")
            if question is not None:
                return ResetRequest(options={"id": question}).model_dump(exclude_none=True)
        return self._reset_body

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Start an episode on the server. Raises EnvServerRefused (e.g. 422: a bad option),
        EnvServerUnavailable, or EpisodeReplayMismatch (never here: nothing to replay yet)."""
        super().reset(seed=seed)
        seed = None if seed is None else operator.index(seed)  # numpy ints too; the schema takes Python ints
        body = ResetRequest(seed=seed, options=options).model_dump(exclude_none=True)
        self._reset_body, self._reset_answer, self._steps = None, None, []
        answer = ResetResponse.model_validate(self._call("/reset", body))
        self._reset_body, self._reset_answer = body, answer
        return answer.observation, answer.info

    def step(self, action: str) -> tuple[str, SupportsFloat, bool, bool, dict[str, Any]]:
        """One turn on the server. Raises EnvServerRefused (e.g. 409: after the end),
        EnvServerUnavailable, or EpisodeReplayMismatch (the session was lost and could not be rebuilt)."""
        body = StepRequest(action=action, request_id=new_request_id()).model_dump()
        return self._took(action, StepResponse.model_validate(self._call("/step", body)))

    def _took(self, action: str, answer: StepResponse) -> StepResult:
        """Record a turn the server answered (for a replay) and return it as gymnasium's 5-tuple."""
        self._steps.append((action, answer))
        return answer.observation, answer.reward, answer.terminated, answer.truncated, answer.info

    def close(self) -> None:
        if self._path:
            # Already expired, or the server is gone: nothing left to free there.
            with contextlib.suppress(ServiceUnavailable, RequestRefused):
                self.http.request("DELETE", self._path, retries=0, outage_wait_s=0, replica=self._replica)
            self._path = ""
        if self._owns_http:
            self.http.close()
        super().close()


def _refused_step(env: RemoteSearchEnv, status: int, detail: str) -> StepResult:
    """A session the server refused a step of (after a rebuild, if it was lost): its episode ends here,
    truncated with reward 0 and the refusal in its info, so the other sessions of the batch go on."""
    log.warning(
        "env server refused a step of session %s (%d: %s): its episode ends truncated", env.session_id, status, detail
    )
    return "", 0.0, False, True, {"error": detail, "error_status": status}


def batched_remote_step(
    envs: Sequence[RemoteSearchEnv], actions: Sequence[str], *, max_batch: int = DEFAULT_MAX_BATCH
) -> list[StepResult]:
    """One turn of each env in one `POST /sessions/step` per server and `max_batch` envs; the results in order.

    The envs must share one client (`RemoteSearchEnv(http=...)`, as RemoteSearchVectorEnv's sub-envs
    do); each batch goes to the server holding its sessions. Each item carries a fresh request id, the
    same on the client's retries (a retried batch gets the recorded answers of the items already
    applied). A session the server lost (404), or whose server died while another is healthy, is
    rebuilt by replay and stepped alone (`RemoteSearchEnv.step`); a step the server refuses (409,
    422...), or a rebuild that fails, ends that env's episode truncated with `info["error"]` and
    `info["error_status"]`. Raises EnvServerUnavailable (the server, or its retriever, stayed down
    past the retries and outage wait: no session was changed) and ValueError (envs of several clients).
    """
    if len(envs) != len(actions):
        raise ValueError(f"{len(envs)} envs but {len(actions)} actions")
    if len({id(env.http) for env in envs}) > 1:
        raise ValueError("batched_remote_step needs envs that share one client (RemoteSearchEnv(http=...))")
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    by_server: dict[str, list[int]] = {}
    for i, env in enumerate(envs):
        by_server.setdefault(env.server_url, []).append(i)
    results: dict[int, StepResult] = {}
    for server, indices in by_server.items():
        for start in range(0, len(indices), max_batch):
            chunk = [(i, envs[i], actions[i]) for i in indices[start : start + max_batch]]
            results.update(_step_on(server, chunk))
    return [results[i] for i in range(len(envs))]


def _step_alone(env: RemoteSearchEnv, action: str) -> StepResult:
    """`env.step(action)` (its own path: a rebuild by replay where needed); a refusal or a replay that
    differs ends its episode truncated."""
    try:
        return env.step(action)
    except EnvServerRefused as err:
        return _refused_step(env, err.status, err.message)
    except EpisodeReplayMismatch as err:
        return _refused_step(env, 409, str(err))


def _step_on(server: str, chunk: list[tuple[int, RemoteSearchEnv, str]]) -> dict[int, StepResult]:
    """One `POST /sessions/step` of `chunk` (index, env, action) to `server`, which holds their sessions."""
    items = [
        BatchStepItem(session_id=env.session_id, action=action, request_id=new_request_id()) for _, env, action in chunk
    ]
    body = BatchStepRequest(steps=items).model_dump()
    try:
        answer = BatchStepResponse.model_validate(
            chunk[0][1].http.request("POST", "/sessions/step", json=body, replica=server)
        )
    except ReplicaLost as err:
        log.warning("%s: its %d sessions are rebuilt on another env server", err, len(chunk))
        return {i: _step_alone(env, action) for i, env, action in chunk}
    if len(answer.results) != len(chunk):
        raise EnvServerUnavailable(f"env server answered {len(answer.results)} results for {len(chunk)} steps")
    results: dict[int, StepResult] = {}
    for (i, env, action), item in zip(chunk, answer.results, strict=True):
        if item.result is not None:
            results[i] = env._took(action, item.result)
        elif item.error is not None and item.error.status == 404:
            results[i] = _step_alone(env, action)  # the 404 again, the rebuild by replay, then the step
        elif item.error is not None:
            results[i] = _refused_step(env, item.error.status, item.error.detail)
        else:
            raise EnvServerUnavailable(f"env server answered neither a result nor an error for {env.session_id}")
    return results
