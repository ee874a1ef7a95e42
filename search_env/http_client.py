"""A JSON-over-HTTP client with timeouts and retries with backoff, shared by the retriever client,
the remote env and the OpenAI-compatible policy (sync and async): the one retry policy of the
project, outage wait included, and its routing over several replicas of one server."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

TOKEN_ENV = "SEARCHGYM_API_TOKEN"
# Worth retrying: the server is starting or briefly unable (503), or a proxy hiccupped.
RETRY_STATUSES = frozenset({502, 503, 504})
#: What an OpenAI-compatible inference server (vLLM, llama.cpp, a hosted API) answers when busy or failing:
#: timeouts (408), conflicts (409), rate limits (429) and every 5xx, retried by the evaluation's policy
#: and the trainer's generator alike. Our own servers' 500 is a bug, not a busy server, hence two sets.
OPENAI_RETRY_STATUSES = frozenset({408, 409, 429, *range(500, 600)})
# Longest sleep between tries during an outage wait: a restarted server is noticed within this.
MAX_WAIT_INTERVAL_S = 2.0
# A downed replica's /health is probed after PROBE_INTERVAL_S, then 2x, 4x... up to MAX_PROBE_INTERVAL_S
# while it stays down: a restarted replica is back in rotation within the longest of these.
PROBE_INTERVAL_S = 1.0
MAX_PROBE_INTERVAL_S = 10.0

log = logging.getLogger("search_env.http")


class ServiceUnavailable(RuntimeError):
    """The server could not be reached, or kept answering 502/503/504, after every retry."""


class ReplicaLost(ServiceUnavailable):
    """A request pinned to one replica (`replica=`) found it down while another replica is healthy:
    what lives only there (an env session) is to be rebuilt elsewhere. `url` is the lost replica's."""

    def __init__(self, url: str, why: str):
        super().__init__(f"replica {url} is down ({why})")
        self.url = url


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


def parse_urls(urls: str | Sequence[str]) -> list[str]:
    """The base URLs in `urls`: one URL, a comma-separated string of them, or a list (whose items may be
    comma-separated too); trailing slashes dropped. One URL is taken as given, as before replicas.

    Raises ValueError for a string or list that names no URL.
    """
    if isinstance(urls, str) and "," not in urls:
        return [urls.rstrip("/")]
    items = [urls] if isinstance(urls, str) else list(urls)
    found = [part.strip().rstrip("/") for item in items for part in str(item).split(",")]
    found = [url for url in found if url]
    if not found:
        raise ValueError(f"no URL in {urls!r}")
    return found


