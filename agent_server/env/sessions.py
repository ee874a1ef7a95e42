"""Live SearchQAEnv sessions of the env server: who owns them, a cap on their number, an idle expiry,
and the answers they recorded for retried requests.

Ownership: a session belongs to the bearer token it was created with (kept as a sha256 digest) or,
created without one, to every client that sends none. Any other caller is told the session does not
exist (404), so ids reveal nothing to those who may not use them; ids are random, 144 bits.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import gymnasium
from pydantic import ValidationError

from agent_server.env.datasets import DataRefused, DataRegistry
from agent_server.env.replay_log import ReplayLog, ReplayMismatch, fingerprint
from agent_server.env.world_check import RetrieverWorlds
from agent_server.serving.errors import ClientError, validation_message
from search_env.env_schema import SESSION_OPTIONS, SessionInfo, SessionOptions, StepResponse
from search_env.registration import ENV_IDS
from search_env.retriever_client import RetrieverClient
from search_env.search_qa_env import PromptTooLong, SearchQAEnv

log = logging.getLogger("agent_server.env")

# The flags that set the limits a reset or create can meet: its refusal names the one to raise.
LIMIT_FLAGS = {"max_prompt_chars": "--max-prompt-chars", "max_golden_chars": "--max-golden-chars"}
DEFAULT_MAX_GOLDEN_CHARS = 16384
REPLIES_PER_SESSION = 4  # a client retries its latest step; a few more cover a late duplicate
RECORDED_CREATES = 4096


def with_flag(err: Exception) -> str:
    """The error's message with the server flag that sets the limit it names, if it names one."""
    message = str(err)
    for setting, flag in LIMIT_FLAGS.items():
        if f"{setting}=" in message:
            return f"{message} (raise it with the env server's {flag})"
    return message


class SessionError(ClientError):
    """A request about sessions that cannot be served; `status` is its HTTP status."""


class UnknownSession(SessionError):
    status = 404


class UnknownEnvId(SessionError):
    status = 404


class ReusedRequestId(SessionError):
    status = 409


class BadSessionRequest(SessionError):
    status = 422


class WorldNotServed(SessionError):
    """Data of an embedded world the server's retriever does not serve: valid, but not with this retriever."""

    status = 409


class TooManySessions(SessionError):
    status = 429


