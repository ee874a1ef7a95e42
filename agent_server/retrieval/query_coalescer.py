"""Coalesces concurrent retrieval requests into backend batches, off the event loop, and shares the
backend fairly between a large request and small ones. This is the one place searches are scheduled.

Hand-written because it is small and must fit our backends' `search(queries, k)` exactly: requests
wait while the single search worker is busy, and each round searches what is waiting as one batch.
Many single-query clients (SkyRL, GEM) thereby get pyserini's threaded batch_search / one faiss
search instead of one search each, and the loop never blocks.

Duplicates across the requests of a round are searched once and the row shared (issue 13): the
rows are the ones separate searches give, as a backend's rows depend only on their own query.

Fairness (issue 11): a round searches at most `max_chunk` queries. A request with more is searched
over several rounds, its rows kept in order and answered once all are in, so its answer is the one a
whole search gives. Each round's `max_chunk` is split max-min fairly across the waiting requests
(`fair_shares`): a request that needs less than an equal share gets all it needs, the large ones
split the rest equally, and with more requests than queries in a round the oldest go first. So a
single query that arrives while a 4,096-query request is being searched waits for the round in
flight and is searched in the next one: at most about two chunks' search time, instead of the whole
request's. Chosen over "small requests first" because a large request then still progresses under a
steady stream of small ones (it gets an equal share of every round), and over plain round-robin of
whole chunks because small requests share one round instead of each waiting for a chunk.
`max_chunk=None` searches every request whole, oldest first, in rounds of about `max_batch` queries
(the behaviour before chunking). Either way a new round gathers for up to `max_wait_s` while fewer
than `max_batch` queries wait.

A row of the answer is a query's hits or its QueryFailure (query_isolation): one query's failure is
its own, and only an exception from the search function (BackendFailure) fails the requests of that
round. A request whose client went away (its future cancelled) is dropped before its next round.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from agent_server.retrieval.query_isolation import QueryFailure, Row

SearchFn = Callable[[Sequence[str], int], list[Row]]


@dataclass
class _Pending:
    queries: list[str]
    k: int
    future: asyncio.Future[list[Row]]
    rows: list[Row] = field(default_factory=list)  # answered so far, in the request's order
    rounds: int = 0

    @property
    def left(self) -> int:
        return len(self.queries) - len(self.rows)


def _top(row: Row, k: int) -> Row:
    return row if isinstance(row, QueryFailure) else row[:k]


def fair_shares(wants: Sequence[int], budget: int) -> list[int]:
    """Max-min fair split of `budget` queries over requests wanting `wants` (oldest first).

    Each share is at most its want and the shares sum to min(budget, sum(wants)); a want under an
    equal share is met in full and the rest is split equally, leftovers going to the oldest.
    Raises ValueError for a budget under 1.
    """
    if budget < 1:
        raise ValueError(f"a round's budget must be at least 1 query, got {budget}")
    shares = [0] * len(wants)
    open_ = [i for i, want in enumerate(wants) if want > 0]
    left = budget
    while open_ and left > 0:  # each pass meets a want or spends the budget: at most len(wants) + 1
        each = max(1, left // len(open_))
        still = []
        for i in open_:
            give = min(each, wants[i] - shares[i], left)
            shares[i] += give
            left -= give
            if shares[i] < wants[i]:
                still.append(i)
        open_ = still
    return shares


@dataclass
class CoalescerStats:
    batches: int = 0
    requests: int = 0
    queries: int = 0
    largest_batch: int = 0
    search_seconds: float = 0.0
    chunked_requests: int = 0  # requests searched over more than one round
    duplicates: int = 0  # queries of a round that repeated another request's, searched once

    def as_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "requests": self.requests,
            "queries": self.queries,
            "largest_batch": self.largest_batch,
            "mean_batch": self.queries / self.batches if self.batches else 0.0,
            "search_seconds": round(self.search_seconds, 3),
            "chunked_requests": self.chunked_requests,
            "duplicates": self.duplicates,
        }


class QueryCoalescer:
    def __init__(
        self,
        search: SearchFn,
        *,
        max_batch: int = 1024,
        max_wait_s: float = 0.001,
        max_chunk: int | None = 256,
    ):
        """`max_chunk`: the most queries in one backend call (None: unlimited, each request whole).

        Raises ValueError for a `max_chunk` under 1.
        """
        if max_chunk is not None and max_chunk < 1:
            raise ValueError(f"max_chunk must be at least 1 (or None for unlimited), got {max_chunk}")
        self._search = search
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_chunk = max_chunk
        self._waiting: list[_Pending] = []  # arrival order; a request stays until it is answered
        self._arrived = asyncio.Event()
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

    def waiting(self) -> dict[str, int]:
        """Requests not yet answered and their queries not yet searched (for /info)."""
        live = [p for p in self._waiting if not p.future.done()]
        return {"waiting_requests": len(live), "waiting_queries": sum(p.left for p in live)}

    async def search(self, queries: list[str], k: int) -> list[Row]:
        """Hits (or a QueryFailure) for each of `queries`, searched together with whatever else waits.

        Raises what the search function raises (BackendFailure) for a round this request is in.
        """
        if not queries:
            return []
        self.start()
        # A request over one chunk is searched shortest query first: each chunk then holds queries of
        # similar length, so a dense encoder pads them about as little as one whole call would
        # (sentence-transformers sorts by length only within a call: in request order, 256-query chunks
        # left the server at 0.72-0.79x of one in-process call). Rows depend only on their own query,
        # so the answer is unchanged once put back in order.
        order = None
        if self.max_chunk is not None and len(queries) > self.max_chunk:
            order = sorted(range(len(queries)), key=lambda i: len(queries[i]))
            queries = [queries[i] for i in order]
        future: asyncio.Future[list[Row]] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Pending(list(queries), k, future))
        self._arrived.set()
        rows = await future
        if order is None:
            return rows
        in_request_order: list[Row] = [[] for _ in rows]
        for position, i in enumerate(order):
            in_request_order[i] = rows[position]
        return in_request_order

    def _prune(self) -> None:
        self._waiting = [p for p in self._waiting if not p.future.done()]

    async def _gather(self) -> None:
        """Wait for a request, then up to `max_wait_s` more while fewer than `max_batch` queries wait."""
        self._prune()
        while not self._waiting:
            self._arrived.clear()
            await self._arrived.wait()
            self._prune()
        deadline = time.monotonic() + self.max_wait_s
        while sum(p.left for p in self._waiting) < self.max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                break
        self._prune()

    def _plan(self) -> list[tuple[_Pending, int]]:
        """This round's requests and how many of each one's next queries it searches."""
        if self.max_chunk is None:
            plan: list[tuple[_Pending, int]] = []
            size = 0
            for p in self._waiting:
                if plan and size >= self.max_batch:
                    break
                plan.append((p, p.left))
                size += p.left
            return plan
        shares = fair_shares([p.left for p in self._waiting], self.max_chunk)
        return [(p, n) for p, n in zip(self._waiting, shares, strict=True) if n]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._gather()
            plan = self._plan()
            if not plan:
                continue
            parts = [(p, p.queries[len(p.rows) : len(p.rows) + n]) for p, n in plan]
            queries = [q for _, part in parts for q in part]
            # Concurrent clients often send the same query (a question's G rollouts): search it once.
            unique = list(dict.fromkeys(queries))
            k = max(p.k for p, _ in plan)
            started = time.perf_counter()
            try:
                found = await loop.run_in_executor(self._executor, self._search, unique, k)
            except Exception as err:  # noqa: BLE001 - handed to every request in this round
                for p, _ in plan:
                    if not p.future.done():
                        p.future.set_exception(err)
                continue
            self._record(len(unique), time.perf_counter() - started)
            self.stats.duplicates += len(queries) - len(unique)
            by_query = dict(zip(unique, found, strict=True))
            results = [by_query[q] for q in queries]
            start = 0
            for p, part in parts:
                p.rows.extend(_top(row, p.k) for row in results[start : start + len(part)])
                p.rounds += 1
                start += len(part)
                if p.left == 0 and not p.future.done():
                    self.stats.requests += 1
                    self.stats.chunked_requests += p.rounds > 1
                    p.future.set_result(p.rows)

    def _record(self, n_queries: int, seconds: float) -> None:
        s = self.stats
        s.batches += 1
        s.queries += n_queries
        s.largest_batch = max(s.largest_batch, n_queries)
        s.search_seconds += seconds
