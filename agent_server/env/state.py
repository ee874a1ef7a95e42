"""What the env server holds: the retriever client all sessions share, the sessions, the data sets
offered, its limits, and the probe behind its /health."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from agent_server.env.datasets import DataRegistry
from agent_server.env.sessions import SessionManager
from search_env.http_client import RequestRefused, ServiceUnavailable
from search_env.retriever_client import RetrieverClient

log = logging.getLogger("agent_server.env")


async def _retriever_problem(retriever: RetrieverClient, timeout_s: float) -> str | None:
    """None if the retriever answers its /health as ready (or has none, as Search-R1's own server);
    else what is wrong, in words that name no host or path (/health is open to anyone)."""
    try:
        body = await retriever.http.arequest("GET", "/health", retries=0, timeout=timeout_s)
    except RequestRefused:
        return None  # it answers, only not /health: searches will tell
    except (ServiceUnavailable, ValueError) as err:  # ValueError: an answer that is not JSON
        log.warning("health: %s", err)
        return "the retrieval server is unreachable or not ready; steps that search answer 503"
    status = body.get("status") if isinstance(body, dict) else None
    if status in (None, "ready"):
        return None
    log.warning("health: the retrieval server says %r", status)
    return "the retrieval server is not ready; steps that search answer 503"


@dataclass
class EnvServer:
    retriever: RetrieverClient
    sessions: SessionManager
    datasets: DataRegistry
    max_batch: int  # steps in one batched-step request
    health_timeout_s: float = 2.0
    _probe: asyncio.Task[str | None] | None = field(default=None, repr=False)

    async def retriever_problem(self) -> str | None:
        """What is wrong with the retriever (see `_retriever_problem`), None if nothing is."""
        if self._probe is None or self._probe.done():
            # One probe at a time, however many callers: /health is open, the retriever should not pay for it.
            self._probe = asyncio.get_running_loop().create_task(
                _retriever_problem(self.retriever, self.health_timeout_s)
            )
        return await asyncio.shield(self._probe)

    def limits(self) -> dict[str, float | int]:
        """The limits shown in /info."""
        return {
            "max_sessions": self.sessions.max_sessions,
            "idle_timeout_s": self.sessions.idle_timeout_s,
            "max_action_chars": self.sessions.max_action_chars,
            "max_obs_chars": self.sessions.max_obs_chars,
            "max_prompt_chars": self.sessions.max_prompt_chars,
            "max_golden_chars": self.sessions.max_golden_chars,
            "max_batch": self.max_batch,
        }
