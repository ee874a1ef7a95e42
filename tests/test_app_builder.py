"""The servers' shared protections are written once, in agent_server.serving.app_builder: both real
servers (uvicorn on loopback) refuse a missing token, an oversized body and hostile JSON with the same
status, the same message and the same headers, and tag every answer with a request id; a route of
any router given to the builder gets the same protections; and the builder is the only place in
agent_server that makes a FastAPI app or adds middleware."""

from __future__ import annotations

import ast
import http.client
import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

import agent_server
from agent_server.serving.app_builder import build_app, direct
from agent_server.serving.connection_limits import ConnectionLimits, uvicorn_settings
from agent_server.serving.errors import ClientError
from agent_server.serving.request_body import BodyLimits
from agent_server.serving.request_guard import decoded_body
from search_env.server_process import ServerProcess
from tests.conftest import TEST_WORLD
from tests.thread_server import serving

TOKEN = "builder-test-token"
AUTH = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
MAX_BODY = 4096
LIMITS = ["--max-body-bytes", str(MAX_BODY)]


@pytest.fixture(scope="module")
def servers(small_world, tmp_path_factory) -> Iterator[dict[str, tuple[ServerProcess, str]]]:
    """A retriever and an env server, both requiring TOKEN, with the same body limit."""
    logs = tmp_path_factory.mktemp("logs")
    env = {"SEARCHGYM_API_TOKEN": TOKEN}  # the env server's retriever client sends it too
    retriever = ServerProcess(["retriever", "--backend", "bm25", "--world", TEST_WORLD, *LIMITS], logs / "r.log", env)
    started = [retriever.start()]
    try:
        retriever.wait_ready()
        env_server = ServerProcess(["env", "--retriever-url", retriever.url, *LIMITS], logs / "e.log", env)
        started.append(env_server.start())
        env_server.wait_ready(timeout=120)
        yield {"retriever": (retriever, "/retrieve"), "env": (env_server, "/sessions")}
    finally:
        for server in started:
            server.stop()


def _answer(server: ServerProcess, method: str, path: str, body: bytes | None, headers: dict[str, str]):
    r = httpx.request(method, server.url + path, content=body, headers=headers, timeout=30)
    return r.status_code, r.json(), r.headers.get("www-authenticate"), r.headers.get("x-request-id")


# (method, path or None for the server's own JSON route, body, headers, expected status)
REFUSALS = [
    pytest.param("GET", "/info", None, {}, 401, id="no-token"),
    pytest.param("GET", "/info", None, {"authorization": "Bearer wrong"}, 401, id="wrong-token"),
    pytest.param("GET", "/info", None, {"authorization": "Basic " + TOKEN}, 401, id="other-scheme"),
    pytest.param("POST", None, b"[" * 1000 + b"]" * 1000, AUTH, 400, id="nested-json"),
    pytest.param("POST", None, b'{"topk": NaN}', AUTH, 400, id="nan"),
    pytest.param("POST", None, b'{"x": ' + b"9" * 100 + b"}", AUTH, 400, id="long-number"),
    pytest.param("POST", None, b"{not json", AUTH, 400, id="not-json"),
    pytest.param("POST", None, b"\xff\xfe\xfa", AUTH, 400, id="not-utf8"),
    pytest.param("POST", None, b" " * (MAX_BODY + 1), AUTH, 413, id="oversized"),
    # The token is checked before the body on both: an unauthenticated body is never read or decoded.
    pytest.param("POST", None, b" " * (MAX_BODY + 1), {}, 401, id="oversized-no-token"),
    pytest.param("POST", None, b"[" * 100 + b"]" * 100, {}, 401, id="nested-no-token"),
    pytest.param("GET", "/nowhere", None, AUTH, 404, id="unknown-path"),
    pytest.param("DELETE", "/info", None, AUTH, 405, id="wrong-method"),
]


