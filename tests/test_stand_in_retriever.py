"""benchmarks/stand_in_retriever.py (the retriever for machines without Java): our own client reads it."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from search_env.corpus import iter_corpus
from search_env.retrieval_schema import RetrievalLimits
from search_env.retriever_client import RetrieverClient
from search_env.server_process import ServerProcess
from tests.conftest import TEST_WORLD

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "stand_in_retriever.py"


@pytest.fixture(scope="module")
def stand_in(small_world, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "stand-in.log"
    server = ServerProcess(["--world", TEST_WORLD], log, command=[sys.executable, str(SCRIPT)]).start()
    try:
        yield server.wait_ready(timeout=120)
    finally:
        server.stop()


def test_answers_the_wire_schema_with_the_passage_quoted_in_the_query(stand_in, small_world):
    passages = list(iter_corpus(small_world.corpus))
    target = passages[len(passages) // 2]
    with RetrieverClient(stand_in.url) as client:
        hits = client.retrieve([target.text, "no such words at all"], topk=2)
        assert client.limits() == RetrievalLimits()  # it publishes none (no /info): the defaults
    assert len(hits) == 2 and all(len(row) == 2 for row in hits)
    assert hits[0][0].document.id == target.id
    assert hits[0][0].score > hits[0][1].score


def test_a_bad_request_is_a_422_with_a_message_and_the_server_keeps_serving(stand_in):
    bad = httpx.post(stand_in.url + "/retrieve", json={"queries": "not a list"})
    assert bad.status_code == 422 and "queries" in bad.json()["detail"]
    zero = httpx.post(stand_in.url + "/retrieve", json={"queries": ["a"], "topk": 0})
    assert zero.status_code == 422 and zero.json()["detail"] == "topk must be between 1 and 100, got 0"
    assert httpx.get(stand_in.url + "/health").json() == {"status": "ready", "detail": None}


def _raw_post(url: str, headers: str) -> tuple[int, str]:
    """POST /retrieve with exactly these headers and no body (httpx always sets a true Content-Length)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(f"POST /retrieve HTTP/1.1\r\nHost: {parts.netloc}\r\n{headers}Connection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


def test_a_missing_or_oversized_content_length_is_refused_before_reading(stand_in):
    status, body = _raw_post(stand_in.url, "")
    assert status == 411 and "needs a Content-Length" in body
    status, body = _raw_post(stand_in.url, f"Content-Length: {10**12}\r\n")
    assert status == 413 and f"request body of {10**12} bytes exceeds the limit" in body
    assert httpx.get(stand_in.url + "/health").status_code == 200