@dataclass
class _Replica:
    """What the client knows of one base URL; changed under JsonHttpClient._replica_lock."""

    url: str
    outstanding: int = 0  # requests sent and not yet answered
    picks: int = 0  # requests ever routed here: the tie-break, so equal loads take turns
    rank: int = 0  # the last tie-break
    tried_at: float = 0.0  # monotonic time a request was last routed here
    answered: int = 0  # answers received (any status but a retried or 5xx one)
    down: bool = False
    probes: int = 0  # failed /health probes since it went down
    probe_at: float = 0.0  # monotonic time of its next probe while down


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

    Replicas: `base_url` may name several servers of the same kind (a list, or one comma-separated
    string; `parse_urls`). Each request goes to the healthy replica with the fewest requests in
    flight from this client (equal ones take turns). A replica that refuses the connection, times
    out or answers 5xx is marked down and the request is sent again at once to another healthy
    replica, spending neither a retry nor a sleep: retrieval is idempotent, and an env server's
    create and step carry request ids (a step another replica never saw is applied there once; one
    pinned to its replica fails over by `ReplicaLost`, below). A downed replica gets no requests; a
    background thread probes its `/health` after `probe_interval_s`, 2x, 4x... (at most
    `max_probe_interval_s`) and puts it back in rotation on a 200. Only when every replica is down do
    the retries, their backoff and the outage wait above begin: they count from the request's first
    failure and each try goes to the replica tried longest ago (in turn), so `outage_wait_s` bounds a
    whole-fleet outage exactly as it bounds one server's (a 500 then raises `unavailable` at once, as
    from one server). Any answer but a 5xx from a downed replica puts it back at once. With one URL
    nothing is marked down or probed: the behaviour is that of one server.

    A request given `replica=` (one of `base_urls`: an env session lives on the replica that created
    it, `request_routed` says which) goes there only. With other replicas healthy, a failure there
    (or that replica already down) marks it down and raises `ReplicaLost` at once; with none, the
    ordinary retries and outage wait apply to it.
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
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
        probe_interval_s: float = PROBE_INTERVAL_S,
        max_probe_interval_s: float = MAX_PROBE_INTERVAL_S,
    ):
        """Raises ValueError for a negative `retries` or `outage_wait_s`, a timeout or probe interval that
        is not positive, or a `base_url` that names no URL."""
        #: every replica's base URL; `base_url` is them comma-separated (the one URL, for one)
        self.base_urls = parse_urls(base_url)
        self.base_url = ",".join(self.base_urls)
        if not (probe_interval_s > 0 and max_probe_interval_s >= probe_interval_s):
            raise ValueError(
                f"probe intervals must be 0 < first <= max, got {probe_interval_s}, {max_probe_interval_s}"
            )
        self.probe_interval_s = probe_interval_s
        self.max_probe_interval_s = max_probe_interval_s
        # Replicas tie by a random order of this client's: clients made one per episode (search-env eval)
        # then start on different replicas instead of all on the first.
        order = random.sample(range(len(self.base_urls)), len(self.base_urls))
        self._replicas = {url: _Replica(url, rank=rank) for url, rank in zip(self.base_urls, order, strict=True)}
        self._replica_lock = threading.Lock()
        self._prober: threading.Thread | None = None  # probing downed replicas, while any is down
        self._prober_stop = threading.Event()  # that thread's: set by close()
        self._wake = threading.Event()  # set when a replica goes down: the prober looks again
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

    # Routing over the replicas (one URL: always that one, never marked down).

    def _route(self, pinned: str | None) -> _Replica:
        """The replica a try goes to, its request counted as in flight there. Raises ValueError for a
        `pinned` URL that is none of ours, ReplicaLost for one marked down while another is healthy."""
        with self._replica_lock:
            replicas = self._replicas.values()
            if pinned is not None:
                target = self._replicas.get(pinned.rstrip("/"))
                if target is None:
                    raise ValueError(f"{pinned} is not a replica of this client ({self.base_url})")
                if target.down and any(not r.down for r in replicas):
                    raise ReplicaLost(target.url, "marked down by an earlier failure")
            else:
                healthy = [r for r in replicas if not r.down]
                if healthy:
                    target = min(healthy, key=lambda r: (r.outstanding, r.picks, r.rank))
                else:  # all down: the ordinary retries, each to the replica tried longest ago
                    target = min(replicas, key=lambda r: r.tried_at)
            target.tried_at = time.monotonic()
            target.outstanding += 1
            target.picks += 1
            return target

    def _settle(
        self, target: _Replica, pinned: str | None, response: httpx.Response | None, failure: str
    ) -> tuple[str, Any, float | None]:
        """What one try on `target` came to (`response`, or None and the transport `failure`):
        ("done", body, None); ("again", None, None): send it at once to another replica, `target` now
        being down; ("wait", why, the seconds a Retry-After asks for): retry under the policy.

        Raises `refused` for a 4xx, `unavailable` for an unexpected status, ReplicaLost for a pinned
        request whose replica failed while another is healthy.
        """
        failed = response is None or response.status_code >= 500
        why = failure if response is None else f"HTTP {response.status_code}"
        with self._replica_lock:
            target.outstanding -= 1
            if not failed:
                target.answered += 1
                if target.down:
                    self._up(target, "it answered a request")
            elif len(self._replicas) > 1:
                self._down(target, why)
                if any(not r.down for r in self._replicas.values()):
                    if pinned is not None:
                        raise ReplicaLost(target.url, why)
                    return "again", None, None
        if response is None:
            return "wait", failure, None
        done, body, asked = self._outcome(response)
        return ("done", body, None) if done else ("wait", body, asked)

    def _down(self, replica: _Replica, why: str) -> None:
        """Take `replica` out of rotation until a probe of its /health succeeds (under the lock)."""
        if replica.down:
            return
        replica.down, replica.probes = True, 0
        replica.probe_at = time.monotonic() + self.probe_interval_s
        log.warning("%s replica %s is down (%s): routing around it", self.what, replica.url, why)
        if self._prober is None:
            stop = threading.Event()
            self._prober = threading.Thread(
                target=self._probe_loop, args=(stop,), name=f"{self.what} prober", daemon=True
            )
            self._prober_stop = stop
            self._prober.start()
        self._wake.set()  # a prober asleep until a later probe looks again

    def _up(self, replica: _Replica, why: str) -> None:
        """Put `replica` back in rotation (under the lock)."""
        replica.down, replica.probes = False, 0
        log.warning("%s replica %s is back (%s)", self.what, replica.url, why)

    def _probe_loop(self, stop: threading.Event) -> None:
        """Probe each downed replica's /health when due, with backoff, until none is down or close()."""
        with httpx.Client(timeout=min(self.timeout, 5.0), headers=self.headers) as client:
            while not stop.is_set():
                with self._replica_lock:
                    down = [r for r in self._replicas.values() if r.down]
                    if not down:
                        if self._prober is threading.current_thread():
                            self._prober = None
                        return
                    due = min(r.probe_at for r in down)
                self._wake.wait(max(0.0, due - time.monotonic()))
                self._wake.clear()
                for replica in down:
                    if stop.is_set() or replica.probe_at > time.monotonic():
                        continue
                    try:
                        healthy = client.get(replica.url + "/health").status_code == 200
                    except httpx.TransportError:
                        healthy = False
                    with self._replica_lock:
                        if not replica.down:
                            continue  # a request's answer brought it back meanwhile
                        if healthy:
                            self._up(replica, "its /health answers 200")
                        else:
                            replica.probes += 1
                            wait = min(self.max_probe_interval_s, self.probe_interval_s * 2**replica.probes)
                            replica.probe_at = time.monotonic() + wait

    def replica_stats(self) -> list[dict[str, Any]]:
        """Each replica's URL, requests in flight, answers received and whether it is down."""
        with self._replica_lock:
            return [
                {"url": r.url, "outstanding": r.outstanding, "answered": r.answered, "down": r.down}
                for r in self._replicas.values()
            ]

    def request(
        self,
        method: str,
        path: str,
        *,
        retries: int | None = None,
        outage_wait_s: float | None = None,
        replica: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """The JSON body of a 2xx answer. `retries` and `outage_wait_s` override the client's for this
        call; `replica` pins it to that base URL (see the class doc).

        Raises `refused` for a 4xx, `unavailable` once the retries and the outage wait are spent,
        ReplicaLost for a pinned request whose replica is down while another is healthy, ValueError
        for a `replica` that is not one of `base_urls`.
        """
        return self.request_routed(
            method, path, retries=retries, outage_wait_s=outage_wait_s, replica=replica, **kwargs
        )[0]

    def request_routed(
        self,
        method: str,
        path: str,
        *,
        retries: int | None = None,
        outage_wait_s: float | None = None,
        replica: str | None = None,
        **kwargs: Any,
    ) -> tuple[Any, str]:
        """request(), with the base URL of the replica that answered (raises as request())."""
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
            target = self._route(replica)
            response, failure = None, ""
            try:
                response = self._sync().request(method, target.url + path, **kwargs)
            except httpx.TransportError as err:
                failure = f"{type(err).__name__}: {err}"
            except BaseException:
                self._settle_quietly(target)
                raise
            kind, value, asked = self._settle(target, replica, response, failure)
            if kind == "done":
                self._back(attempt, retries, started)
                return value, target.url
            if kind == "again":
                continue
            last = value
            delay = self._delay(attempt, retries, wait_s, started, last, asked)
            if delay is None:
                raise self._give_up(last, attempt + 1, started)
            time.sleep(delay)
            attempt += 1

    async def arequest(
        self,
        method: str,
        path: str,
        *,
        retries: int | None = None,
        outage_wait_s: float | None = None,
        replica: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """request() for asyncio callers."""
        return (
            await self.arequest_routed(
                method, path, retries=retries, outage_wait_s=outage_wait_s, replica=replica, **kwargs
            )
        )[0]

    async def arequest_routed(
        self,
        method: str,
        path: str,
        *,
        retries: int | None = None,
        outage_wait_s: float | None = None,
        replica: str | None = None,
        **kwargs: Any,
    ) -> tuple[Any, str]:
        """request_routed() for asyncio callers."""
        retries = self.retries if retries is None else retries
        wait_s = self.outage_wait_s if outage_wait_s is None else outage_wait_s
        kwargs = _json_body(kwargs)
        last = ""
        started = time.monotonic()
        attempt = 0
        while True:
            while (pause := self._resume_at - time.monotonic()) > 0:  # another request may extend it
                await asyncio.sleep(pause)
            target = self._route(replica)
            response, failure = None, ""
            try:
                response = await self._async().request(method, target.url + path, **kwargs)
            except httpx.TransportError as err:
                failure = f"{type(err).__name__}: {err}"
            except BaseException:  # cancelled, or a bad argument: no longer in flight, no verdict on the replica
                self._settle_quietly(target)
                raise
            kind, value, asked = self._settle(target, replica, response, failure)
            if kind == "done":
                self._back(attempt, retries, started)
                return value, target.url
            if kind == "again":
                continue
            last = value
            delay = self._delay(attempt, retries, wait_s, started, last, asked)
            if delay is None:
                raise self._give_up(last, attempt + 1, started)
            await asyncio.sleep(delay)
            attempt += 1

    def _settle_quietly(self, target: _Replica) -> None:
        with self._replica_lock:
            target.outstanding -= 1

    def get_once(self, path: str, *, replica: str | None = None) -> httpx.Response:
        """One GET with no retry (health probes), to `replica` or else a healthy one.

        Raises httpx.TransportError when it cannot be reached.
        """
        if replica is None:
            with self._replica_lock:
                healthy = [r for r in self._replicas.values() if not r.down] or list(self._replicas.values())
                replica = min(healthy, key=lambda r: r.outstanding).url
        return self._sync().get(replica.rstrip("/") + path)

    def close(self) -> None:
        """Close the connections and stop probing (a later request opens new ones)."""
        with self._replica_lock:
            if self._prober is not None:
                self._prober_stop.set()
                self._wake.set()
                self._prober = None
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
