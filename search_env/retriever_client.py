"""HTTP client of the retrieval server (sync and async), with timeouts and retries with backoff."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import ValidationError

from search_env.http_client import TOKEN_ENV, JsonHttpClient, RequestRefused, ServiceUnavailable, parse_urls
from search_env.retrieval_schema import RetrievalLimits, RetrieveRequest, RetrieveResponse, ScoredDocument

__all__ = [
    "TOKEN_ENV",
    "RetrievalAnswer",
    "RetrieverClient",
    "RetrieverRequestError",
    "RetrieverUnavailable",
    "retrieve_url",
]


class RetrieverUnavailable(ServiceUnavailable):
    """The retrieval server could not be reached (or stayed unready) after every retry."""


class RetrieverRequestError(RequestRefused):
    """The retrieval server refused the request (4xx); `status` and its message are kept."""


@dataclass
class RetrievalAnswer:
    """Documents for each query; `errors` maps the index of a query the server could not search
    (its documents: []) to the server's reason."""

    results: list[list[ScoredDocument]]
    errors: dict[int, str] = field(default_factory=dict)


def _limits_of(info: Any) -> RetrievalLimits:
    """The `limits` of an /info body; the defaults for what it lacks or garbles (a server of another kind)."""
    published = info.get("limits") if isinstance(info, dict) else None
    try:
        return RetrievalLimits.model_validate(published if isinstance(published, dict) else {})
    except ValidationError:
        return RetrievalLimits()


def retrieve_url(url: str) -> str:
    """Accept the server's base URL or its full `/retrieve` URL (as Search-R1 configs hold)."""
    url = url.rstrip("/")
    return url if url.endswith("/retrieve") else url + "/retrieve"


class RetrieverClient:
    """Talks to `agent-server retriever` (or any Search-R1 compatible `/retrieve`).

    Connection errors, timeouts and 502/503/504 are retried `retries` times with exponential backoff
    (`backoff`, 2x, 4x... seconds), then for `outage_wait_s` more (a restarting retriever: the
    http_client's outage wait, logged); after that `RetrieverUnavailable` is raised. A 4xx raises
    `RetrieverRequestError` at once, carrying the server's message. `limits` are the server's as
    its `/info` publishes them, read once; give them to override (a server that publishes none).

    `url` may name several replicas (a list, or one comma-separated string; each a base URL or its
    `/retrieve`): each request goes to the least loaded healthy one and fails over to another when one
    dies (search_env.http_client: the retries and outage wait then apply only once all are down).
    """

    def __init__(
        self,
        url: str | Sequence[str] = "http://127.0.0.1:8000",
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        outage_wait_s: float = 0.0,
        token: str | None = None,
        limits: RetrievalLimits | None = None,
    ):
        urls = [retrieve_url(u) for u in parse_urls(url)]
        #: the `/retrieve` URL (comma-separated, one per replica, for several)
        self.url = ",".join(urls)
        self._limits = limits
        #: wall seconds spent in sync `/retrieve` requests so far, retries included (for rollout timings)
        self.retrieve_seconds = 0.0
        self.base_urls = [u[: -len("/retrieve")] for u in urls]
        self.base_url = ",".join(self.base_urls)
        self.http = JsonHttpClient(
            self.base_urls,
            what="retrieval server",
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            outage_wait_s=outage_wait_s,
            token=token,
            unavailable=RetrieverUnavailable,
            refused=RetrieverRequestError,
        )

    @staticmethod
    def _payload(queries: Sequence[str], topk: int) -> dict[str, Any]:
        return RetrieveRequest(queries=list(queries), topk=topk, return_scores=True).model_dump(exclude_none=True)

    @staticmethod
    def _parse(body: dict[str, Any]) -> RetrievalAnswer:
        response = RetrieveResponse.model_validate(body)
        errors = {e.index: e.detail for e in response.errors or []}
        return RetrievalAnswer(response.result, errors)  # type: ignore[arg-type]

    def retrieve(self, queries: Sequence[str], topk: int = 3) -> list[list[ScoredDocument]]:
        """Top-k scored documents for each query, in one request ([] for a query the server could not search)."""
        return self.retrieve_detailed(queries, topk).results

    async def aretrieve(self, queries: Sequence[str], topk: int = 3) -> list[list[ScoredDocument]]:
        return (await self.aretrieve_detailed(queries, topk)).results

    def retrieve_detailed(self, queries: Sequence[str], topk: int = 3) -> RetrievalAnswer:
        """retrieve(), with the server's reason for each query it could not search.

        Raises RetrieverRequestError (4xx) or RetrieverUnavailable (after the retries).
        """
        if not queries:
            return RetrievalAnswer([])
        began = time.perf_counter()
        try:
            return self._parse(self.http.request("POST", "/retrieve", json=self._payload(queries, topk)))
        finally:
            self.retrieve_seconds += time.perf_counter() - began

    async def aretrieve_detailed(self, queries: Sequence[str], topk: int = 3) -> RetrievalAnswer:
        if not queries:
            return RetrievalAnswer([])
        return self._parse(await self.http.arequest("POST", "/retrieve", json=self._payload(queries, topk)))

    def info(self) -> dict[str, Any]:
        return self.http.request("GET", "/info")

    def limits(self) -> RetrievalLimits:
        """The server's limits, from its /info the first time they are asked for (once, no retry).

        A server with no /info, or no limits in it (Search-R1's own), gets the defaults; one that
        cannot be reached now gets them too, and is asked again next time. Never raises.
        """
        if self._limits is None:
            try:
                self._limits = _limits_of(self.http.request("GET", "/info", retries=0, outage_wait_s=0))
            except (RequestRefused, ValueError):
                self._limits = RetrievalLimits()  # no /info here (or not JSON): a server of another kind
            except ServiceUnavailable:
                return RetrievalLimits()
        return self._limits

    async def alimits(self) -> RetrievalLimits:
        """limits() for asyncio callers."""
        if self._limits is None:
            try:
                self._limits = _limits_of(await self.http.arequest("GET", "/info", retries=0, outage_wait_s=0))
            except (RequestRefused, ValueError):
                self._limits = RetrievalLimits()
            except ServiceUnavailable:
                return RetrievalLimits()
        return self._limits

    def wait_ready(self, timeout: float = 600.0, interval: float = 0.5) -> None:
        """Block until `/health` says ready, on every replica; `RetrieverUnavailable` after `timeout`
        seconds, or at once for one that failed to start."""
        deadline = time.monotonic() + timeout
        for base in self.base_urls:
            last = "no answer"
            while True:
                try:
                    body = self.http.get_once("/health", replica=base).json()
                    if body.get("status") == "ready":
                        break
                    if body.get("status") == "failed":
                        raise RetrieverUnavailable(f"retrieval server at {base} failed to start: {body.get('detail')}")
                    last = f"status {body.get('status')}"
                except (httpx.TransportError, ValueError) as err:
                    last = f"{type(err).__name__}: {err}"
                if time.monotonic() >= deadline:
                    raise RetrieverUnavailable(f"retrieval server at {base} not ready after {timeout:.0f}s: {last}")
                time.sleep(interval)

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
