"""Duplicate queries (issue 13 part 3): a query repeated in a request, or sent by several concurrent
requests of one coalesced round, is searched once, and every copy gets the rows a separate search
gives. A real BM25 server on loopback over the small world (result cache off, so nothing is served
from it), plus the coalescer on its own."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

import httpx
import pytest

from agent_server.retrieval.query_coalescer import QueryCoalescer
from agent_server.retrieval.query_isolation import Row
from search_env.qa_data import load_qa
from search_env.server_process import ServerProcess


@pytest.fixture(scope="module")
def uncached_server(small_world, bm25_server, tmp_path_factory) -> Iterator[ServerProcess]:
    # After bm25_server: the index exists. A long gathering wait, so concurrent requests share rounds.
    log = tmp_path_factory.mktemp("logs") / "dedup.log"
    args = ["retriever", "--backend", "bm25", "--world", "small", "--cache-size", "0", "--coalesce-wait-ms", "50"]
    server = ServerProcess(args, log).start()
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def _rows(answer: dict) -> list[list[tuple[str, float]]]:
    return [[(d["document"]["id"], d["score"]) for d in row] for row in answer["result"]]


def _counts(server: ServerProcess) -> tuple[dict, int]:
    info = httpx.get(server.url + "/info").json()
    return info["deduplication"], info["batching"]["queries"]


def _post(server: ServerProcess, queries: list[str]) -> list[list[tuple[str, float]]]:
    body = {"queries": queries, "topk": 3, "return_scores": True}
    return _rows(httpx.post(server.url + "/retrieve", json=body, timeout=60).json())


def test_a_batch_with_duplicates_gives_the_rows_of_separate_searches(uncached_server, small_world):
    distinct = [f"{r.question} dup-a" for r in load_qa(small_world.qa["train"])[:12]]
    batch = [distinct[i % 5] if i % 3 else distinct[i % len(distinct)] for i in range(40)]
    duplicates = len(batch) - len(set(batch))
    assert duplicates > 0
    separate = {q: _post(uncached_server, [q])[0] for q in set(batch)}

    dedup0, searched0 = _counts(uncached_server)
    rows = _post(uncached_server, batch)
    dedup1, searched1 = _counts(uncached_server)

    assert rows == [separate[q] for q in batch]
    assert all(len(row) == 3 for row in rows)
    assert dedup1["in_request"] - dedup0["in_request"] == duplicates
    assert searched1 - searched0 == len(set(batch))


def test_concurrent_requests_for_one_query_share_its_search(uncached_server, small_world):
    # A question's G = 5 rollouts sending their first search at once, as an RL trainer's do.
    questions = [f"{r.question} dup-b" for r in load_qa(small_world.qa["train"])[:16]]
    sent = [q for q in questions for _ in range(5)]
    separate = {q: _post(uncached_server, [q])[0] for q in questions}

    async def fire() -> list[dict]:
        async with httpx.AsyncClient(base_url=uncached_server.url, timeout=60) as client:
            rs = await asyncio.gather(*(client.post("/retrieve", json={"query": q, "topk": 3}) for q in sent))
        return [r.json() for r in rs]

    dedup0, searched0 = _counts(uncached_server)
    answers = asyncio.run(fire())
    dedup1, searched1 = _counts(uncached_server)

    assert [[d["id"] for d in a["result"][0]] for a in answers] == [[i for i, _ in separate[q]] for q in sent]
    across = dedup1["across_requests"] - dedup0["across_requests"]
    assert across > 0  # some rollouts of a question landed in one round
    assert (searched1 - searched0) + across == len(sent)  # every query either searched or shared
    assert dedup1["duplicates"] == dedup1["in_request"] + dedup1["across_requests"]


def test_coalescer_searches_a_query_of_two_requests_once():
    calls: list[list[str]] = []

    def search(queries: Sequence[str], k: int) -> list[Row]:
        calls.append(list(queries))
        return [[q] * k for q in queries]  # type: ignore[misc]

    async def go() -> list[list[Row]]:
        coalescer = QueryCoalescer(search, max_wait_s=0.05)
        # Both enqueued before the worker first runs: one round.
        requests = [(["a", "b"], 2), (["b", "a", "c"], 1)]
        tasks = [asyncio.create_task(coalescer.search(qs, k)) for qs, k in requests]
        out = [await t for t in tasks]
        assert coalescer.stats.duplicates == 2
        await coalescer.stop()
        return out

    answers = asyncio.run(go())
    assert calls == [["a", "b", "c"]]
    assert answers == [[["a", "a"], ["b", "b"]], [["b"], ["a"], ["c"]]]