@dataclass
class Session:
    id: str
    env_id: str
    options: dict[str, Any]
    env: SearchQAEnv
    owner: str | None = None
    last_used: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    replies: ReplayLog[StepResponse] = field(default_factory=lambda: ReplayLog(REPLIES_PER_SESSION))

    def describe(self) -> SessionInfo:
        return SessionInfo(
            session_id=self.id,
            env_id=self.env_id,
            options=self.options,
            num_questions=len(self.env.records),
            max_action_chars=self.env.max_action_chars,
            max_obs_chars=self.env.max_obs_chars,
            episode_active=self.env.question is not None and not self.env.done,
            turn=self.env.turn,
            idle_seconds=round(time.monotonic() - self.last_used, 3),
        )

    def reset(self, seed: int | None, options: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
        """env.reset(), all or nothing: if it raises, the env is as it was (episode, golds, turn,
        random state), so a refused reset cannot leave another question's golds behind."""
        env = self.env
        saved = dict(vars(env))
        rng = getattr(env, "_np_random", None)
        rng_state = rng.bit_generator.state if rng is not None else None
        try:
            return env.reset(seed=seed, options=options)
        except BaseException:
            # reset() rebinds attributes (it does not mutate them), so the saved ones are the old state.
            vars(env).clear()
            vars(env).update(saved)
            if rng is not None:
                rng.bit_generator.state = rng_state
            raise


class SessionManager:
    def __init__(
        self,
        retriever: RetrieverClient,
        registry: DataRegistry,
        *,
        max_sessions: int = 1024,
        idle_timeout_s: float = 900.0,
        max_action_chars: int = 8192,
        max_obs_chars: int = 32768,
        max_prompt_chars: int | None = None,
        max_golden_chars: int = DEFAULT_MAX_GOLDEN_CHARS,
        worlds: RetrieverWorlds | None = None,
    ):
        """`max_prompt_chars` bounds a reset's prompt (default: `max_obs_chars`), `max_golden_chars` a
        reset's own golden answers in all.

        Raises ValueError for a limit out of range (a prompt limit over `max_obs_chars` among them).
        """
        max_prompt_chars = max_obs_chars if max_prompt_chars is None else max_prompt_chars
        if not 1 <= max_prompt_chars <= max_obs_chars:
            raise ValueError(
                f"--max-prompt-chars must be in [1, --max-obs-chars={max_obs_chars}] (the prompt is the reset's "
                f"observation), got {max_prompt_chars}"
            )
        if max_golden_chars < 1:
            raise ValueError(f"--max-golden-chars must be >= 1, got {max_golden_chars}")
        self.retriever = retriever
        self.registry = registry
        self.worlds = worlds  # None: no world pairing check
        self.max_sessions = max_sessions
        self.idle_timeout_s = idle_timeout_s
        self.max_action_chars = max_action_chars
        self.max_obs_chars = max_obs_chars
        self.max_prompt_chars = max_prompt_chars
        self.max_golden_chars = max_golden_chars
        self._sessions: dict[str, Session] = {}
        self._creates: OrderedDict[tuple[str | None, str], tuple[str, asyncio.Task[SessionInfo]]] = OrderedDict()
        self.created_total = 0
        self.expired_total = 0

    def __len__(self) -> int:
        return len(self._sessions)

    # -- create -------------------------------------------------------------------------------------
    async def create(
        self, env_id: str, options: dict[str, Any], owner: str | None = None, request_id: str | None = None
    ) -> SessionInfo:
        """A new session's description; with `request_id`, a repeat gets the first one's answer.

        Raises UnknownEnvId, BadSessionRequest (options, data), WorldNotServed, TooManySessions,
        ReusedRequestId.
        """
        if request_id is None:
            return await self._create(env_id, options, owner)
        key, digest = (owner, request_id), fingerprint(env_id, options)
        recorded = self._creates.get(key)
        if recorded is not None:
            if recorded[0] != digest:
                raise ReusedRequestId(ReplayMismatch(request_id).message)
            task = recorded[1]
        else:
            task = asyncio.get_running_loop().create_task(self._create(env_id, options, owner))
            self._creates[key] = (digest, task)
            while len(self._creates) > RECORDED_CREATES:
                self._creates.popitem(last=False)
            # A refused create changed nothing: its id may be tried again.
            task.add_done_callback(lambda t: self._creates.pop(key, None) if t.cancelled() or t.exception() else None)
        # Shielded: a client that times out does not cancel it; its retry gets the result.
        return await asyncio.shield(task)

    async def _create(self, env_id: str, options: dict[str, Any], owner: str | None) -> SessionInfo:
        if env_id not in ENV_IDS:
            raise UnknownEnvId(f"unknown env id {env_id!r}: known ids are {sorted(ENV_IDS)}")
        unknown = set(options) - SESSION_OPTIONS
        if unknown:
            raise BadSessionRequest(f"unknown env options {sorted(unknown)}: allowed are {sorted(SESSION_OPTIONS)}")
        try:
            opts = SessionOptions.model_validate(dict(gymnasium.spec(env_id).kwargs) | options)
        except ValidationError as err:
            raise BadSessionRequest(f"invalid env options: {validation_message(err)}") from None
        self._check_room()
        try:
            key = self.registry.key(opts.data, opts.split, opts.data_config)
            records = await self.registry.records(key, opts.hops)
        except DataRefused as err:
            raise BadSessionRequest(err.message) from None
        # At create only: a session's data are fixed then (a reset only picks among its questions).
        mismatch = await self.worlds.mismatch(key.name) if self.worlds is not None else None
        if mismatch is not None:
            raise WorldNotServed(mismatch)
        too_many = await self.worlds.topk_violation(opts.topk) if self.worlds is not None else None
        if too_many is not None:  # every search of the session would be refused by the retriever
            raise BadSessionRequest(too_many)
        self._check_room()  # again: others may have filled it while the data loaded
        try:
            env = SearchQAEnv(
                list(records[: opts.limit]),
                split=key.split,
                retriever=self.retriever,
                topk=opts.topk,
                max_turns=opts.max_turns,
                prompt_template=opts.prompt_template,
                reward=opts.reward,
                format_score=opts.format_score,
                max_action_chars=self.max_action_chars,
                max_obs_chars=self.max_obs_chars,
                max_prompt_chars=self.max_prompt_chars,
                max_golden_chars=self.max_golden_chars,
            )
        except PromptTooLong as err:
            raise BadSessionRequest(f"cannot create {env_id}: {with_flag(err)}") from None
        except (ValueError, TypeError) as err:
            raise BadSessionRequest(f"cannot create {env_id}: {err}") from err
        session = Session(id=secrets.token_urlsafe(18), env_id=env_id, options=options, env=env, owner=owner)
        self._sessions[session.id] = session
        self.created_total += 1
        return session.describe()

    def _check_room(self) -> None:
        if len(self._sessions) >= self.max_sessions:
            raise TooManySessions(
                f"too many live sessions (limit {self.max_sessions}): close some, or wait for idle ones to expire"
            )

    # -- find / close -------------------------------------------------------------------------------
    def get(self, session_id: str, owner: str | None = None) -> Session:
        """The session, if `owner` may use it; UnknownSession otherwise (also for another's session)."""
        session = self._sessions.get(session_id)
        if session is None or session.owner != owner:
            raise UnknownSession(f"no session {session_id!r} (closed, expired, or never created)")
        session.last_used = time.monotonic()
        return session

    def close(self, session_id: str, owner: str | None = None) -> None:
        session = self.get(session_id, owner)
        self._sessions.pop(session.id, None)
        session.env.close()

    def sessions(self, owner: str | None = None) -> list[Session]:
        return [s for s in self._sessions.values() if s.owner == owner]

    def expire_idle(self) -> int:
        """Close sessions idle for longer than the timeout (not one busy with a request)."""
        now = time.monotonic()
        stale = [s for s in self._sessions.values() if now - s.last_used > self.idle_timeout_s and not s.lock.locked()]
        for s in stale:
            self._sessions.pop(s.id, None)
            s.env.close()
        if stale:
            self.expired_total += len(stale)
            log.info("expired %d idle sessions (%d live)", len(stale), len(self._sessions))
        return len(stale)

    async def reap_forever(self) -> None:
        interval = max(0.05, min(30.0, self.idle_timeout_s / 4))
        while True:
            await asyncio.sleep(interval)
            self.expire_idle()
