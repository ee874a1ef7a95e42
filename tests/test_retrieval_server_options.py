"""Server options: bearer token, custom limits, strict empty batches, and readiness while loading."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from search_env.server_process import ServerProcess
from tests.backend_fixtures import make_entries, write_corpus

TOKEN = "s3cret-test-token"


@pytest.fixture(scope="module")
def guarded_server(small_world, bm25_server, tmp_path_factory) -> Iterator[ServerProcess]:
    # After bm25_server: the small world's BM25 index exists, so this one only loads it.
    args = ["retriever", "--backend", "bm25", "--world", "small", "--reject-empty-batch"]
    args += ["--max-queries", "8", "--max-topk", "5", "--max-query-chars", "50", "--cache-size", "0"]
    log = tmp_path_factory.mktemp("logs") / "guarded.log"
    server = ServerProcess(args, log, env={"SEARCHGYM_API_TOKEN": TOKEN}).start()
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def _auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_token_guards_every_endpoint_but_health(guarded_server):
    url = guarded_server.url
    assert httpx.get(url + "/health").status_code == 200
    for method, path in [("POST", "/retrieve"), ("GET", "/info"), ("GET", "/openapi.json"), ("GET", "/docs")]:
        r = httpx.request(method, url + path, json={"queries": ["x"]})
        assert r.status_code == 401, path
        assert "bearer token" in r.json()["detail"]
        assert r.headers["www-authenticate"] == "Bearer"
    wrong = httpx.post(url + "/retrieve", json={"queries": ["x"]}, headers=_auth("wrong"))
    assert wrong.status_code == 401
    ok = httpx.post(url + "/retrieve", json={"queries": ["river"], "topk": 2}, headers=_auth())
    assert ok.status_code == 200 and len(ok.json()["result"][0]) == 2


def test_configured_limits_apply(guarded_server):
    url, h = guarded_server.url + "/retrieve", _auth()
    cases = [
        ({"queries": ["q"] * 9}, "too many queries in one request: 9 > limit 8"),
        ({"queries": ["q"], "topk": 6}, "topk must be between 1 and 5"),
        ({"queries": []}, "queries is empty"),
    ]
    for body, message in cases:
        r = httpx.post(url, json=body, headers=h)
        assert r.status_code == 422 and message in r.json()["detail"], r.text
    assert httpx.post(url, json={"queries": ["q"] * 8, "topk": 5}, headers=h).status_code == 200
    cut_before = httpx.get(guarded_server.url + "/info", headers=h).json()["awkward_queries"]["cut"]
    # Not strict: a query over --max-query-chars is searched on its first 50 characters.
    long = httpx.post(url, json={"queries": ["river " * 9, "river " * 9 + "tail"], "topk": 2}, headers=h)
    assert long.status_code == 200 and long.json()["result"][0] == long.json()["result"][1]
    info = httpx.get(guarded_server.url + "/info", headers=h).json()
    assert info["limits"]["max_queries"] == 8 and info["cache"]["capacity"] == 0
    assert info["limits"]["max_query_chars"] == 50 and info["awkward_queries"]["cut"] == cut_before + 2


def test_health_says_loading_until_the_index_is_ready(searchgym_home, tmp_path_factory):
    # A new corpus has no dense index yet: the server answers while it loads the encoder and builds the
    # index (40 passages: seconds of loading, not the minute a world's would take).
    corpus = write_corpus(tmp_path_factory.mktemp("corpus") / "loading.jsonl", make_entries(40, seed=5))
    log = tmp_path_factory.mktemp("logs") / "loading.log"
    server = ServerProcess(["retriever", "--backend", "dense", "--corpus", str(corpus)], log).start()
    try:
        server.wait_listening()
        first = httpx.get(server.url + "/health")
        assert first.status_code == 503 and first.json()["status"] == "loading"
        early = httpx.post(server.url + "/retrieve", json={"queries": ["x"]})
        assert early.status_code == 503 and "loading" in early.json()["detail"]
        server.wait_ready()
        assert httpx.get(server.url + "/health").json()["status"] == "ready"
        assert httpx.post(server.url + "/retrieve", json={"queries": ["x"]}).status_code == 200
    finally:
        server.stop()


def test_a_server_that_cannot_load_says_failed_and_keeps_answering(tmp_path, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "failed.log"
    missing = tmp_path / "no-such-index"
    server = ServerProcess(["retriever", "--backend", "bm25", "--bm25-index", str(missing)], log).start()
    try:
        server.wait_listening()
        with pytest.raises(RuntimeError, match="failed"):
            server.wait_ready(timeout=120)
        r = httpx.post(server.url + "/retrieve", json={"queries": ["x"]})
        assert r.status_code == 503 and "no-such-index" in r.json()["detail"]
    finally:
        server.stop()