@pytest.mark.parametrize(("method", "path", "body", "headers", "status"), REFUSALS)
def test_both_servers_refuse_alike(servers, method, path, body, headers, status):
    answers = {}
    for name, (server, route) in servers.items():
        code, detail, challenge, rid = _answer(server, method, path or route, body, headers)
        assert code == status, (name, detail)
        assert isinstance(detail["detail"], str) and detail["detail"], (name, detail)
        assert rid, name  # every answer, a refusal too, has its request id
        answers[name] = (code, detail, challenge)
    assert answers["retriever"] == answers["env"]
    if status == 401:
        assert answers["env"][2] == "Bearer"


def test_a_request_id_is_the_clients_when_it_is_a_plain_token(servers):
    for server, _ in servers.values():
        given = httpx.get(server.url + "/health", headers={"x-request-id": "trainer-7.step:42"})
        assert given.headers["x-request-id"] == "trainer-7.step:42"
        for odd in ("a" * 65, "two words", "<script>"):
            fresh = httpx.get(server.url + "/health", headers={"x-request-id": odd})
            assert fresh.status_code == 200 and fresh.headers["x-request-id"] not in ("", odd)
        ids = {httpx.get(server.url + "/health").headers["x-request-id"] for _ in range(3)}
        assert len(ids) == 3


def test_the_token_is_checked_before_any_body_is_read(servers):
    # Headers announcing a body, and no body: an unauthenticated request is answered 401 at once (the body
    # is never awaited) and its connection closed, since the announced body would follow on it.
    for name, (server, route) in servers.items():
        host, port = server.url.removeprefix("http://").split(":")
        for announced in (b"Content-Length: 3000\r\n", b"Transfer-Encoding: chunked\r\n"):
            with socket.create_connection((host, int(port)), timeout=30) as sock:
                sock.sendall(b"POST " + route.encode() + b" HTTP/1.1\r\nHost: x\r\n" + announced + b"\r\n")
                head = sock.recv(65536).decode("latin-1")
                assert head.startswith("HTTP/1.1 401"), (name, head)
                assert "connection: close" in head.lower() and "www-authenticate: bearer" in head.lower()
                while sock.recv(65536):  # the server closes it: recv ends with b"" instead of timing out
                    pass


def test_health_is_open_and_the_rest_answers_with_the_token(servers):
    for server, _ in servers.values():
        assert httpx.get(server.url + "/health").status_code == 200
        info = httpx.get(server.url + "/info", headers=AUTH)
        assert info.status_code == 200 and info.json()["request_body"]["max_bytes"] == MAX_BODY


