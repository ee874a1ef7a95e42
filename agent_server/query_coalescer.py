"""Coalesces concurrent retrieval requests into one backend batch, off the event loop.

Hand-written because it is small and must fit our backends' `search(queries, k)` exactly: requests
queue while the single search worker is busy, and the next round takes everything queued (up to
`max_batch` queries) as one batch. Many single-query clients (SkyRL, GEM) thereby get pyserini's
threaded batch_search / one faiss search instead of one search each, and the loop never blocks.
A row of the answer is a query's hits or its QueryFailure (query_isolation): one query's failure is
its own, and only an exception from the search function (BackendFailure) fails every request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from agent_server.query_isolation import QueryFailure, Row

SearchFn = Callable[[Sequence[str], int], list[Row]]


@dataclass
class _Pending:
    queries: list[str]
    k: int
    future: asyncio.Future[list[Row]]


def _top(row: Row, k: int) -> Row:
    return row if isinstance(row, QueryFailure) else row[:k]


@dataclass
class CoalescerStats:
    batches: int = 0
    requests: int = 0
    queries: int = 0
    largest_batch: int = 0
    search_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "requests": self.requests,
            "queries": self.queries,
            "largest_batch": self.largest_batch,
            "mean_batch": self.queries / self.batches if self.batches else 0.0,
            "search_seconds": round(self.search_seconds, 3),
        }


class QueryCoalescer:
    def __init__(self, search: SearchFn, *, max_batch: int = 1024, max_wait_s: float = 0.001):
        self._search = search
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        # One worker thread: backends are called one batch at a time (pyserini threads inside).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="search")
        self._worker: asyncio.Task[None] | None = None
        self.stats = CoalescerStats()

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def search(self, queries: list[str], k: int) -> list[Row]:
        """Hits (or a QueryFailure) for each of `queries`, searched together with whatever else is queued."""
        self.start()
        future: asyncio.Future[list[Row]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(queries, k, future))
        return await future

    async def _collect(self) -> list[_Pending]:
        batch = [await self._queue.get()]
        size = len(batch[0].queries)
        deadline = time.monotonic() + self.max_wait_s
        while size < self.max_batch:
            if self._queue.empty():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                item = self._queue.get_nowait()
            batch.append(item)
            size += len(item.queries)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            batch = [p for p in batch if not p.future.cancelled()]  # clients that went away
            if not batch:
                continue
            queries = [q for p in batch for q in p.queries]
            k = max(p.k for p in batch)
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self._search, queries, k)
            except Exception as err:  # noqa: BLE001 - handed to every waiting request
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(err)
                continue
            self._record(batch, len(queries), time.perf_counter() - started)
            start = 0
            for p in batch:
                part = results[start : start + len(p.queries)]
                start += len(p.queries)
                if not p.future.done():
                    p.future.set_result([_top(row, p.k) for row in part])

    def _record(self, batch: list[_Pending], n_queries: int, seconds: float) -> None:
        s = self.stats
        s.batches += 1
        s.requests += len(batch)
        s.queries += n_queries
        s.largest_batch = max(s.largest_batch, n_queries)
        s.search_seconds += seconds
