"""The retrieval server's engine: loads a backend in the background, then serves searches through
the query sanitiser, the result cache and the query coalescer, with a backend failure kept to the
query that causes it. Knows nothing of HTTP."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from agent_server.backends.base import Hit, Retriever
from agent_server.index_builds import BuildScope, build_scope
from agent_server.retrieval.query_coalescer import QueryCoalescer
from agent_server.retrieval.query_isolation import QueryFailure, Row, search_isolated
from agent_server.retrieval.result_cache import ResultCache
from agent_server.retrieval.served_corpora import served_corpora
from search_env.query_sanitizer import CHANGES, QueryRefused, sanitize_queries
from search_env.retrieval_schema import RetrievalLimits

# RetrievalLimits lived here before the env needed it too; its importers keep working.
__all__ = ["RetrievalLimits", "RetrievalService", "SearchAnswer"]

log = logging.getLogger("agent_server.retriever")

State = Literal["loading", "ready", "failed"]
_INLINE_CHARS = 65_536  # a request with more query text is fitted in a thread, off the event loop


@dataclass
class SearchAnswer:
    """Hits for each query; `errors` maps the index of a query the backend failed on (its hits: []) to why."""

    hits: list[list[Hit]]
    errors: dict[int, str] = field(default_factory=dict)


class RetrievalService:
    def __init__(
        self,
        loader: Callable[[], Retriever],
        *,
        limits: RetrievalLimits | None = None,
        cache_size: int = 100_000,
        coalesce_max_batch: int = 1024,
        coalesce_wait_ms: float = 1.0,
        max_chunk_queries: int | None = 256,
    ):
        """`max_chunk_queries`: the most queries in one backend call, so a large request is searched in
        chunks that interleave with other requests (None: each request whole; see query_coalescer)."""
        self._loader = loader
        # Index builds run by the loader: stopped on close, so a shutdown mid-build leaves nothing running.
        self._builds = BuildScope()
        self._loading: threading.Thread | None = None
        self.limits = limits or RetrievalLimits()
        self.state: State = "loading"
        self.error: str | None = None
        self.retriever: Retriever | None = None
        self.cache = ResultCache(cache_size)
        self.coalescer = QueryCoalescer(
            self._search_batch,
            max_batch=coalesce_max_batch,
            max_wait_s=coalesce_wait_ms / 1000,
            max_chunk=max_chunk_queries,
        )
        self.started = time.time()
        self.load_seconds: float | None = None
        self.corpora: list[dict[str, Any]] = []
        self.gc_frozen_objects = 0  # counted once, after the load freezes it
        # Every searching request, cached or not (the coalescer counts only what reaches the backend).
        self.requests_served = 0
        self.queries_served = 0
        # Queries that repeated an earlier one of the same request, answered from its row (for /info).
        self.duplicates_in_request = 0
        # Queries repaired (by kind), refused (strict) and failed in the backend, for /info.
        self.awkward: Counter[str] = Counter()

    # -- loading ----------------------------------------------------------------------------------
    def start_loading(self) -> threading.Thread:
        """Load in a thread so the server answers /health ('loading') while indexes are read or built."""
        thread = threading.Thread(target=self._load, name="retriever-loader", daemon=True)
        self._loading = thread
        thread.start()
        return thread

    def _load(self) -> None:
        """Load the retriever; any failure (a build's OSError on a full disk included) becomes state
        'failed' with its reason, which /health reports."""
        began = time.perf_counter()
        try:
            log.info("loading retriever...")
            with build_scope(self._builds):
                self.retriever = self._loader()
        except Exception as err:  # noqa: BLE001 - reported on /health, the process keeps serving it
            self.state, self.error = "failed", f"{type(err).__name__}: {err}"
            log.error("retriever failed to load: %s", self.error)
            return
        self.load_seconds = time.perf_counter() - began
        # What clients compare their data with (search_env.world_pairing): computed once, 2 MiB per corpus.
        self.corpora = served_corpora(self.retriever.describe())
        # What is loaded now lives as long as the server: out of the cyclic GC's reach, a full
        # collection no longer walks it (numba, torch and the index's objects, ~10^5-10^6) while
        # requests wait. With 32 single-query clients on bm25s, p99 135-166 ms -> 26-29 ms with GC off.
        gc.collect()
        gc.freeze()
        # Counted once: gc.get_freeze_count() walks the whole frozen list (~45 ms for 3M objects), which
        # every /info would otherwise pay on the event loop.
        self.gc_frozen_objects = gc.get_freeze_count()
        self.state = "ready"
        log.info(
            "retriever ready: %s, %d passages, loaded in %.1fs",
            self.retriever.name,
            len(self.retriever),
            self.load_seconds,
        )

    # -- searching --------------------------------------------------------------------------------
    async def prepare(self, queries: Sequence[str]) -> list[str]:
        """The queries as they will be searched: fitted to the limits, each repair counted.

        Raises QueryRefused (strict limits) for the first query that would need a repair, before
        anything is searched, so other clients' coalesced requests never see it.
        """
        try:
            if sum(len(q) for q in queries) > _INLINE_CHARS:
                # Counting terms costs ~1 ms per long query: a big request must not stall the event loop.
                fitted = await asyncio.to_thread(sanitize_queries, queries, self.limits)
            else:
                fitted = sanitize_queries(queries, self.limits)
        except QueryRefused:
            self.awkward["refused"] += 1
            raise
        for query in fitted:
            self.awkward.update(query.changes)
        return [query.text for query in fitted]

    def _search_batch(self, queries: Sequence[str], k: int) -> list[Row]:
        assert self.retriever is not None
        return search_isolated(self.retriever.search, queries, k)

    async def search(self, queries: list[str], k: int) -> SearchAnswer:
        """Hits for each (prepared) query: cached ones at once, the rest (deduplicated) through the coalescer.

        Raises BackendFailure when the backend cannot search at all; a query it fails on alone is
        answered in `errors` instead, and not cached.
        """
        assert self.retriever is not None
        self.requests_served += 1
        self.queries_served += len(queries)
        name = self.retriever.name
        found: dict[str, Row] = {}
        misses: dict[str, None] = {}  # ordered set: a query repeated in the request is searched once
        for q in queries:
            if q in found or q in misses:
                continue
            cached = self.cache.get(name, q, k)
            if cached is None:
                misses[q] = None
            else:
                found[q] = cached
        self.duplicates_in_request += len(queries) - len(found) - len(misses)
        if misses:
            for q, row in zip(misses, await self.coalescer.search(list(misses), k), strict=True):
                if not isinstance(row, QueryFailure):
                    self.cache.put(name, q, k, row)
                found[q] = row
        answer = SearchAnswer([])
        for i, q in enumerate(queries):
            row = found[q]
            if isinstance(row, QueryFailure):
                answer.errors[i] = f"the search backend failed on this query: {row.detail}"
                self.awkward["failed"] += 1
                row = []
            answer.hits.append(row)
        return answer

    async def close(self, build_grace_s: float = 30.0) -> None:
        """Stop serving; a build still running is stopped and waited for (up to `build_grace_s`), so its
        indexer subprocess is ended and its partial folder removed before the process exits."""
        await self.coalescer.stop()
        if self._loading is not None and self._loading.is_alive():
            log.info("stopping the index build in progress")
            self._builds.stop()
            await asyncio.to_thread(self._loading.join, build_grace_s)
        if self.retriever is not None:
            self.retriever.close()

    def info(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "error": self.error,
            "backend": None if self.retriever is None else self.retriever.describe(),
            "passages": None if self.retriever is None else len(self.retriever),
            "corpora": self.corpora,
            "load_seconds": self.load_seconds,
            "gc_frozen_objects": self.gc_frozen_objects,  # what was loaded, out of the GC's walks (_load)
            "uptime_seconds": round(time.time() - self.started, 1),
            "traffic": {"requests": self.requests_served, "queries": self.queries_served},
            "awkward_queries": {kind: self.awkward[kind] for kind in (*CHANGES, "refused", "failed")},
            "cache": self.cache.stats(),
            "deduplication": {
                "in_request": self.duplicates_in_request,
                "across_requests": self.coalescer.stats.duplicates,
                "duplicates": self.duplicates_in_request + self.coalescer.stats.duplicates,
            },
            "batching": self.coalescer.stats.as_dict()
            | self.coalescer.waiting()
            | {
                "max_batch": self.coalescer.max_batch,
                "max_wait_ms": self.coalescer.max_wait_s * 1000,
                "max_chunk_queries": self.coalescer.max_chunk,
            },
        }
