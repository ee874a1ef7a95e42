"""Hostile requests against both live servers (retriever and env server, real uvicorn on loopback):
each refused with a 4xx (or 408) and a message, in bounded time and memory, while /health answers,
and the connection still usable after any error that leaves the request fully read."""

from __future__ import annotations

import http.client
import json
import select
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import msgpack
import pytest

from agent_server.serving.request_body import items_for
from search_env.server_process import ServerProcess
from tests.conftest import TEST_WORLD

HEAD_TIMEOUT, BODY_TIMEOUT = 1, 2  # short, so the slow-request tests are quick
SHORT_TIMEOUTS = ["--header-timeout", str(HEAD_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT)]
CUT_WITHIN = 15.0  # generous: seconds any refusal may take on a busy machine
MIB = 1024 * 1024
JSON = {"content-type": "application/json"}
ITEMS = items_for(4096)  # both servers' default --max-json-items (4 per query or step, plus 1024)


@pytest.fixture(scope="module")
def retriever(small_world, tmp_path_factory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("logs") / "hostile-retriever.log"
    args = ["retriever", "--backend", "bm25", "--world", TEST_WORLD, *SHORT_TIMEOUTS]
    server = ServerProcess(args, log).start()
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def env(retriever, tmp_path_factory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("logs") / "hostile-env.log"
    server = ServerProcess(["env", "--retriever-url", retriever.url, *SHORT_TIMEOUTS], log).start()
    try:
        yield server.wait_ready(timeout=120)
    finally:
        server.stop()


# The path each server's JSON body goes to: refused before any route sees it.
PATHS = {"retriever": "/retrieve", "env": "/sessions"}


@pytest.fixture(params=["retriever", "env"])
def target(request) -> tuple[ServerProcess, str]:
    return request.getfixturevalue(request.param), PATHS[request.param]


def _rss_mib(server: ServerProcess) -> float:
    assert server.proc is not None
    with open(f"/proc/{server.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _timed_post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    r = httpx.post(url, content=body, headers=headers or JSON, timeout=CUT_WITHIN)
    return r, time.monotonic() - start


# -- parsing cost: refused while parsing, with a message ------------------------------------------------
HOSTILE_JSON = [
    pytest.param(b"[" * 5000 + b"]" * 5000, 400, "nested deeper than 32 levels", id="deep-arrays"),
    pytest.param(b'{"a":' * 2000 + b"1" + b"}" * 2000, 400, "nested deeper than 32 levels", id="deep-objects"),
    pytest.param(b'{"queries": ["x"], "topk": ' + b"9" * 5000 + b"}", 400, "a number of 5000 characters", id="topk"),
    pytest.param(b'{"queries": ["x"], "topk": -' + b"1" * 100_000 + b"}", 400, "a number of 100001", id="long-int"),
    pytest.param(b'{"queries": ["x"], "topk": 1e999999999}', 400, "out of range", id="exponent"),
    pytest.param(b'{"queries": ["x"], "topk": 3.5e400}', 400, "out of range", id="exponent-float"),
    pytest.param(b'{"queries": ["x"], "topk": NaN}', 400, "NaN is not a JSON value", id="nan"),
    pytest.param(b'{"queries": [-Infinity]}', 400, "-Infinity is not a JSON value", id="infinity"),
    pytest.param(json.dumps({"queries": [0] * 1_000_000}).encode(), 413, f"more than {ITEMS} JSON values", id="1M"),
    pytest.param(json.dumps({"steps": [[0] * 9] * 20_000}).encode(), 413, f"more than {ITEMS}", id="nested-200k"),
    pytest.param(json.dumps({"queries": [{}] * 150_000}).encode(), 413, f"more than {ITEMS}", id="objects-150k"),
]


@pytest.mark.parametrize(("body", "status", "message"), HOSTILE_JSON)
def test_hostile_json_is_refused_while_parsing(target, body, status, message):
    server, path = target
    r, took = _timed_post(server.url + path, body)
    print(f"\n{path} {len(body)} bytes: {r.status_code} in {took * 1000:.0f} ms")
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]
    assert httpx.get(server.url + "/health").status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"\x81\xa7queries" + b"\x91" * 5000 + b"\x90", 400, "nested deeper than 32 levels"),
        (msgpack.packb({"queries": [0] * 1_000_000}), 413, f"more than {ITEMS} values"),
        (msgpack.packb({"queries": [[0] * 10_000, [0] * 10_000]}), 413, f"more than {ITEMS} values"),
        (msgpack.packb({"queries": ["x"], "topk": float("nan")}), 400, "nan is not a number"),
    ],
)
def test_hostile_msgpack_is_refused_too(retriever, body, status, message):
    r, _ = _timed_post(retriever.url + "/retrieve", body, {"content-type": "application/msgpack"})
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]


