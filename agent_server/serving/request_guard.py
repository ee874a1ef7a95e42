"""The ASGI middleware both servers put before auth and every route (agent_server.serving.app_builder):
every request's body read within limits, decoded within limits off the event loop, and no error
that ends the connection when it need not.

- Size: a Content-Length over `max_bytes` is answered 413 before any of the body is read; a body
  without one (chunked) is counted as it arrives and answered 413 the moment it passes the limit.
- Time: the whole body must arrive within `read_timeout_s` of the headers, or the answer is 408.
  (A stalled request head never reaches an ASGI app: agent_server.serving.connection_limits cuts those.)
- Parsing: a non-empty body is decoded by agent_server.serving.request_body (bounded nesting, values and
  numbers; no NaN), in a worker thread when it is big, so /health answers meanwhile. A refusal is a
  400 or 413 with a message; the decoded object is left in the scope (`decoded_body`) for the app.
- Keep-alive: a 413 or 408 closes the connection (the rest of the body is still on the wire); every
  other error keeps it. An unexpected exception becomes a 500 with a message here, inside the app,
  where Starlette's outermost handler would answer and re-raise it, and uvicorn then drops the
  connection.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from anyio import to_thread
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent_server.serving.request_body import BodyError, BodyLimits, decode_body, too_large
from agent_server.serving.request_log import logged_path, request_id

log = logging.getLogger("agent_server")

DECODED_BODY = "searchgym.decoded_body"
# Smaller bodies are decoded on the event loop: a thread hop would cost more than their few ms at most.
INLINE_DECODE_BYTES = 16 * 1024


def decoded_body(scope: Scope) -> tuple[Any, bool] | None:
    """(object, whether it was msgpack) of the request's non-empty body, as the guard decoded it."""
    return scope.get(DECODED_BODY)


async def _answer(scope: Scope, receive: Receive, send: Send, status: int, detail: str, *, close: bool = False) -> None:
    headers = {"connection": "close"} if close else None
    await JSONResponse({"detail": detail}, status_code=status, headers=headers)(scope, receive, send)


class RequestGuard:
    """Pure ASGI (a BaseHTTPMiddleware would read the body through another task and queue)."""

    def __init__(self, app: ASGIApp, limits: BodyLimits, *, allow_msgpack: bool = False):
        self.app = app
        self.limits = limits
        self.allow_msgpack = allow_msgpack

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = {"started": False, "complete": False}

        async def tracked_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                state["complete"] = True
            await send(message)

        try:
            body = await self._read_body(scope, receive, tracked_send)
            if body is None:
                return
            if body:
                try:
                    scope[DECODED_BODY] = await self._decode(body, scope)
                except BodyError as err:
                    await _answer(scope, receive, tracked_send, err.status, err.message)
                    return
            await self.app(scope, _replay(body, receive), tracked_send)
        except Exception as err:
            if state["started"] and not state["complete"]:
                raise  # half an answer is out: only closing the connection can tell the client
            rid = request_id(scope)
            log.exception("unexpected error in %s %s id=%s", scope.get("method"), logged_path(scope), rid)
            if not state["started"]:
                # The message and traceback may name files and hosts of the server: they go to its log only.
                detail = f"internal error ({type(err).__name__}); the server's log has the details"
                if rid is not None:
                    detail += f" under request id {rid}"
                await _answer(scope, receive, tracked_send, 500, detail)

    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None once it has answered 413/408 or the client has gone."""
        limit = self.limits.max_bytes
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _answer(scope, receive, send, 413, too_large(declared, limit).message, close=True)
            return None
        # One growing buffer rather than a list of chunks: a single allocation to free when refused.
        body = bytearray()
        try:
            async with asyncio.timeout(self.limits.read_timeout_s):
                more = True
                while more and len(body) <= limit:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    body += message.get("body", b"")
                    more = message.get("more_body", False)
        except TimeoutError:
            detail = f"request body not received within {self.limits.read_timeout_s:g} s (got {len(body)} bytes)"
            await _answer(scope, receive, send, 408, detail, close=True)
            return None
        if len(body) > limit:  # the moment it passed the limit: nothing more is read
            del body
            await _answer(scope, receive, send, 413, too_large(None, limit).message, close=True)
            return None
        return bytes(body)

    async def _decode(self, body: bytes, scope: Scope) -> tuple[Any, bool]:
        decode = functools.partial(
            decode_body, body, _header(scope, b"content-type"), self.limits, allow_msgpack=self.allow_msgpack
        )
        if len(body) <= INLINE_DECODE_BYTES:
            return decode()
        return await to_thread.run_sync(decode)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """The app's receive: the body already read, in one message; then the server's own (disconnect)."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
