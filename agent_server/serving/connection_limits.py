"""How both servers run under uvicorn: connection-level limits that no ASGI app can see.

uvicorn's h11 protocol arms its keep-alive timer (`timeout_keep_alive`) only after a response and
cancels it on any byte, and has no deadline for a request's head at all: a connection that sends
part of a head (or one byte of it every few seconds) is held forever. `HeadDeadlineH11Protocol` adds
that deadline: the head must be complete within `head_timeout_s` of the connection opening or of its
first byte after a response; else the answer is 408 (or, when nothing was sent, the connection is
closed). h11 itself refuses a head over `max_head_bytes` with a 400. The body's own deadline and size
limit are agent_server.serving.request_guard's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


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

    def close(self) -> None:
        if self.lingering or self._transport.is_closing():
            return
        if not self._transport.can_write_eof():
            self._transport.close()
            return
        self.lingering = True
        self._transport.write_eof()  # sent once the buffered answer is out
        self._loop.call_later(LINGER_S, self._transport.close)

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HeadDeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head (see the module doc) and a lingering
    close (`LingeringTransport`)."""

    head_timeout_s: float = ConnectionLimits.head_timeout_s

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(LingeringTransport(transport, self.loop))  # type: ignore[arg-type]
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_started = False
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        if self.transport.lingering:  # the answer is out: what the client still sends is dropped
            return
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:  # still inside a head (or between requests)
            self._head_started = True
            self._arm_head_timer()
        else:
            self._cancel_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        # Armed once per head: trickling bytes does not move the deadline.
        if self._head_timer is None and not self.transport.is_closing():
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._head_started = False

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self._head_started:
            # Written by hand: h11 will not send a response to a request it has not parsed.
            detail = f'{{"detail": "request head not received within {self.head_timeout_s:g} s"}}'.encode()
            head = (
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                b"content-length: %d\r\n\r\n" % len(detail)
            )
            self.transport.write(head + detail)
        self.transport.close()


def protocol_class(head_timeout_s: float) -> type[HeadDeadlineH11Protocol]:
    """uvicorn instantiates the class it is given, so the deadline travels as a class attribute."""
    return type("HeadDeadlineH11Protocol", (HeadDeadlineH11Protocol,), {"head_timeout_s": head_timeout_s})


def uvicorn_settings(limits: ConnectionLimits) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.run`/`uvicorn.Config` that apply `limits` (h11, whatever is installed)."""
    return {
        "http": protocol_class(limits.head_timeout_s),
        "timeout_keep_alive": limits.keep_alive_s,
        "h11_max_incomplete_event_size": limits.max_head_bytes,
    }
