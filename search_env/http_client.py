"""A JSON-over-HTTP client with timeouts and retries with backoff, shared by the retriever client,
the remote env and the OpenAI-compatible policy (sync and async): the one retry policy of the
project, outage wait included."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import threading
import time
from typing import Any

import httpx

TOKEN_ENV = "SEARCHGYM_API_TOKEN"
# Worth retrying: the server is starting or briefly unable (503), or a proxy hiccupped.
RETRY_STATUSES = frozenset({502, 503, 504})
# Longest sleep between tries during an outage wait: a restarted server is noticed within this.
MAX_WAIT_INTERVAL_S = 2.0

log = logging.getLogger("search_env.http")


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

    Connection errors, timeouts and `retry_statuses` (default 502/503/504) are retried `retries` times,
    sleeping `backoff`, 2x, 4x... seconds (at most `max_backoff`, or what a Retry-After header asks,
    within that cap) between attempts, plus up to a quarter more at random (jitter) so many callers
    do not come back in step. With `shared_backoff` a failure pauses every request of
    this client, new ones included, until its sleep is over: a server that handles one request at a
    time (a timed-out request still runs there) is not sent more work while it is behind.
    With `outage_wait_s` > 0 the client then keeps trying (every
    MAX_WAIT_INTERVAL_S at most, each wait logged as a warning) until that many seconds have passed
    since the first failure, so a server that restarts (a BM25 retriever takes ~10 s) is waited
    for; then `unavailable` (a ServiceUnavailable subclass) is raised.
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
        outage_wait_s: float = 0.0,
        token: str | None = None,
        unavailable: type[ServiceUnavailable] = ServiceUnavailable,
        refused: type[RequestRefused] = RequestRefused,
        retry_statuses: frozenset[int] = RETRY_STATUSES,
        max_backoff: float = 30.0,
        shared_backoff: bool = False,
    ):
        self.base_url = base_url.rstrip("/")
        self.what = what
        self.timeout = timeout
        if retries < 0 or not timeout > 0:
            raise ValueError(f"retries must be >= 0 and timeout > 0, got {retries} and {timeout}")
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.retry_statuses = retry_statuses
        self.shared_backoff = shared_backoff
        self._resume_at = 0.0  # monotonic time before which no request starts (shared_backoff)
        if not outage_wait_s >= 0:
            raise ValueError(f"outage_wait_s must be >= 0, got {outage_wait_s}")
        self.outage_wait_s = outage_wait_s
        self._unavailable = unavailable
        self._refused = refused
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()
        self._aclient: httpx.AsyncClient | None = None
        self._aclient_loop: asyncio.AbstractEventLoop | None = None

    def _sync(self) -> httpx.Client:
        # httpx.Client is thread-safe; the lock only keeps threads sharing this client from making two.
        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(timeout=self.timeout, headers=self.headers)
        return self._client

    def _async(self) -> httpx.AsyncClient:
        # An AsyncClient's connections belong to one event loop; a new asyncio.run needs a new client.
        loop = asyncio.get_running_loop()
        if self._aclient is None or self._aclient_loop is not loop:
            self._aclient = httpx.AsyncClient(timeout=self.timeout, headers=self.headers)
            self._aclient_loop = loop
        return self._aclient

    def _outcome(self, response: httpx.Response) -> tuple[bool, Any, float | None]:
        """(done, body or why not, the seconds a Retry-After asks for) for an answer; raises for a 4xx
        or an unexpected status."""
        if response.status_code in self.retry_statuses:
            return False, f"HTTP {response.status_code}: {error_message(response)[:500]}", _retry_after_s(response)
        if 400 <= response.status_code < 500:
            raise self._refused(response.status_code, error_message(response))
        if response.status_code >= 300:
            raise self._unavailable(
                f"{self.what} at {self.base_url} failed: HTTP {response.status_code}: {error_message(response)}"
            )
        return True, (response.json() if response.content else None), None

    def _give_up(self, last: str, attempts: int, started: float) -> ServiceUnavailable:
        waited = time.monotonic() - started
        return self._unavailable(
            f"{self.what} at {self.base_url} unavailable after {attempts} attempts over {waited:.1f}s: {last}"
        )

    def _delay(
        self, attempt: int, retries: int, wait_s: float, started: float, last: str, asked: float | None = None
    ) -> float | None:
        """Seconds to sleep before the next attempt, or None to give up. Past the retries, an
        outage wait goes on until `wait_s` after the first failure, logging each sleep."""
        if attempt < retries:
            delay = min(self.max_backoff, self.backoff * 2**attempt)
            delay = min(self.max_backoff, asked) if asked is not None else delay * random.uniform(1.0, 1.25)
            if self.shared_backoff:
                self._resume_at = max(self._resume_at, time.monotonic() + delay)
            return delay
        left = started + wait_s - time.monotonic()
        if left <= 0:
            return None
        delay = min(max(self.backoff, 0.05) * 2**attempt, MAX_WAIT_INTERVAL_S, left)
        log.warning(
            "%s at %s unavailable for %.1fs (%s); waiting up to %.0fs more for it to come back",
            self.what,
            self.base_url,
            time.monotonic() - started,
            last,
            left,
        )
        return delay

    def _back(self, attempt: int, retries: int, started: float) -> None:
        if attempt > retries:  # only after an outage wait, not after ordinary retries
            log.warning("%s at %s answers again after %.1fs", self.what, self.base_url, time.monotonic() - started)

    def request(
        self, method: str, path: str, *, retries: int | None = None, outage_wait_s: float | None = None, **kwargs: Any
    ) -> Any:
        """The JSON body of a 2xx answer. `retries` and `outage_wait_s` override the client's for this call.

        Raises `refused` for a 4xx, `unavailable` once the retries and the outage wait are spent.
        """
        retries = self.retries if retries is None else retries
        wait_s = self.outage_wait_s if outage_wait_s is None else outage_wait_s
        kwargs = _json_body(kwargs)
        last = ""
        started = time.monotonic()
        attempt = 0
        while True:
            pause = self._resume_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            asked = None
            try:
                done, body, asked = self._outcome(self._sync().request(method, self.base_url + path, **kwargs))
                if done:
                    self._back(attempt, retries, started)
                    return body
                last = body
            except httpx.TransportError as err:
                last = f"{type(err).__name__}: {err}"
            delay = self._delay(attempt, retries, wait_s, started, last, asked)
            if delay is None:
                raise self._give_up(last, attempt + 1, started)
            time.sleep(delay)
            attempt += 1

    async def arequest(
        self, method: str, path: str, *, retries: int | None = None, outage_wait_s: float | None = None, **kwargs: Any
    ) -> Any:
        """request() for asyncio callers."""
        retries = self.retries if retries is None else retries
        wait_s = self.outage_wait_s if outage_wait_s is None else outage_wait_s
        kwargs = _json_body(kwargs)
        last = ""
        started = time.monotonic()
        attempt = 0
        while True:
            while (pause := self._resume_at - time.monotonic()) > 0:  # another request may extend it
                await asyncio.sleep(pause)
            asked = None
            try:
                done, body, asked = self._outcome(await self._async().request(method, self.base_url + path, **kwargs))
                if done:
                    self._back(attempt, retries, started)
                    return body
                last = body
            except httpx.TransportError as err:
                last = f"{type(err).__name__}: {err}"
            delay = self._delay(attempt, retries, wait_s, started, last, asked)
            if delay is None:
                raise self._give_up(last, attempt + 1, started)
            await asyncio.sleep(delay)
            attempt += 1

    def get_once(self, path: str) -> httpx.Response:
        """One GET with no retry (health probes)."""
        return self._sync().get(self.base_url + path)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        if self._aclient is not None:
            if self._aclient_loop is asyncio.get_running_loop():
                await self._aclient.aclose()
            self._aclient = None
        self.close()


def _retry_after_s(response: httpx.Response) -> float | None:
    """Seconds a Retry-After header (in seconds) asks to wait, None without a usable one."""
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None
