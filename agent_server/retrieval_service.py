"""The retrieval server's engine: loads a backend in the background, then serves searches through
the result cache and the query coalescer. Knows nothing of HTTP."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from agent_server.backends.base import Hit, Retriever
from agent_server.query_coalescer import QueryCoalescer
from agent_server.result_cache import ResultCache
from search_env.retrieval_schema import RetrievalLimits

# RetrievalLimits lived here before the env needed it too; its importers keep working.
__all__ = ["RetrievalLimits", "RetrievalService"]

log = logging.getLogger("agent_server.retriever")

State = Literal["loading", "ready", "failed"]


class RetrievalService:
    def __init__(
        self,
        loader: Callable[[], Retriever],
        *,
        cache_size: int = 100_000,
        coalesce_max_batch: int = 1024,
        coalesce_wait_ms: float = 1.0,
    ):
        self._loader = loader
        self.state: State = "loading"
        self.error: str | None = None
        self.retriever: Retriever | None = None
        self.cache = ResultCache(cache_size)
        self.coalescer = QueryCoalescer(
            self._search_batch, max_batch=coalesce_max_batch, max_wait_s=coalesce_wait_ms / 1000
        )
        self.started = time.time()
        self.load_seconds: float | None = None
        # Every searching request, cached or not (the coalescer counts only what reaches the backend).
        self.requests_served = 0
        self.queries_served = 0

    # -- loading ----------------------------------------------------------------------------------
    def start_loading(self) -> threading.Thread:
        """Load in a thread so the server answers /health ('loading') while indexes are read or built."""
        thread = threading.Thread(target=self._load, name="retriever-loader", daemon=True)
        thread.start()
        return thread

    def _load(self) -> None:
        began = time.perf_counter()
        try:
            log.info("loading retriever...")
            self.retriever = self._loader()
        except Exception as err:  # noqa: BLE001 - reported on /health, the process keeps serving it
            self.state, self.error = "failed", f"{type(err).__name__}: {err}"
            log.error("retriever failed to load: %s", self.error)
            return
        self.load_seconds = time.perf_counter() - began
        self.state = "ready"
        log.info(
            "retriever ready: %s, %d passages, loaded in %.1fs",
            self.retriever.name,
            len(self.retriever),
            self.load_seconds,
        )

    # -- searching --------------------------------------------------------------------------------
    def _search_batch(self, queries: list[str], k: int) -> list[list[Hit]]:
        assert self.retriever is not None
        return self.retriever.search(queries, k)

    async def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        """Hits for each query: cached ones at once, the rest (deduplicated) in one coalesced batch."""
        assert self.retriever is not None
        self.requests_served += 1
        self.queries_served += len(queries)
        name = self.retriever.name
        found: dict[str, list[Hit]] = {}
        misses: list[str] = []
        for q in queries:
            if q in found or q in misses:
                continue
            cached = self.cache.get(name, q, k)
            if cached is None:
                misses.append(q)
            else:
                found[q] = cached
        if misses:
            for q, hits in zip(misses, await self.coalescer.search(misses, k), strict=True):
                self.cache.put(name, q, k, hits)
                found[q] = hits
        return [found[q] for q in queries]

    async def close(self) -> None:
        await self.coalescer.stop()
        if self.retriever is not None:
            self.retriever.close()

    def info(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "error": self.error,
            "backend": None if self.retriever is None else self.retriever.describe(),
            "passages": None if self.retriever is None else len(self.retriever),
            "load_seconds": self.load_seconds,
            "uptime_seconds": round(time.time() - self.started, 1),
            "traffic": {"requests": self.requests_served, "queries": self.queries_served},
            "cache": self.cache.stats(),
            "batching": self.coalescer.stats.as_dict()
            | {"max_batch": self.coalescer.max_batch, "max_wait_ms": self.coalescer.max_wait_s * 1000},
        }
