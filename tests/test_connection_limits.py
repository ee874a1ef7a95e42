"""agent_server.serving.connection_limits on a real uvicorn (httptools) server with short limits: the
keep-alive timeout, a head deadline for every head (the one after a response too), pipelined requests
all answered whatever their total size, and the head size counted across reads."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from fastapi import APIRouter

from agent_server.serving.app_builder import build_app
from agent_server.serving.connection_limits import ConnectionLimits, HeadLimitsProtocol, uvicorn_settings
from agent_server.serving.request_body import BodyLimits
from tests.thread_server import serving

LIMITS = ConnectionLimits(head_timeout_s=0.5, keep_alive_s=0.5, max_head_bytes=1024)
CUT_WITHIN = 15.0  # generous: seconds any cut may take on a busy machine
GET = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    router = APIRouter()

    @router.get("/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    app = build_app(title="t", description="d", routers=[router], state=None, body_limits=BodyLimits())
    with serving(app, **uvicorn_settings(LIMITS)) as url:
        yield int(url.rsplit(":", 1)[1])


def _read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection."""
    sock.settimeout(CUT_WITHIN)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_the_servers_run_the_head_limits_protocol():
    assert issubclass(uvicorn_settings(LIMITS)["http"], HeadLimitsProtocol)


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(port):
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(GET)
        answer = _read_all(sock)  # returns only once the server closes
    assert answer.count(b"HTTP/1.1 200 OK") == 1 and b"HTTP/1.1 408" not in answer


def test_each_head_has_its_deadline_the_one_after_a_response_too(port):
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(GET + b"GET /ping HTTP/1.1\r\nHo")  # the second head never ends
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 200 OK")
    assert b"HTTP/1.1 408 Request Timeout" in answer and b"request head not received within 0.5 s" in answer


def _read_response(sock: socket.socket) -> bytes:
    """One /ping answer (its body ends with '}'), read as it comes."""
    sock.settimeout(CUT_WITHIN)
    data = b""
    while not (b"\r\n\r\n" in data and data.endswith(b"}")):
        chunk = sock.recv(65536)
        assert chunk, f"closed before the answer: {data!r}"
        data += chunk
    return data


@pytest.mark.parametrize("extra", [b"\r\n", b"\r\n" * 500, b"\n"])
def test_bytes_that_start_no_head_after_a_response_are_under_the_head_deadline(port, extra):
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(GET)
        assert _read_response(sock).startswith(b"HTTP/1.1 200 OK")
        sock.sendall(extra)  # cancels uvicorn's keep-alive timer; llhttp skips it, no head starts
        rest = _read_all(sock)  # returns only once the server closes
    assert rest == b""


def test_an_extra_crlf_in_the_read_of_a_request_leaves_the_keep_alive_deadline(port):
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(GET + b"\r\n")
        answer = _read_all(sock)
    assert answer.count(b"HTTP/1.1 200 OK") == 1 and b"HTTP/1.1 408" not in answer


def test_crlfs_trickled_after_a_response_do_not_move_the_deadline(port):
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(GET)
        _read_response(sock)
        sock.settimeout(0.1)
        closed = False
        for _ in range(int(CUT_WITHIN / 0.1)):  # a CRLF every 0.1 s, well inside the 0.5 s deadlines
            try:
                sock.sendall(b"\r\n")
                closed = sock.recv(1) == b""
            except TimeoutError:
                continue
            except OSError:  # a reset: the server closed while we sent
                closed = True
            if closed:
                break
    assert closed


def test_pipelined_requests_over_the_head_limit_together_are_all_answered(port):
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(GET * 100)  # 3,100 bytes of heads in one write, each 31
        answer = _read_all(sock)
    assert answer.count(b"HTTP/1.1 200 OK") == 100 and b"HTTP/1.1 400" not in answer


@pytest.mark.parametrize(("size", "status"), [(1024, b"200"), (1025, b"400")])
def test_a_head_is_counted_across_reads(port, size, status):
    head = b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Filler: \r\n\r\n"
    head = head.replace(b"X-Filler: ", b"X-Filler: " + b"y" * (size - len(head)))
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for start in range(0, size, 300):  # four reads on the server's side, as a slow client's
            sock.sendall(head[start : start + 300])
            time.sleep(0.02)
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
