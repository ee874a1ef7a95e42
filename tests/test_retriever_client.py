"""search_env's retriever client against a live server, a dead port, and a refusing server."""

from __future__ import annotations

import asyncio
import time

import pytest

from search_env.retrieval_schema import RetrievalLimits
from search_env.retriever_client import (
    RetrieverClient,
    RetrieverRequestError,
    RetrieverUnavailable,
    retrieve_url,
)
from search_env.server_process import free_port


def test_url_forms():
    assert retrieve_url("http://h:1") == "http://h:1/retrieve"
    assert retrieve_url("http://h:1/retrieve/") == "http://h:1/retrieve"


def test_sync_and_async_give_the_same_documents(bm25_server):
    queries = ["founded", "born in", "river"]
    with RetrieverClient(bm25_server.url + "/retrieve") as client:
        sync = client.retrieve(queries, topk=2)

    async def run():
        async with RetrieverClient(bm25_server.url) as client:
            return await client.aretrieve(queries, topk=2)

    assert [[d.document.id for d in r] for r in sync] == [[d.document.id for d in r] for r in asyncio.run(run())]
    assert all(len(r) == 2 for r in sync)


def test_unreachable_server_raises_after_retries_with_backoff():
    client = RetrieverClient(f"http://127.0.0.1:{free_port()}", retries=2, backoff=0.1, timeout=2)
    began = time.perf_counter()
    with pytest.raises(RetrieverUnavailable, match="after 3 attempts"):
        client.retrieve(["anything"])
    assert time.perf_counter() - began >= 0.3  # slept 0.1 + 0.2 between the three attempts


def test_async_unreachable_server_raises_too():
    client = RetrieverClient(f"http://127.0.0.1:{free_port()}", retries=1, backoff=0.01, timeout=2)
    with pytest.raises(RetrieverUnavailable):
        asyncio.run(client.aretrieve(["anything"]))


def test_refusal_is_raised_at_once_with_the_servers_message(bm25_server):
    with RetrieverClient(bm25_server.url) as client, pytest.raises(RetrieverRequestError) as err:
        client.retrieve(["x"], topk=1000)
    assert err.value.status == 422 and "topk must be between 1 and 100" in err.value.message


def test_wait_ready_and_info(bm25_server):
    with RetrieverClient(bm25_server.url) as client:
        client.wait_ready(timeout=5)
        assert client.info()["state"] == "ready"


def test_limits_come_from_info_and_fall_back_to_the_defaults(strict_server):
    with RetrieverClient(strict_server.url) as client:
        limits = client.limits()
        assert limits.strict and limits.max_query_chars == 4096 and client.limits() is limits  # read once
    nobody = RetrieverClient(f"http://127.0.0.1:{free_port()}", retries=3, timeout=2)
    assert nobody.limits() == RetrievalLimits()  # unreachable: the defaults, without retrying or raising
    given = RetrievalLimits(max_query_chars=10)
    assert RetrieverClient(strict_server.url, limits=given).limits() is given
