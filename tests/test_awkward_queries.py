"""Awkward query text and backend failures at the retrieval server, live on loopback.

The default server repairs what it can (lone surrogates, over-long queries, more distinct terms
than Lucene takes) and searches it, counting each in /info; `--strict` refuses the same with a 422
before any search; a query the backend still fails on (here: the term limit raised over Lucene's)
is answered alone with an error, and every other query of its batch, other clients' included, gets
its hits.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator

import httpx
import pytest

from search_env.qa_data import load_qa
from search_env.query_sanitizer import sanitize_query
from search_env.retrieval_schema import RetrievalLimits
from search_env.server_process import ServerProcess

_LETTERS = "abcdefghijklmnopqrstuvwxyzàáâãäåæçèéêëìíîïðñò"  # 45 letters: 2,025 two-letter words
TWO_LETTER_WORDS = ["".join(pair) for pair in itertools.product(_LETTERS, repeat=2)]
CLAUSE_1300 = " ".join(TWO_LETTER_WORDS[:1300])  # 3,899 characters: under the length limit
IDEOGRAPHS_2000 = "".join(chr(0x4E00 + i) for i in range(2000))  # one Lucene term per character
SURROGATE = b'{"queries": ["Name \\ud83d"], "topk": 3}'  # valid JSON, not text
SURROGATE_INSIDE = b'{"queries": ["river \\udc00 founded city"], "topk": 3}'
PUNCTUATION = 'AND OR NOT ( ) [ ] { } ~ * ? : \\ / ^ " + - && || ! @ # $ % , . ; <> = |'


def _post(server: ServerProcess, body: dict | bytes) -> httpx.Response:
    if isinstance(body, bytes):
        return httpx.post(server.url + "/retrieve", content=body, headers={"content-type": "application/json"})
    return httpx.post(server.url + "/retrieve", json=body, timeout=60)


def _ids(server: ServerProcess, query: str, topk: int = 3) -> list[str]:
    r = _post(server, {"queries": [query], "topk": topk})
    assert r.status_code == 200, r.text
    return [doc["id"] for doc in r.json()["result"][0]]


def _awkward(server: ServerProcess) -> dict[str, int]:
    return httpx.get(server.url + "/info").json()["awkward_queries"]


def _serve(tmp_path_factory: pytest.TempPathFactory, name: str, *extra: str) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("logs") / f"{name}.log"
    server = ServerProcess(["retriever", "--backend", "bm25", "--world", "small", *extra], log).start()
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def isolating_server(small_world, bm25_server, tmp_path_factory) -> Iterator[ServerProcess]:
    # After bm25_server: the small world's BM25 index exists, so this one only loads it. The term
    # limit far over Lucene's 1,024 clauses, so a query of many terms reaches the backend and fails
    # there; a wide coalescing window so concurrent requests share a batch; no cache, so every request
    # is searched.
    yield from _serve(
        tmp_path_factory, "isolating", "--max-query-terms", "100000", "--coalesce-wait-ms", "500", "--cache-size", "0"
    )


# -- lenient by default: repaired, searched, counted --------------------------------------------------
@pytest.mark.parametrize("backend", ["bm25", "dense", "hybrid"])
def test_awkward_queries_are_answered_by_every_backend(backend, request):
    server = request.getfixturevalue(f"{backend}_server")
    for body in [
        {"queries": [CLAUSE_1300, IDEOGRAPHS_2000, "x" * 4097, "river " * 1000, PUNCTUATION]},
        SURROGATE,
        SURROGATE_INSIDE,
    ]:
        r = _post(server, body)
        assert r.status_code == 200, r.text
        assert "errors" not in r.json()
        if backend != "bm25":  # a dense index ranks anything: the punctuation too
            assert all(len(row) == 3 for row in r.json()["result"])


def test_repaired_queries_are_searched_as_their_repaired_text(bm25_server):
    limits = RetrievalLimits()
    for query in [CLAUSE_1300, IDEOGRAPHS_2000, "river founded " * 400]:
        repaired, problem = sanitize_query(query, limits)
        assert problem is not None and repaired.text != query
        assert _ids(bm25_server, query) == _ids(bm25_server, repaired.text)
    surrogate = _post(bm25_server, SURROGATE_INSIDE).json()["result"][0]
    assert [d["id"] for d in surrogate] == _ids(bm25_server, "river \ufffd founded city")


def test_first_terms_of_a_clause_limited_query_are_kept(bm25_server, small_world):
    question = load_qa(small_world.qa["test"])[0].question
    # The question first, then 1,300 more distinct terms: searched on its first 1,024 terms, it finds
    # what the question alone finds.
    padded = question + " " + CLAUSE_1300
    assert sanitize_query(padded, RetrievalLimits())[0].changes == ("clause_limited",)
    assert _ids(bm25_server, padded, topk=1) == _ids(bm25_server, question, topk=1)


def test_each_repair_is_counted_in_info(bm25_server):
    before = _awkward(bm25_server)
    _post(bm25_server, {"queries": [CLAUSE_1300, "x" * 5000, "fine", IDEOGRAPHS_2000]})
    _post(bm25_server, SURROGATE)
    after = _awkward(bm25_server)
    assert after["clause_limited"] - before["clause_limited"] == 2
    assert after["cut"] - before["cut"] == 1
    assert after["surrogates_replaced"] - before["surrogates_replaced"] == 1
    assert after["refused"] == before["refused"] and after["failed"] == before["failed"]


def test_cache_is_keyed_by_the_repaired_query(dense_server):
    base = "a cache key test 5521 " * 200  # 4,400 characters: both are cut to the same 4,096
    _post(dense_server, {"queries": [base + "one"]})
    before = httpx.get(dense_server.url + "/info").json()["cache"]
    _post(dense_server, {"queries": [base + "two"]})
    after = httpx.get(dense_server.url + "/info").json()["cache"]
    assert after["hits"] == before["hits"] + 1 and after["misses"] == before["misses"]


# -- --strict: refused with a 4xx before any search ------------------------------------------------------
STRICT_CASES = [
    ({"queries": ["river", CLAUSE_1300]}, "query 1 has more than 1024 distinct terms: limit is 1024"),
    ({"queries": [IDEOGRAPHS_2000]}, "query 0 has more than 1024 distinct terms"),
    ({"queries": ["ok", "ok", "x" * 4097]}, "query 2 is 4097 characters long: limit is 4096"),
    ({"query": "y" * 8192}, "query 0 is 8192 characters long: limit is 4096"),
    (SURROGATE, "query 0 contains a lone surrogate (U+D83D) at character 5"),
    (SURROGATE_INSIDE, "query 0 contains a lone surrogate (U+DC00) at character 6"),
]


@pytest.mark.parametrize(("body", "message"), STRICT_CASES)
def test_strict_refuses_with_a_422_naming_the_query(strict_server, body, message):
    before = _awkward(strict_server)
    batching = httpx.get(strict_server.url + "/info").json()["batching"]["queries"]
    r = _post(strict_server, body)
    assert r.status_code == 422, r.text
    assert message in r.json()["detail"] and "--strict" in r.json()["detail"]
    info = httpx.get(strict_server.url + "/info").json()
    assert info["awkward_queries"]["refused"] == before["refused"] + 1
    assert info["batching"]["queries"] == batching  # refused before anything was searched
    assert info["limits"]["strict"] is True


def test_strict_still_answers_fine_queries_and_punctuation(strict_server, bm25_server):
    assert _ids(strict_server, "river founded city") == _ids(bm25_server, "river founded city")
    assert _post(strict_server, {"queries": [PUNCTUATION, "x" * 4096]}).status_code == 200


# -- what the backend still fails on: that query alone --------------------------------------------------
def test_a_backend_failure_is_kept_to_its_query(isolating_server):
    good = ["river founded city", "harbour market", "painted ceiling soprano"]
    # One request of the good queries alone (the server's 500 ms coalescing window is paid once, not per query).
    alone = [[d["id"] for d in row] for row in _post(isolating_server, {"queries": good, "topk": 3}).json()["result"]]
    before = _awkward(isolating_server)
    r = _post(isolating_server, {"queries": [good[0], CLAUSE_1300, good[1], IDEOGRAPHS_2000, good[2]], "topk": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    rows = body["result"]
    assert [[d["id"] for d in rows[i]] for i in (0, 2, 4)] == alone
    assert rows[1] == [] and rows[3] == []
    assert [e["index"] for e in body["errors"]] == [1, 3]
    assert all("the search backend failed on this query" in e["detail"] for e in body["errors"])
    assert _awkward(isolating_server)["failed"] == before["failed"] + 2
    assert _ids(isolating_server, good[0]) == alone[0]  # and the server carries on


def _concurrent_round(server: ServerProcess, bad: dict | bytes, innocents: list[str]) -> tuple[list, httpx.Response]:
    """Every innocent query from its own client thread, the bad request from one more, all released at once."""
    barrier = threading.Barrier(len(innocents) + 1, timeout=120)
    answers: list[httpx.Response | None] = [None] * (len(innocents) + 1)

    def client(i: int) -> None:
        body = bad if i == len(innocents) else {"queries": [innocents[i]], "topk": 3}
        with httpx.Client(base_url=server.url, timeout=120, headers={"content-type": "application/json"}) as http:
            barrier.wait()
            answers[i] = http.post("/retrieve", content=body if isinstance(body, bytes) else json.dumps(body))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(innocents) + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert all(a is not None for a in answers), "a client thread did not finish"
    return answers[:-1], answers[-1]  # type: ignore[return-value]


@pytest.mark.parametrize("bad", ["clause_limit", "surrogate"])
def test_one_bad_client_among_twenty_innocent_concurrent_ones(isolating_server, small_world, bad):
    innocents = [r.question for r in load_qa(small_world.qa["test"])[:20]]
    # Their hits without the bad client, in one request (one 500 ms coalescing window, not twenty).
    rows = _post(isolating_server, {"queries": innocents, "topk": 3}).json()["result"]
    expected = [[d["id"] for d in row] for row in rows]
    body = {"queries": [CLAUSE_1300], "topk": 3} if bad == "clause_limit" else SURROGATE
    before = httpx.get(isolating_server.url + "/info").json()
    answers, bad_answer = _concurrent_round(isolating_server, body, innocents)
    after = httpx.get(isolating_server.url + "/info").json()
    innocent_failures = sum(a.status_code != 200 for a in answers)
    print(f"\n{bad}: {innocent_failures} of {len(answers)} innocent concurrent requests failed")
    assert innocent_failures == 0
    assert [[d["id"] for d in a.json()["result"][0]] for a in answers] == expected
    assert bad_answer.status_code == 200, bad_answer.text
    if bad == "clause_limit":  # reached Lucene and failed there: an error for that query only
        assert bad_answer.json()["result"] == [[]] and bad_answer.json()["errors"][0]["index"] == 0
        assert after["awkward_queries"]["failed"] == before["awkward_queries"]["failed"] + 1
    else:  # repaired before the search
        assert "errors" not in bad_answer.json()
        assert after["awkward_queries"]["surrogates_replaced"] == before["awkward_queries"]["surrogates_replaced"] + 1
    # They were coalesced: fewer backend batches than requests (the window is 500 ms).
    batches = after["batching"]["batches"] - before["batching"]["batches"]
    requests = after["batching"]["requests"] - before["batching"]["requests"]
    assert requests == len(innocents) + 1 and batches < requests, json.dumps(after["batching"])
