"""A JSON-over-HTTP client with timeouts and retries with backoff, shared by the retriever client
and the remote env (sync and async)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import httpx

TOKEN_ENV = "SEARCHGYM_API_TOKEN"
# Worth retrying: the server is starting or briefly unable (503), or a proxy hiccupped.
RETRY_STATUSES = frozenset({502, 503, 504})


class ServiceUnavailable(RuntimeError):
    """The server could not be reached, or kept answering 502/503/504, after every retry."""


class RequestRefused(RuntimeError):
    """The server refused the request (4xx); `status` and the server's message are kept."""

    def __init__(self, status: int, message: str):
        super().__init__(f"request refused ({status}): {message}")
        self.status = status
        self.message = message


def error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        return str(body.get("detail", body)) if isinstance(body, dict) else str(body)
    except ValueError:
        return response.text


def _json_body(kwargs: dict[str, Any]) -> dict[str, Any]:
    """`json=` encoded here with non-ASCII escaped: httpx encodes UTF-8, which cannot carry a lone
    surrogate, so a str the caller holds (a policy's garbled output...) would fail before it was sent."""
    if "json" not in kwargs:
        return kwargs
    kwargs = dict(kwargs)
    content = json.dumps(kwargs.pop("json"), separators=(",", ":"), allow_nan=False).encode("ascii")
    headers = {**kwargs.pop("headers", {}), "Content-Type": "application/json"}
    return kwargs | {"content": content, "headers": headers}


class JsonHttpClient:
    """`request()` / `arequest()` return the decoded JSON body of a 2xx answer.

    Connection errors, timeouts and 502/503/504 are retried `retries` times, sleeping `backoff`, 2x,
    4x... seconds between attempts; then `unavailable` (a ServiceUnavailable subclass) is raised.
    A 4xx raises `refused` (a RequestRefused subclass) at once. The bearer token defaults to
    `$SEARCHGYM_API_TOKEN`. A `json=` body may hold any str, lone surrogates included (sent escaped).
    """

    def __init__(
        self,
        base_url: str,
        *,
        what: str,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        token: str | None = None,
        unavailable: type[ServiceUnavailable] = ServiceUnavailable,
        refused: type[RequestRefused] = RequestRefused,
    ):
        self.base_url = base_url.rstrip("/")
        self.what = what
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._unavailable = unavailable
        self._refused = refused
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client: httpx.Client | None = None
        self._aclient: httpx.AsyncClient | None = None

    def _sync(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout, headers=self.headers)
        return self._client

    def _async(self) -> httpx.AsyncClient:
        if self._aclient is None:
            self._aclient = httpx.AsyncClient(timeout=self.timeout, headers=self.headers)
        return self._aclient

    def _outcome(self, response: httpx.Response) -> tuple[bool, Any]:
        """(done, body) for an answer; raises for a 4xx or an unexpected status."""
        if response.status_code in RETRY_STATUSES:
            return False, f"HTTP {response.status_code}: {error_message(response)}"
        if 400 <= response.status_code < 500:
            raise self._refused(response.status_code, error_message(response))
        if response.status_code >= 300:
            raise self._unavailable(
                f"{self.what} at {self.base_url} failed: HTTP {response.status_code}: {error_message(response)}"
            )
        return True, (response.json() if response.content else None)

    def _give_up(self, last: str, retries: int) -> ServiceUnavailable:
        attempts = retries + 1
        return self._unavailable(f"{self.what} at {self.base_url} unavailable after {attempts} attempts: {last}")

    def request(self, method: str, path: str, *, retries: int | None = None, **kwargs: Any) -> Any:
        retries = self.retries if retries is None else retries
        kwargs = _json_body(kwargs)
        last = ""
        for attempt in range(retries + 1):
            try:
                done, body = self._outcome(self._sync().request(method, self.base_url + path, **kwargs))
                if done:
                    return body
                last = body
            except httpx.TransportError as err:
                last = f"{type(err).__name__}: {err}"
            if attempt < retries:
                time.sleep(self.backoff * 2**attempt)
        raise self._give_up(last, retries)

    async def arequest(self, method: str, path: str, *, retries: int | None = None, **kwargs: Any) -> Any:
        retries = self.retries if retries is None else retries
        kwargs = _json_body(kwargs)
        last = ""
        for attempt in range(retries + 1):
            try:
                done, body = self._outcome(await self._async().request(method, self.base_url + path, **kwargs))
                if done:
                    return body
                last = body
            except httpx.TransportError as err:
                last = f"{type(err).__name__}: {err}"
            if attempt < retries:
                await asyncio.sleep(self.backoff * 2**attempt)
        raise self._give_up(last, retries)

    def get_once(self, path: str) -> httpx.Response:
        """One GET with no retry (health probes)."""
        return self._sync().get(self.base_url + path)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        if self._aclient is not None:
            await self._aclient.aclose()
            self._aclient = None
        self.close()
