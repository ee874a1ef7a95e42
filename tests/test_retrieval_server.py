"""The retrieval server, live on loopback over the small embedded world: results, shapes, dialects,
cache, batching, readiness, limits and bad input."""

from __future__ import annotations

import asyncio
import json

import httpx
import msgpack
import msgspec
import pytest
import requests

from search_env.qa_data import load_qa
from search_env.retrieval_eval import supporting_recall
from search_env.retriever_client import RetrieverClient
from search_env.server_process import ServerProcess


def _single_hop(world, split: str = "test"):
    return [r for r in load_qa(world.qa[split]) if r.metadata["hops"] == 1]


def _recall_at_3(server: ServerProcess, world) -> float:
    records = _single_hop(world)
    with RetrieverClient(server.url) as client:
        return supporting_recall(records, client.retrieve([r.question for r in records], topk=3))


# -- real results -----------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["bm25", "dense", "hybrid"])
def test_supporting_passage_in_top3_for_most_single_hop_questions(backend, request, small_world):
    server = request.getfixturevalue(f"{backend}_server")
    recall = _recall_at_3(server, small_world)
    print(f"\nrecall@3 {backend} on the {len(_single_hop(small_world))} single-hop test questions: {recall:.3f}")
    assert recall >= {"bm25": 0.8, "dense": 0.6, "hybrid": 0.8}[backend]


def test_info_reports_backend_size_and_encoder(dense_server, small_world):
    info = httpx.get(dense_server.url + "/info").json()
    n_passages = sum(1 for _ in small_world.corpus.open())
    assert info["state"] == "ready"
    assert info["passages"] == n_passages
    assert "MiniLM" in json.dumps(info["backend"]) or "minilm" in json.dumps(info["backend"]).lower()
    assert info["limits"]["max_topk"] == 100
    # Once loaded, the server's objects are frozen out of the cyclic GC (a full collection walking the
    # encoder's and torch's objects mid-request was the p99 tail under concurrent clients).
    assert info["gc_frozen_objects"] > 10_000


# -- Search-R1 response shape -------------------------------------------------------------------------
def test_response_shape_is_search_r1s_field_for_field(bm25_server):
    body = {"queries": ["Which city", "who founded"], "topk": 3, "return_scores": True}
    raw = httpx.post(bm25_server.url + "/retrieve", json=body).json()
    assert list(raw) == ["result"]
    assert len(raw["result"]) == 2
    for row in raw["result"]:
        assert len(row) == 3
        for item in row:
            assert list(item) == ["document", "score"]
            assert list(item["document"]) == ["id", "contents"]
            assert isinstance(item["score"], float)
            assert item["document"]["contents"].startswith('"')
        scores = [item["score"] for item in row]
        assert scores == sorted(scores, reverse=True)


def test_without_return_scores_items_are_bare_documents(bm25_server):
    raw = httpx.post(bm25_server.url + "/retrieve", json={"queries": ["river", "founded", "born"], "topk": 2}).json()
    assert [len(row) for row in raw["result"]] == [2, 2, 2]
    assert all(list(doc) == ["id", "contents"] for row in raw["result"] for doc in row)


def test_missing_topk_uses_the_server_default_of_3(bm25_server):
    raw = httpx.post(bm25_server.url + "/retrieve", json={"queries": ["river city"]}).json()
    assert len(raw["result"][0]) == 3


def test_empty_batch_answers_an_empty_result_as_search_r1_trainer_needs(bm25_server):
    r = httpx.post(bm25_server.url + "/retrieve", json={"queries": [], "topk": 3, "return_scores": True})
    assert r.status_code == 200 and r.json() == {"result": []}


# -- every client dialect, replayed exactly as the client builds it -----------------------------------------
def _question(world) -> tuple[str, set[str]]:
    record = _single_hop(world)[0]
    return record.question, set(record.metadata["supporting_passages"])


def test_search_r1_trainer_request(bm25_server, small_world):
    # search_r1/llm_agent/generation.py: requests.post(search_url, json=payload).json()['result']
    q, support = _question(small_world)
    payload = {"queries": [q, q + " ?"], "topk": 3, "return_scores": True}
    result = requests.post(bm25_server.url + "/retrieve", json=payload).json()["result"]
    assert len(result) == 2
    contents = [doc_item["document"]["contents"] for doc_item in result[0]]
    assert all(c.split("\n")[0].startswith('"') for c in contents)
    assert support & {d["document"]["id"] for d in result[0]}


