"""The env server's app: its routes (agent_server.env.routes) over an EnvServer (sessions, data sets,
one retriever client), with the protections both servers share (agent_server.serving.app_builder)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI

from agent_server.env.datasets import DEFAULT_WORLDS, DataRegistry
from agent_server.env.routes import router
from agent_server.env.sessions import DEFAULT_MAX_GOLDEN_CHARS, RECORDED_CREATES, SessionManager
from agent_server.env.state import EnvServer
from agent_server.env.world_check import DEFAULT_INFO_TTL_S, RetrieverWorlds
from agent_server.serving.app_builder import build_app
from agent_server.serving.request_body import BodyLimits, items_for
from search_env.retriever_client import RetrieverClient


def create_env_app(
    retriever_url: str | Sequence[str],
    *,
    max_sessions: int = 1024,
    max_sessions_per_token: int | None = None,
    recorded_creates: int = RECORDED_CREATES,
    idle_timeout_s: float = 900.0,
    max_action_chars: int = 8192,
    max_obs_chars: int = 32768,
    max_prompt_chars: int | None = None,
    max_golden_chars: int = DEFAULT_MAX_GOLDEN_CHARS,
    max_batch: int = 4096,
    datasets: dict[str, str] | None = None,
    worlds: Iterable[str] = DEFAULT_WORLDS,
    data_cache: int = 8,
    retriever_timeout: float = 30.0,
    retriever_retries: int = 2,
    health_timeout_s: float = 2.0,
    token: str | Sequence[str] | None = None,
    body_limits: BodyLimits | None = None,
    retriever_info_ttl_s: float = DEFAULT_INFO_TTL_S,
    warn_unserved_worlds: bool = False,
    replica_id: str | None = None,
) -> FastAPI:
    """The env server's app. `datasets` maps names clients may give to files, folders or Hugging Face
    names; `worlds` are the embedded presets served; `token` one or more accepted bearer tokens;
    request bodies are held to `body_limits` (agent_server.serving.request_guard). A session on an
    embedded world the retriever does not serve is refused with 409 (agent_server.env.world_check; its
    `/info` kept `retriever_info_ttl_s` seconds); `warn_unserved_worlds` logs a warning at start-up for
    each of `worlds` the retriever cannot answer. `retriever_url` may name several retrieval replicas
    (a list or a comma-separated string); `replica_id` names this server among its own replicas
    (/info and every answer's X-Replica-Id).

    A reset's prompt is held to `max_prompt_chars` (default `max_obs_chars`; its size is computed
    before it is built) and its own golden answers to `max_golden_chars` in all. One bearer token holds at
    most `max_sessions_per_token` live sessions (default: `max_sessions` shared fairly among the tokens).

    Raises ValueError for a data set or world that cannot be offered, or a limit out of range.
    """
    registry = DataRegistry(datasets, worlds, cache_size=data_cache)
    body_limits = body_limits or BodyLimits(max_items=items_for(max_batch))
    retriever = RetrieverClient(retriever_url, timeout=retriever_timeout, retries=retriever_retries, backoff=0.25)
    manager = SessionManager(
        retriever,
        registry,
        max_sessions=max_sessions,
        max_sessions_per_token=max_sessions_per_token,
        tenants=len([token] if isinstance(token, str) else list(token or [])),
        recorded_creates=recorded_creates,
        idle_timeout_s=idle_timeout_s,
        max_action_chars=max_action_chars,
        max_obs_chars=max_obs_chars,
        max_prompt_chars=max_prompt_chars,
        max_golden_chars=max_golden_chars,
        worlds=RetrieverWorlds(retriever.base_url, info_ttl_s=retriever_info_ttl_s),
    )
    server = EnvServer(retriever, manager, registry, max_batch=max_batch, health_timeout_s=health_timeout_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(manager.reap_forever())]
        if warn_unserved_worlds and manager.worlds is not None and registry.worlds:
            # In the background: the server answers at once, the warnings follow when the worlds are checked.
            tasks.append(loop.create_task(manager.worlds.warn_unserved(registry.worlds)))
        yield
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await retriever.aclose()

    return build_app(
        title="searchgym env server",
        description="SearchQAEnv sessions over HTTP; `RemoteSearchEnv` is its Gymnasium client.",
        routers=[router],
        state=server,
        lifespan=lifespan,
        body_limits=body_limits,
        tokens=token,
        replica_id=replica_id,
    )
