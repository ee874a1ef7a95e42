"""Request ids and the request log, the same on both servers.

Each request gets an id: the client's `X-Request-ID` when it is a plain token (1-64 characters of
letters, digits and `._:-`), else a fresh random one. The id is echoed in the answer's `X-Request-ID`
header (the server's replica id, when it has one, in `X-Replica-Id`) and names the request in the
server's log, so the log line of a failure is found from the answer a client saw (a 500 says its
id too: agent_server.serving.request_guard). Every request is logged at DEBUG (`--log-level debug`):
method, path, status, milliseconds, id. Not at INFO: uvicorn's access log is off for the same
reason, a line per request at thousands of queries a second.
"""

from __future__ import annotations

import logging
import random
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("agent_server.requests")

REQUEST_ID_HEADER = "x-request-id"
REPLICA_ID_HEADER = "x-replica-id"
_SCOPE_KEY = "searchgym.request_id"
_CLIENT_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")


def logged_path(scope: Scope, limit: int = 200) -> str:
    """The request's path as a log line may show it: `%0a` in a URL is decoded into the path, so control
    characters are escaped (no forged log line) and the path is cut to `limit` characters."""
    path = str(scope.get("path", ""))
    shown = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in path[:limit])
    return shown + ("..." if len(path) > limit else "")


def request_id(scope: Scope) -> str | None:
    """The id RequestLog gave this request; None outside it."""
    return scope.get(_SCOPE_KEY)


def _given_id(scope: Scope) -> str | None:
    for key, value in scope["headers"]:
        if key == REQUEST_ID_HEADER.encode():
            return value.decode("ascii") if _CLIENT_ID.fullmatch(value) else None
    return None


class RequestLog:
    """Pure ASGI, outermost: it sees every answer, the guard's refusals included."""

    def __init__(self, app: ASGIApp, replica_id: str | None = None):
        self.app = app
        # Encoded once: it rides on every answer. Latin-1 is what an HTTP header value may hold.
        self.replica_header = (
            () if replica_id is None else ((REPLICA_ID_HEADER.encode(), replica_id.encode("latin-1")),)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # A fresh id names a log line and guards nothing: `random`'s generator (seeded from the OS, and
        # again in a forked child), not a read of the OS's random source per request (secrets.token_hex).
        rid = _given_id(scope) or f"{random.getrandbits(64):016x}"
        scope[_SCOPE_KEY] = rid
        header = (REQUEST_ID_HEADER.encode(), rid.encode())
        status = 0
        began = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header, *self.replica_header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if log.isEnabledFor(logging.DEBUG):
                ms = (time.perf_counter() - began) * 1000
                log.debug("%s %s %s %.1f ms id=%s", scope["method"], logged_path(scope), status or "-", ms, rid)