def test_verl_search_tool_request(bm25_server, small_world):
    # verl/tools/utils/search_r1_like_utils.py: JSON headers, timeout 30, same payload
    q, support = _question(small_world)
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    payload = {"queries": [q], "topk": 3, "return_scores": True}
    response = requests.post(bm25_server.url + "/retrieve", headers=headers, json=payload, timeout=30)
    result = response.json()["result"]
    assert support & {item["document"]["id"] for item in result[0]}


def test_prime_search_r1_ish_request_with_return_scores_false(bm25_server, small_world):
    # prime-environments search_r1_ish: return_scores False, reads result[0][i]["contents"]
    q, support = _question(small_world)
    payload = {"queries": [q], "topk": 3, "return_scores": False}
    result = requests.post(bm25_server.url + "/retrieve", json=payload, timeout=30).json()["result"]
    assert [isinstance(result[0][i]["contents"], str) for i in range(3)] == [True] * 3
    assert support & {doc["id"] for doc in result[0]}


def test_skyrl_gym_single_query_json_request(bm25_server, small_world):
    # skyrl_gym/tools/search.py: {"query": q}, JSON headers, expects the nested result
    q, support = _question(small_world)
    session = requests.Session()
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    payload = {"query": q, "topk": 3, "return_scores": True}
    response = session.post(bm25_server.url + "/retrieve", headers=headers, json=payload, timeout=30)
    result = response.json()["result"]
    assert len(result) == 1 and len(result[0]) == 3
    assert support & {item["document"]["id"] for item in result[0]}


def test_gem_single_query_msgpack_request_without_content_type(bm25_server, small_world):
    # gem/tools/search_tool.py: requests.post(url, data=msgspec.msgpack.encode(payload), timeout=5)
    # sends no Content-Type, and decodes msgpack `["result"]` as the flat list of its one query.
    q, support = _question(small_world)
    payload = {"query": q, "topk": 3, "return_scores": True}
    response = requests.post(bm25_server.url + "/retrieve", data=msgspec.msgpack.encode(payload), timeout=5)
    response.raise_for_status()
    assert response.headers["content-type"] == "application/msgpack"
    result = msgspec.msgpack.decode(response.content)["result"]
    assert len(result) == 3
    assert all(isinstance(doc_item["document"]["contents"], str) for doc_item in result)
    assert support & {doc_item["document"]["id"] for doc_item in result}


def test_gem_older_batch_msgpack_request(bm25_server, small_world):
    # older GEM: msgpack {"queries": [q]} with no Content-Type, reads ["result"][0]
    q, support = _question(small_world)
    payload = {"queries": [q], "topk": 3, "return_scores": True}
    response = requests.post(bm25_server.url + "/retrieve", data=msgspec.msgpack.encode(payload), timeout=5)
    result = msgspec.msgpack.decode(response.content)["result"][0]
    assert support & {doc_item["document"]["id"] for doc_item in result}


def test_msgpack_chosen_by_content_type(bm25_server):
    body = msgpack.packb({"queries": ["harbour"], "topk": 2})
    r = httpx.post(bm25_server.url + "/retrieve", content=body, headers={"content-type": "application/msgpack"})
    assert r.status_code == 200
    assert len(msgpack.unpackb(r.content)["result"][0]) == 2


# -- cache and batching ------------------------------------------------------------------------------
def test_repeated_query_is_a_cache_hit(dense_server):
    before = httpx.get(dense_server.url + "/info").json()["cache"]
    body = {"queries": ["a query only this test sends 7731"], "topk": 3, "return_scores": True}
    first = httpx.post(dense_server.url + "/retrieve", json=body).json()
    second = httpx.post(dense_server.url + "/retrieve", json=body).json()
    after = httpx.get(dense_server.url + "/info").json()["cache"]
    assert first == second
    assert after["misses"] == before["misses"] + 1
    assert after["hits"] == before["hits"] + 1


def test_same_query_other_topk_is_not_served_from_the_cache(dense_server):
    body = {"queries": ["another query only this test sends 9150"], "return_scores": True}
    httpx.post(dense_server.url + "/retrieve", json=body | {"topk": 2})
    before = httpx.get(dense_server.url + "/info").json()["cache"]
    r = httpx.post(dense_server.url + "/retrieve", json=body | {"topk": 5}).json()
    after = httpx.get(dense_server.url + "/info").json()["cache"]
    assert len(r["result"][0]) == 5
    assert after["misses"] == before["misses"] + 1 and after["hits"] == before["hits"]