def test_health_answers_while_big_bodies_are_refused(target):
    server, path = target
    bodies = [
        json.dumps({"queries": [0] * 1_000_000}).encode(),  # 3 MB
        b"[" + b"0," * (15 * MIB) + b"0]",  # 30 MB
        json.dumps({"queries": [0] * 8000, "steps": [0] * 8000}).encode(),  # within limits: refused by schema
    ]
    answers: list[tuple[int, float]] = []

    def hostile() -> None:
        for body in bodies:
            r, took = _timed_post(server.url + path, body)
            answers.append((r.status_code, took))

    worker = threading.Thread(target=hostile)
    worker.start()
    slowest = 0.0
    with httpx.Client(timeout=CUT_WITHIN) as client:
        for _ in range(1000):  # bounded: the refusals take well under a second each
            if not worker.is_alive():
                break
            start = time.monotonic()
            assert client.get(server.url + "/health").status_code == 200
            slowest = max(slowest, time.monotonic() - start)
            time.sleep(0.01)
    worker.join(timeout=60)
    print(f"\n{path}: refusals {answers}; slowest /health meanwhile {slowest * 1000:.0f} ms")
    assert [status for status, _ in answers] == [413, 413, 422]
    assert slowest < 5.0


def test_a_schema_refusal_names_the_first_errors_only(env):
    r = httpx.post(env.url + "/sessions/step", json={"steps": [0] * 16_000})
    detail = r.json()["detail"]
    assert r.status_code == 422 and detail.startswith("steps.0: Input should be a valid dictionary")
    assert detail.endswith("and 15990 more errors") and len(detail) < 2000


# -- size: refused as the bytes arrive ---------------------------------------------------------------------
def _read_response(sock: socket.socket, timeout: float = CUT_WITHIN) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + _content_length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def _content_length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


def test_a_chunked_body_over_the_limit_is_cut_early_and_costs_no_memory(target):
    server, path = target
    before = _rss_mib(server)
    peak = before
    sent = 0
    chunk = b"%x\r\n%s\r\n" % (MIB, b"[" + b" " * (MIB - 1))  # valid JSON so far, never finished
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head.encode())
        sock.settimeout(CUT_WITHIN)
        for _ in range(500):  # up to 500 MiB
            if select.select([sock], [], [], 0)[0]:
                break  # the server has answered
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += MIB
            peak = max(peak, _rss_mib(server))
        response = _read_response(sock)
    took = time.monotonic() - start
    after = _rss_mib(server)
    rss = f"RSS {before:.0f} -> peak {peak:.0f} -> {after:.0f} MiB"
    print(f"\n{path}: sent {sent // MIB} MiB, answered in {took:.2f} s; {rss}")
    assert _status(response) == 413, response[:300]
    assert b"exceeds the limit of 33554432 bytes" in response
    assert b"connection: close" in response.lower()
    assert sent < 100 * MIB  # reading stopped at the 32 MiB limit (plus what the sockets buffer)
    assert after - before < 100 and peak - before < 100


def test_a_declared_length_over_the_limit_is_refused_before_reading(target):
    server, path = target
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {500 * MIB}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head.encode())  # and not one byte of the body
        response = _read_response(sock)
    assert _status(response) == 413, response[:300]
    assert f"request body of {500 * MIB} bytes exceeds the limit".encode() in response


MAX_HEAD = 16 * 1024  # both servers' default --max-header-bytes


def _head_of(size: int, path: str = "/health") -> bytes:
    """A GET head of exactly `size` bytes (request line, headers, blank line)."""
    head = f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Filler: \r\n\r\n".encode()
    return head.replace(b"X-Filler: ", b"X-Filler: " + b"y" * (size - len(head)))


def test_a_head_over_the_limit_is_refused_the_byte_it_passes_it(retriever):
    with socket.create_connection(("127.0.0.1", retriever.port)) as sock:
        sock.sendall(_head_of(MAX_HEAD))
        assert _status(_read_response(sock)) == 200  # at the limit: served, and the connection kept
        sock.sendall(_head_of(MAX_HEAD + 1))
        response = _read_response(sock)
        closed = sock.recv(1) == b""
    assert _status(response) == 400, response[:300]
    assert f"request head exceeds the limit of {MAX_HEAD} bytes".encode() in response
    assert closed


