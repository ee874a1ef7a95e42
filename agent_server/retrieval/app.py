"""The retrieval server's app: its routes (agent_server.retrieval.routes) over a RetrievalService,
with the protections both servers share (agent_server.serving.app_builder)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from agent_server.backends.base import Retriever
from agent_server.retrieval.routes import router
from agent_server.retrieval.service import RetrievalService
from agent_server.serving.app_builder import build_app
from agent_server.serving.request_body import BodyLimits, items_for
from search_env.retrieval_schema import RetrievalLimits


def create_retrieval_app(
    loader: Callable[[], Retriever],
    *,
    limits: RetrievalLimits | None = None,
    cache_size: int = 100_000,
    coalesce_max_batch: int = 1024,
    coalesce_wait_ms: float = 1.0,
    max_chunk_queries: int | None = 256,
    token: str | None = None,
    body_limits: BodyLimits | None = None,
    replica_id: str | None = None,
) -> FastAPI:
    """A FastAPI app that loads `loader()` in the background at start-up and serves it.

    Bodies are held to `body_limits`, with `limits.max_body_bytes` (published in /info) as their size;
    `replica_id` names this server among its replicas (/info and every answer's X-Replica-Id).
    """
    limits = limits or RetrievalLimits()
    body_limits = body_limits or BodyLimits(max_items=items_for(limits.max_queries))
    body_limits = dataclasses.replace(body_limits, max_bytes=limits.max_body_bytes)
    service = RetrievalService(
        loader,
        limits=limits,
        cache_size=cache_size,
        coalesce_max_batch=coalesce_max_batch,
        coalesce_wait_ms=coalesce_wait_ms,
        max_chunk_queries=max_chunk_queries,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start_loading()
        yield
        await service.close()

    return build_app(
        title="searchgym retrieval server",
        description="Search-R1 compatible `/retrieve` over BM25 (pyserini), dense (faiss) or hybrid (RRF).",
        routers=[router],
        state=service,
        lifespan=lifespan,
        body_limits=body_limits,
        tokens=token,
        allow_msgpack=True,
        replica_id=replica_id,
    )
