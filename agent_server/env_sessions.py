"""Live SearchQAEnv sessions of the env server, with a cap on their number and an idle expiry."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import gymnasium

from search_env.env_data import WORLD_PREFIX, load_env_records
from search_env.env_schema import SESSION_OPTIONS, SessionInfo
from search_env.qa_data import QARecord
from search_env.registration import ENV_IDS
from search_env.retriever_client import RetrieverClient
from search_env.search_qa_env import SearchQAEnv
from search_env.world.config import WORLD_PRESETS

log = logging.getLogger("agent_server.env")


class SessionError(Exception):
    """A request about sessions that cannot be served; `status` is its HTTP status."""

    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class UnknownSession(SessionError):
    status = 404


class UnknownEnvId(SessionError):
    status = 404


class BadSessionRequest(SessionError):
    status = 422


class TooManySessions(SessionError):
    status = 429


@dataclass
class Session:
    id: str
    env_id: str
    options: dict[str, Any]
    env: SearchQAEnv
    last_used: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

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


class SessionManager:
    def __init__(
        self,
        retriever: RetrieverClient,
        *,
        max_sessions: int = 1024,
        idle_timeout_s: float = 900.0,
        max_action_chars: int = 8192,
        max_obs_chars: int = 32768,
        datasets: dict[str, str] | None = None,
    ):
        self.retriever = retriever
        self.max_sessions = max_sessions
        self.idle_timeout_s = idle_timeout_s
        self.max_action_chars = max_action_chars
        self.max_obs_chars = max_obs_chars
        # Clients name data sets; only the server's operator maps names to files.
        self.datasets = dict(datasets or {})
        self._sessions: dict[str, Session] = {}
        self.created_total = 0
        self.expired_total = 0

    def __len__(self) -> int:
        return len(self._sessions)

    # -- create / find / close ----------------------------------------------------------------------
    def _data_source(self, data: Any) -> str:
        if not isinstance(data, str):
            raise BadSessionRequest(f"option 'data' must be a string, got {type(data).__name__}")
        if data in self.datasets:
            return self.datasets[data]
        preset = data.partition(":")[2] or "default"
        if data.split(":")[0] == WORLD_PREFIX and preset in WORLD_PRESETS:
            return data
        known = [f"world:{p}" for p in WORLD_PRESETS] + sorted(self.datasets)
        raise BadSessionRequest(f"unknown data set {data!r}: this server offers {known}")

    @staticmethod
    @lru_cache(maxsize=32)
    def _records(source: str, split: str, config: str | None, hops: tuple[int, ...] | None) -> tuple[QARecord, ...]:
        # Sessions of the same data share one parsed copy of its questions.
        return tuple(load_env_records(source, split=split, config=config, hops=hops))

    def create(self, env_id: str, options: dict[str, Any]) -> Session:
        if env_id not in ENV_IDS:
            raise UnknownEnvId(f"unknown env id {env_id!r}: known ids are {sorted(ENV_IDS)}")
        unknown = set(options) - SESSION_OPTIONS
        if unknown:
            raise BadSessionRequest(f"unknown env options {sorted(unknown)}: allowed are {sorted(SESSION_OPTIONS)}")
        if len(self._sessions) >= self.max_sessions:
            raise TooManySessions(
                f"too many live sessions (limit {self.max_sessions}): close some, or wait for idle ones to expire"
            )
        kwargs = dict(gymnasium.spec(env_id).kwargs) | options
        source = self._data_source(kwargs.pop("data", "world:default"))
        split = kwargs.pop("split", "train")
        hops = kwargs.pop("hops", None)
        limit = kwargs.pop("limit", None)
        try:
            hops_key = tuple(hops) if hops is not None else None
            records = self._records(source, split, kwargs.pop("data_config", None), hops_key)
            env = SearchQAEnv(
                list(records[:limit]),
                split=split,
                retriever=self.retriever,
                max_action_chars=self.max_action_chars,
                max_obs_chars=self.max_obs_chars,
                **kwargs,
            )
        except (ValueError, TypeError, KeyError, FileNotFoundError) as err:
            raise BadSessionRequest(f"cannot create {env_id} with {options}: {err}") from err
        session = Session(id=uuid.uuid4().hex, env_id=env_id, options=options, env=env)
        self._sessions[session.id] = session
        self.created_total += 1
        return session

    def get(self, session_id: str) -> Session:
        session = self._sessions.get(session_id)
        if session is None:
            raise UnknownSession(f"no session {session_id!r} (closed, expired, or never created)")
        session.last_used = time.monotonic()
        return session

    def close(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is None:
            raise UnknownSession(f"no session {session_id!r} (closed, expired, or never created)")
        session.env.close()

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    def expire_idle(self) -> int:
        """Close sessions idle for longer than the timeout (not one busy with a request)."""
        now = time.monotonic()
        stale = [
            s for s in self._sessions.values() if now - s.last_used > self.idle_timeout_s and not s.lock.locked()
        ]
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