def test_a_head_growing_past_the_limit_is_cut_before_it_ends(target):
    server, path = target
    pieces = [_head_of(1024 * 1024, path)[i : i + 4096] for i in range(0, 1024 * 1024, 4096)]
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        for piece in pieces:  # bounded: 256 pieces of a 1 MiB head
            if select.select([sock], [], [], 0.02)[0]:
                break  # the server has answered
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
        response = _read_response(sock)
    assert _status(response) == 400, response[:300]
    assert sent < 1024 * 1024  # answered before the head's end, which never came
    assert httpx.get(server.url + "/health").status_code == 200


# -- time: a slow or stalled request is cut ------------------------------------------------------------------
def _trickle(sock: socket.socket, data: bytes, every: float) -> bytes:
    """Send `data` a byte at a time until the server answers or closes; its answer."""
    for byte in data:  # bounded by len(data)
        if select.select([sock], [], [], every)[0]:
            break
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
    return _read_response(sock)


SLOW = [
    pytest.param(b"POST {path} HTTP/1.1\r\nHost: x\r\n", None, HEAD_TIMEOUT, "request head", id="head-stalled"),
    pytest.param(
        b"",
        b"POST {path} HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 200,
        HEAD_TIMEOUT,
        "request head",
        id="head-trickled",
    ),
    pytest.param(
        b"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",
        None,
        BODY_TIMEOUT,
        "request body not received within 2 s",
        id="body-stalled",
    ),
    pytest.param(
        b"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"1\r\n \r\n" * 100,
        BODY_TIMEOUT,
        "request body not received within 2 s",
        id="body-trickled",
    ),
]


@pytest.mark.parametrize(("opening", "trickled", "timeout", "message"), SLOW)
def test_a_slow_or_stalled_request_is_cut_with_408(target, opening, trickled, timeout, message):
    server, path = target
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(opening.replace(b"{path}", path.encode()))
        response = _trickle(sock, trickled, 0.2) if trickled else _read_response(sock)
        closed = sock.recv(1) == b""
    took = time.monotonic() - start
    print(f"\n{path}: 408 after {took:.2f} s")
    assert _status(response) == 408, response[:300]
    assert message.encode() in response
    assert closed
    assert timeout <= took + 0.1 and took < timeout + CUT_WITHIN
    assert httpx.get(server.url + "/health").status_code == 200


def test_a_connection_that_sends_nothing_is_closed(target):
    server, _ = target
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        response = _read_response(sock)
    took = time.monotonic() - start
    assert response == b""  # nothing asked, nothing answered: closed
    assert HEAD_TIMEOUT - 0.1 <= took < HEAD_TIMEOUT + CUT_WITHIN


# -- keep-alive: the connection survives every error that leaves the request read ------------------------------
def _requests_on_one_connection(server: ServerProcess, requests: list[tuple[str, str, bytes | None, int]]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=CUT_WITHIN)
    conn.connect()
    sock = conn.sock
    try:
        for method, path, body, status in requests:
            conn.request(method, path, body=body, headers=JSON if body is not None else {})
            r = conn.getresponse()
            r.read()
            assert r.status == status, (method, path, r.status)
            assert not r.will_close and conn.sock is sock, f"{method} {path} {status} closed the connection"
    finally:
        conn.close()


def test_the_connection_stays_usable_after_error_responses(retriever, env):
    deep = b"[" * 5000 + b"]" * 5000
    ok_query = json.dumps({"queries": ["river"], "topk": 1}).encode()
    _requests_on_one_connection(
        retriever,
        [
            ("POST", "/retrieve", b"{not json", 400),
            ("POST", "/retrieve", deep, 400),
            ("POST", "/retrieve", b'{"queries": ["x"], "topk": NaN}', 400),
            ("POST", "/retrieve", json.dumps({"queries": [0] * 1_000_000}).encode(), 413),
            ("POST", "/retrieve", json.dumps({"queries": [0] * 3}).encode(), 422),
            ("GET", "/retrieve", None, 405),
            ("GET", "/nope", None, 404),
            ("POST", "/retrieve", ok_query, 200),
        ],
    )
    _requests_on_one_connection(
        env,
        [
            ("POST", "/sessions", deep, 400),
            ("POST", "/sessions/nope/step", b'{"action": "x"}', 404),
            ("POST", "/sessions", b'{"env_id": "searchgym/Nope-v9"}', 404),
            ("POST", "/sessions", b'{"options": {"topk": 0}}', 422),
            ("POST", "/sessions", json.dumps({"options": {"x": [0] * 200_000}}).encode(), 413),
            ("GET", "/health", None, 200),
        ],
    )