def test_any_router_given_to_the_builder_gets_every_protection():
    router = APIRouter()

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom /secret/path")

    @router.get("/teapot")
    async def teapot() -> None:
        raise ClientError("short and stout", 418)

    @router.post("/echo")
    async def echo(body: dict) -> JSONResponse:
        return JSONResponse(body)

    @router.post("/direct-echo", summary="documented")
    @direct
    async def direct_echo(request: Request) -> JSONResponse:
        decoded = decoded_body(request.scope)
        return JSONResponse(decoded[0] if decoded else None)

    app = build_app(
        title="t",
        description="d",
        routers=[router],
        state=None,
        body_limits=BodyLimits(max_bytes=1024),
        tokens=[TOKEN],
    )
    with serving(app, **uvicorn_settings(ConnectionLimits())) as url:
        port = int(url.rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/boom", headers={**AUTH, "x-request-id": "boom-1"})
        r = conn.getresponse()
        detail = json.loads(r.read())["detail"]
        # The type and the request id only: the message can name the server's files and hosts (its log has it).
        assert r.status == 500 and "internal error (RuntimeError)" in detail and "boom-1" in detail
        assert "kaboom" not in detail and r.getheader("x-request-id") == "boom-1"
        sock = conn.sock
        conn.request("POST", "/echo", body=b'{"a": 1}', headers=AUTH)
        r = conn.getresponse()
        # The 500 kept the connection.
        assert r.status == 200 and json.loads(r.read()) == {"a": 1} and conn.sock is sock
        conn.close()

        assert httpx.get(url + "/teapot", headers=AUTH).json() == {"detail": "short and stout"}
        assert httpx.get(url + "/teapot").status_code == 401
        assert httpx.post(url + "/echo", content=b"[" * 100 + b"]" * 100, headers=AUTH).status_code == 400
        assert httpx.post(url + "/echo", content=b" " * 2000, headers=AUTH).status_code == 413
        refused = httpx.post(url + "/echo", content=b'{"a": 1', headers=AUTH)
        assert refused.status_code == 400 and refused.json()["detail"].startswith("request body is not valid JSON")

        # A @direct route: Starlette's routing serves it, every protection still wraps it, the schema has it.
        assert app.router.routes[0].endpoint is direct_echo and type(app.router.routes[0]).__name__ == "Route"
        echoed = httpx.post(url + "/direct-echo", content=b'{"b": [1, 2]}', headers={**AUTH, "x-request-id": "d-1"})
        assert echoed.json() == {"b": [1, 2]} and echoed.headers["x-request-id"] == "d-1"
        assert httpx.post(url + "/direct-echo", content=b"{}").status_code == 401
        assert httpx.post(url + "/direct-echo", content=b"[" * 100 + b"]" * 100, headers=AUTH).status_code == 400
        assert httpx.post(url + "/direct-echo", content=b" " * 2000, headers=AUTH).status_code == 413
        assert httpx.get(url + "/direct-echo", headers=AUTH).status_code == 405
        assert app.openapi()["paths"]["/direct-echo"]["post"]["summary"] == "documented"


def _calls(tree: ast.AST, name: str) -> int:
    """Calls of `name(...)` or `x.name(...)`, and decorators `@x.name(...)`."""
    count = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if (isinstance(func, ast.Name) and func.id == name) or (
                isinstance(func, ast.Attribute) and func.attr == name
            ):
                count += 1
    return count


def test_the_builder_is_the_only_place_an_app_is_made_or_protected():
    root = Path(agent_server.__file__).parent
    found: dict[str, dict[str, int]] = {}
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for name in ("FastAPI", "add_middleware", "exception_handler", "BearerTokenMiddleware", "RequestGuard"):
            if n := _calls(tree, name):
                found.setdefault(name, {})[path.relative_to(root).as_posix()] = n
    assert found.get("FastAPI") == {"serving/app_builder.py": 1}
    assert found.get("add_middleware") == {"serving/app_builder.py": 3}
    assert set(found.get("exception_handler", {})) == {"serving/errors.py"}
    assert "BearerTokenMiddleware" not in found and "RequestGuard" not in found  # added as classes, once


def test_a_path_cannot_forge_a_log_line(caplog):
    # `%0a` in a URL is decoded into the ASGI path: logged as it is, it would start a line of its own.
    router = APIRouter()

    @router.get("/boom/{anything:path}")
    async def boom(anything: str) -> None:
        raise RuntimeError("kaboom")

    app = build_app(title="t", description="d", routers=[router], state=None, body_limits=BodyLimits())
    forged = "/boom/x%0a2026-12-08 00:00:00,000 ERROR agent_server: FORGED%0d%1b[31m"
    with caplog.at_level(logging.DEBUG, logger="agent_server"), serving(app) as url:
        for path in (forged, "/nowhere%0aFORGED"):
            httpx.get(url + path)
    lines = "\n".join(r.getMessage() for r in caplog.records).splitlines()
    assert any("FORGED" in line for line in lines)  # the request was logged, escaped: \x0a, \x0d, \x1b
    assert all(not line.lstrip().startswith(("2026-12-08", "FORGED")) for line in lines), lines
    assert not any("\x1b" in line or "\r" in line for line in lines)
