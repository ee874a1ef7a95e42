"""Fairness (issue 11): a large request is searched in bounded chunks that interleave with other
requests, so a single query is not stuck behind it, and its answer is the one a whole search gives.
Real BM25 servers on loopback over the small world, plus the coalescer's scheduling on its own."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence

import httpx
import pytest

from agent_server.retrieval.query_coalescer import QueryCoalescer, fair_shares
from agent_server.retrieval.query_isolation import Row
from search_env.qa_data import load_qa
from search_env.server_process import ServerProcess
from tests.test_awkward_queries import CLAUSE_1300


def _serve(tmp_path_factory: pytest.TempPathFactory, name: str, *extra: str) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("logs") / f"{name}.log"
    # No cache, so every request is searched; a term limit over Lucene's, so CLAUSE_1300 fails in the backend.
    args = ["retriever", "--backend", "bm25", "--world", "small", "--cache-size", "0", "--max-query-terms", "100000"]
    server = ServerProcess([*args, *extra], log).start()
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def chunked_server(small_world, bm25_server, tmp_path_factory) -> Iterator[ServerProcess]:
    # After bm25_server: the index exists. Tiny chunks: a large request takes hundreds of rounds.
    yield from _serve(tmp_path_factory, "chunked", "--max-chunk-queries", "4")


@pytest.fixture(scope="module")
def whole_server(small_world, bm25_server, tmp_path_factory) -> Iterator[ServerProcess]:
    yield from _serve(tmp_path_factory, "whole", "--max-chunk-queries", "0")


def _questions(world, n: int, tag: str) -> list[str]:
    """n distinct queries (the server searches a repeated query once)."""
    base = [r.question for r in load_qa(world.qa["train"])]
    return [f"{base[i % len(base)]} {tag}{i}" for i in range(n)]


def _rows(answer: dict) -> list[list[tuple[str, float]]]:
    return [[(d["document"]["id"], d["score"]) for d in row] for row in answer["result"]]


# -- the server ---------------------------------------------------------------------------------------
def test_a_chunked_answer_equals_the_whole_one_query_by_query(chunked_server, whole_server, small_world):
    queries = _questions(small_world, 301, "eq")
    queries[150] = CLAUSE_1300  # fails in Lucene: an error for that query alone, chunked or not
    body = {"queries": queries, "topk": 5, "return_scores": True}
    chunked = httpx.post(chunked_server.url + "/retrieve", json=body, timeout=300).json()
    whole = httpx.post(whole_server.url + "/retrieve", json=body, timeout=300).json()
    assert len(chunked["result"]) == len(queries)
    for i, (a, b) in enumerate(zip(_rows(chunked), _rows(whole), strict=True)):
        assert a == b, f"query {i}: {queries[i]!r}"
    assert chunked["errors"] == whole["errors"] and [e["index"] for e in chunked["errors"]] == [150]
    batching = httpx.get(chunked_server.url + "/info").json()["batching"]
    assert batching["max_chunk_queries"] == 4 and batching["largest_batch"] <= 4
    assert batching["chunked_requests"] >= 1
    assert httpx.get(whole_server.url + "/info").json()["batching"]["max_chunk_queries"] is None


def test_a_single_query_is_answered_while_a_large_request_is_searched(chunked_server, small_world):
    large = _questions(small_world, 4096, "large")
    finished: list[str] = []

    def send_large() -> None:
        r = httpx.post(chunked_server.url + "/retrieve", json={"queries": large, "topk": 3}, timeout=600)
        r.raise_for_status()
        finished.append("large")

    sender = threading.Thread(target=send_large)
    sender.start()
    try:
        for _ in range(3000):  # until the large request is in the scheduler (bounded; no timing asserted)
            if httpx.get(chunked_server.url + "/info").json()["batching"]["waiting_queries"] > 0:
                break
            time.sleep(0.005)
        else:
            pytest.fail("the large request never reached the scheduler")
        single = {"query": "Who founded the city?", "topk": 3}
        r = httpx.post(chunked_server.url + "/retrieve", json=single, timeout=600)
        assert r.status_code == 200 and len(r.json()["result"][0]) == 3
        finished.append("single")
    finally:
        sender.join(timeout=600)
    assert finished == ["single", "large"]


# -- the scheduler --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("wants", "budget", "shares"),
    [
        ([4096, 1], 256, [255, 1]),
        ([4096, 4096], 256, [128, 128]),
        ([1, 1, 1], 2, [1, 1, 0]),  # more requests than queries in a round: the oldest first
        ([10, 300, 3], 64, [10, 51, 3]),
        ([5], 256, [5]),
        ([], 8, []),
    ],
)
def test_fair_shares(wants, budget, shares):
    assert fair_shares(wants, budget) == shares


def test_fair_shares_refuses_an_empty_budget():
    with pytest.raises(ValueError, match="at least 1"):
        fair_shares([3], 0)


def test_rounds_interleave_and_reassemble_in_order():
    """With a search that records its batches: a single query sent after a 40-query request is in one
    of the first two rounds, not after all of it, and the large answer is in order."""
    batches: list[list[str]] = []

    def search(queries: Sequence[str], k: int) -> list[Row]:
        batches.append(list(queries))
        return [[] if q.startswith("s") else [q] for q in queries]  # type: ignore[list-item]

    async def scenario() -> tuple[list[Row], list[Row], list[str]]:
        coalescer = QueryCoalescer(search, max_batch=1, max_wait_s=0, max_chunk=8)  # type: ignore[arg-type]
        order: list[str] = []

        async def tagged(name: str, queries: list[str]) -> list[Row]:
            rows = await coalescer.search(queries, 3)
            order.append(name)
            return rows

        large = asyncio.create_task(tagged("large", [f"q{i}" for i in range(40)]))
        await asyncio.sleep(0)  # the large request is queued first
        single = await tagged("single", ["s0"])
        rows = await large
        await coalescer.stop()
        return rows, single, order

    rows, single, order = asyncio.run(scenario())
    assert order == ["single", "large"]
    assert rows == [[f"q{i}"] for i in range(40)] and single == [[]]
    assert all(len(b) <= 8 for b in batches) and any("s0" in b for b in batches[:2])


def test_a_chunked_request_is_searched_shortest_first_and_answered_in_its_order():
    """Each chunk holds queries of similar length (less padding for a dense encoder), and the rows
    come back in the request's own order."""
    batches: list[list[str]] = []

    def search(queries: Sequence[str], k: int) -> list[Row]:
        batches.append(list(queries))
        return [[q] for q in queries]  # type: ignore[list-item]

    queries = [f"q{i}" + "x" * ((i * 7919) % 23) for i in range(40)]  # lengths in a scrambled order

    async def scenario() -> list[Row]:
        coalescer = QueryCoalescer(search, max_batch=1, max_wait_s=0, max_chunk=8)  # type: ignore[arg-type]
        rows = await coalescer.search(queries, 3)
        await coalescer.stop()
        return rows

    assert asyncio.run(scenario()) == [[q] for q in queries]
    assert len(batches) == 5
    for earlier, later in zip(batches, batches[1:], strict=False):
        assert max(map(len, earlier)) <= min(map(len, later))


def test_a_failing_round_fails_its_requests_and_later_ones_still_search():
    calls = 0

    def search(queries: Sequence[str], k: int) -> list[Row]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("backend down")
        return [[] for _ in queries]

    async def scenario() -> list[Row]:
        coalescer = QueryCoalescer(search, max_batch=1, max_wait_s=0, max_chunk=4)
        with pytest.raises(RuntimeError, match="backend down"):
            await coalescer.search([f"q{i}" for i in range(10)], 3)
        rows = await coalescer.search(["after"], 3)
        await coalescer.stop()
        return rows

    assert asyncio.run(scenario()) == [[]]
