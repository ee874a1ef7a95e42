"""How both servers run under uvicorn: connection-level limits that no ASGI app can see.

Both servers speak HTTP/1.1 through uvicorn's httptools protocol (llhttp, in C) on uvloop where it is
installed: measured against uvicorn's h11 protocol (pure Python) it serves about a quarter more small
requests a second on one event-loop thread. Neither protocol bounds a request head, so
`HeadLimitsProtocol` adds, for each head (request line and headers):

- a deadline: the head must be complete within `head_timeout_s` of the connection opening or of its
  first byte after a response (whatever that byte is: CRLFs, which llhttp skips before a request,
  count too), else the answer is 408 (or, when no head began, the connection is closed). uvicorn's
  keep-alive timer (`timeout_keep_alive`) is armed only after a response and cancelled by any byte,
  so without this a connection sending part of a head (or a byte of it every few seconds, or one
  extra CRLF) is held forever;
- a size: a head past `max_head_bytes` is answered 400 the moment it passes, reading no further
  (llhttp has no limit of its own, and httptools keeps a partial header in memory);
- a lingering close (`LingeringTransport`), so a client still sending reads its refusal.

The body's own deadline and size limit are agent_server.serving.request_guard's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


@dataclass(frozen=True)
class ConnectionLimits:
    head_timeout_s: float = 10.0  # --header-timeout
    keep_alive_s: float = 5.0  # --keep-alive-timeout: an idle connection between requests is closed after it
    max_head_bytes: int = 16 * 1024  # --max-header-bytes: request line and headers (h11's default)

    def __post_init__(self) -> None:
        for name in ("head_timeout_s", "keep_alive_s", "max_head_bytes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ConnectionLimits.{name} must be positive, got {getattr(self, name)}")


# Seconds a closing connection keeps reading (and dropping) what its client still sends.
LINGER_S = 2.0


def _dropped(data: bytes) -> None:
    """A lingering transport's write: its answer is out, nothing may follow it."""


class LingeringTransport:
    """A transport whose close() half-closes first: the answer goes out with a FIN, the connection reads
    on (dropping data) for LINGER_S, then closes. A plain close() with the client's unread bytes in the
    receive buffer makes the kernel send a reset, and a client still sending (a trickled body cut with
    408, an oversized one cut with 413) may then lose the answer before reading it: nginx's
    lingering_close does the same. Everything else is the wrapped transport's."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self.lingering = False
        self.write = transport.write  # bound once: each response's writes skip __getattr__

    def close(self) -> None:
        if self.lingering or self._transport.is_closing():
            return
        if not self._transport.can_write_eof():
            self._transport.close()
            return
        self.lingering = True
        self._transport.write_eof()  # sent once the buffered answer is out
        self.write = _dropped  # a write after write_eof raises; nothing more belongs on this connection
        self._loop.call_later(LINGER_S, self._transport.close)

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _refusal(status: bytes, detail: str) -> bytes:
    """A whole response to a request whose head was not parsed, so no ASGI app can answer it."""
    body = f'{{"detail": "{detail}"}}'.encode()
    head = b"HTTP/1.1 %s\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: %d\r\n\r\n"
    return head % (status, len(body)) + body


class HeadLimitsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size limit for each request head and a
    lingering close (see the module doc).

    A head is counted from the read it starts in; one that starts in the read that also ends the
    request before it (HTTP pipelining, which no common client does) is counted from the next read,
    so its size limit is loose by at most one read (64-256 KiB)."""

    head_timeout_s: float = ConnectionLimits.head_timeout_s
    max_head_bytes: int = ConnectionLimits.max_head_bytes

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_timer: asyncio.TimerHandle | None = None
        self._in_head = True  # before a head's end: waiting for it or reading it
        self._head_started = False  # and a byte of it has come
        self._head_bytes = 0
        self._refused = False  # a pipelined head over the limit: nothing more is read
        super().connection_made(LingeringTransport(transport, self.loop))  # type: ignore[arg-type]
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        if self.transport.lingering or self._refused:  # the answer is out: what the client sends is dropped
            return
        if self._in_head and len(data) > self.max_head_bytes - self._head_bytes:
            self._feed_bounded(memoryview(data))
        else:
            if self._in_head:
                self._head_bytes += len(data)
            super().data_received(data)
        if self._head_started or self._idle_bytes_came():
            self._arm_head_timer()

    def _idle_bytes_came(self) -> bool:
        """Whether bytes came between requests that started no head: uvicorn cancels its keep-alive
        timer on any byte, and llhttp skips CRLFs before a request without starting a message, so
        without a deadline here one extra CRLF after a response would hold the connection forever."""
        return self._in_head and not self._response_pending() and self.timeout_keep_alive_task is None

    def _feed_bounded(self, data: memoryview) -> None:
        """Give the parser only what the limit leaves of the head: the head must end within it."""
        while data:
            room = self.max_head_bytes - self._head_bytes
            if not self._in_head or len(data) <= room:
                self._head_bytes += len(data) if self._in_head else 0
                super().data_received(data)  # type: ignore[arg-type]
                return
            self._head_bytes += room
            super().data_received(data[:room])  # type: ignore[arg-type]
            if self.transport.is_closing():  # refused by the parser
                return
            # Still in a head and none ended (which would have reset the count): this one passed the limit.
            if self._in_head and self._head_bytes >= self.max_head_bytes:
                self._refuse_head()
                return
            data = data[room:]

    def on_message_begin(self) -> None:
        self._head_started = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head = self._head_started = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head, self._head_bytes = True, 0
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _response_pending(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _refuse_head(self) -> None:
        if self._response_pending():
            # A pipelined head: the answer before it is still being made. The connection ends after it.
            self.cycle.keep_alive = False
            self._refused = True
            return
        detail = f"request head exceeds the limit of {self.max_head_bytes} bytes"
        self.transport.write(_refusal(b"400 Bad Request", detail))
        self.transport.close()

    def _arm_head_timer(self) -> None:
        # Armed once per head: trickling bytes does not move the deadline.
        if self._head_timer is None and not self.transport.is_closing():
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._in_head:
            return
        if self._response_pending():  # a pipelined head: its deadline runs on past the answer before it
            self._arm_head_timer()
            return
        if self._head_started:
            detail = f"request head not received within {self.head_timeout_s:g} s"
            self.transport.write(_refusal(b"408 Request Timeout", detail))
        self.transport.close()


def protocol_class(limits: ConnectionLimits) -> type[HeadLimitsProtocol]:
    """uvicorn instantiates the class it is given, so the limits travel as class attributes."""
    settings = {"head_timeout_s": limits.head_timeout_s, "max_head_bytes": limits.max_head_bytes}
    return type("HeadLimitsProtocol", (HeadLimitsProtocol,), settings)


def uvicorn_settings(limits: ConnectionLimits) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.run`/`uvicorn.Config` that apply `limits`: httptools, on uvloop
    where it is installed (uvicorn's `loop="auto"`).

    uvicorn's proxy-headers middleware is off: it rewrites a request's client address and scheme from
    X-Forwarded-For/-Proto (trusted from loopback only), and neither server reads either (only Starlette's
    trailing-slash redirect writes the scheme into its Location), so it was a layer on every request."""
    return {
        "http": protocol_class(limits),
        "loop": "auto",
        "timeout_keep_alive": limits.keep_alive_s,
        "proxy_headers": False,
    }
