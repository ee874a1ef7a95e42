"""HTTP client of the retrieval server (sync and async), with timeouts and retries with backoff."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import httpx

from search_env.http_client import TOKEN_ENV, JsonHttpClient, RequestRefused, ServiceUnavailable
from search_env.retrieval_schema import RetrieveRequest, RetrieveResponse, ScoredDocument

__all__ = ["TOKEN_ENV", "RetrieverClient", "RetrieverRequestError", "RetrieverUnavailable", "retrieve_url"]


class RetrieverUnavailable(ServiceUnavailable):
    """The retrieval server could not be reached (or stayed unready) after every retry."""


class RetrieverRequestError(RequestRefused):
    """The retrieval server refused the request (4xx); `status` and its message are kept."""


def retrieve_url(url: str) -> str:
    """Accept the server's base URL or its full `/retrieve` URL (as Search-R1 configs hold)."""
    url = url.rstrip("/")
    return url if url.endswith("/retrieve") else url + "/retrieve"


class RetrieverClient:
    """Talks to `agent-server retriever` (or any Search-R1 compatible `/retrieve`).

    Connection errors, timeouts and 502/503/504 are retried `retries` times with exponential backoff
    (`backoff`, 2x, 4x... seconds); after that `RetrieverUnavailable` is raised. A 4xx raises
    `RetrieverRequestError` at once, carrying the server's message.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        token: str | None = None,
    ):
        self.url = retrieve_url(url)
        self.base_url = self.url[: -len("/retrieve")]
        self.http = JsonHttpClient(
            self.base_url,
            what="retrieval server",
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            token=token,
            unavailable=RetrieverUnavailable,
            refused=RetrieverRequestError,
        )

    @staticmethod
    def _payload(queries: Sequence[str], topk: int) -> dict[str, Any]:
        return RetrieveRequest(queries=list(queries), topk=topk, return_scores=True).model_dump(exclude_none=True)

    @staticmethod
    def _parse(body: dict[str, Any]) -> list[list[ScoredDocument]]:
        return RetrieveResponse.model_validate(body).result  # type: ignore[return-value]

    def retrieve(self, queries: Sequence[str], topk: int = 3) -> list[list[ScoredDocument]]:
        """Top-k scored documents for each query, in one request."""
        if not queries:
            return []
        return self._parse(self.http.request("POST", "/retrieve", json=self._payload(queries, topk)))

    async def aretrieve(self, queries: Sequence[str], topk: int = 3) -> list[list[ScoredDocument]]:
        if not queries:
            return []
        return self._parse(await self.http.arequest("POST", "/retrieve", json=self._payload(queries, topk)))

    def info(self) -> dict[str, Any]:
        return self.http.request("GET", "/info")

    def wait_ready(self, timeout: float = 600.0, interval: float = 0.5) -> None:
        """Block until `/health` says ready; `RetrieverUnavailable` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                body = self.http.get_once("/health").json()
                if body.get("status") == "ready":
                    return
                if body.get("status") == "failed":
                    raise RetrieverUnavailable(f"retrieval server failed to start: {body.get('detail')}")
                last = f"status {body.get('status')}"
            except (httpx.TransportError, ValueError) as err:
                last = f"{type(err).__name__}: {err}"
            time.sleep(interval)
        raise RetrieverUnavailable(f"retrieval server at {self.base_url} not ready after {timeout:.0f}s: {last}")

    def close(self) -> None:
        self.http.close()

    async def aclose(self) -> None:
        await self.http.aclose()

    def __enter__(self) -> RetrieverClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> RetrieverClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