def test_concurrent_single_query_requests_are_coalesced_into_batches(bm25_server, small_world):
    questions = [r.question + " (coalesce)" for r in load_qa(small_world.qa["train"])[:96]]

    async def fire() -> list[dict]:
        async with httpx.AsyncClient(base_url=bm25_server.url, timeout=60) as client:
            rs = await asyncio.gather(
                *(client.post("/retrieve", json={"query": q, "topk": 3}) for q in questions)
            )
        return [r.json() for r in rs]

    before = httpx.get(bm25_server.url + "/info").json()["batching"]
    answers = asyncio.run(fire())
    after = httpx.get(bm25_server.url + "/info").json()["batching"]
    assert all(len(a["result"][0]) == 3 for a in answers)
    requests_served = after["requests"] - before["requests"]
    batches = after["batches"] - before["batches"]
    assert requests_served == 96
    assert batches < requests_served  # several requests went into one backend call
    assert after["largest_batch"] > 1


def test_batch_gives_the_same_results_as_one_query_at_a_time(hybrid_server, small_world):
    questions = [r.question for r in load_qa(small_world.qa["dev"])[:20]]
    with RetrieverClient(hybrid_server.url) as client:
        batch = client.retrieve(questions, topk=3)
        single = [client.retrieve([q], topk=3)[0] for q in questions]
    assert [[d.document.id for d in row] for row in batch] == [[d.document.id for d in row] for row in single]


# -- bad input: each a 4xx with a message, and the server keeps serving (awkward query text, which is
# searched: tests/test_awkward_queries.py) ----------------------------------------------------------------
BAD_REQUESTS = [
    ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
    ({"content": b"\xff\xfe\x00junk", "headers": {"content-type": "application/json"}}, 400, "UTF-8"),
    ({"content": b"", "headers": {"content-type": "application/json"}}, 400, "empty request body"),
    ({"content": b"\xc1", "headers": {"content-type": "application/msgpack"}}, 400, "msgpack"),
    ({"json": ["just", "a", "list"]}, 422, "must be an object"),
    ({"json": {"topk": 3}}, 422, "exactly one of 'queries'"),
    ({"json": {"queries": ["ok", 5]}}, 422, "queries.1"),
    ({"json": {"queries": "not a list"}}, 422, "queries"),
    ({"json": {"queries": ["x"], "topk": 0}}, 422, "topk must be between 1 and 100"),
    ({"json": {"queries": ["x"], "topk": 101}}, 422, "topk must be between 1 and 100"),
    ({"json": {"queries": ["x"], "topk": "three"}}, 422, "topk"),
    ({"json": {"queries": ["q"] * 5000}}, 422, "too many queries in one request: 5000 > limit 4096"),
]


@pytest.mark.parametrize(("kwargs", "status", "message"), BAD_REQUESTS)
def test_bad_request_gets_a_4xx_with_a_message(bm25_server, kwargs, status, message):
    r = httpx.post(bm25_server.url + "/retrieve", **kwargs)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]
    ok = httpx.post(bm25_server.url + "/retrieve", json={"queries": ["river founded"], "topk": 1})
    assert ok.status_code == 200 and len(ok.json()["result"][0]) == 1


def test_oversized_body_is_refused(bm25_server):
    big = json.dumps({"queries": ["y" * 4000] * 4000}).encode()  # 16 MB under the 32 MiB default...
    r = httpx.post(bm25_server.url + "/retrieve", content=big * 3, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "exceeds the limit" in r.json()["detail"]


def test_msgpack_client_gets_its_error_in_msgpack(bm25_server):
    r = httpx.post(bm25_server.url + "/retrieve", content=msgpack.packb({"query": "x", "topk": 0}))
    assert r.status_code == 422
    assert "topk" in msgpack.unpackb(r.content)["detail"]


def test_wrong_method_and_unknown_path_are_4xx(bm25_server):
    assert httpx.get(bm25_server.url + "/retrieve").status_code == 405
    assert httpx.get(bm25_server.url + "/nope").status_code == 404


def test_openapi_documents_retrieve(bm25_server):
    spec = httpx.get(bm25_server.url + "/openapi.json").json()
    body = spec["paths"]["/retrieve"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/msgpack"} <= set(body)
    assert "queries" in body["application/json"]["schema"]["properties"]
