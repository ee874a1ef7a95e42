"""Optional bearer-token guard shared by searchgym's servers, and the caller's identity for the env server."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Collection

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from search_env.http_client import TOKEN_ENV

OPEN_PATHS = frozenset({"/health"})
# More tokens the env server accepts, comma-separated: one per client who must not see the others' sessions.
TOKENS_ENV = "SEARCHGYM_API_TOKENS"


def token_from_env(var: str = TOKEN_ENV) -> str | None:
    """The token to require, from the environment (never from a command line, where `ps` shows it)."""
    return os.environ.get(var) or None


def tokens_from_env() -> list[str]:
    """`$SEARCHGYM_API_TOKEN` and the comma-separated `$SEARCHGYM_API_TOKENS`, without blanks or repeats."""
    tokens = [os.environ.get(TOKEN_ENV, ""), *os.environ.get(TOKENS_ENV, "").split(",")]
    return list(dict.fromkeys(t.strip() for t in tokens if t.strip()))


def bearer_token(request: Request | Headers) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (the scheme in any case, RFC 7235); None if absent."""
    headers = request.headers if isinstance(request, Request) else request
    scheme, _, value = headers.get("authorization", "").strip().partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value else None


def caller_id(request: Request) -> str | None:
    """Who is calling, as the sha256 of their bearer token (the token itself is never kept); None without one."""
    token = bearer_token(request)
    return None if token is None else hashlib.sha256(token.encode("latin-1")).hexdigest()


class BearerTokenMiddleware:
    """Every path but /health needs `Authorization: Bearer <token>` with one of the tokens when any is set.

    Pure ASGI, and outside the body guard (agent_server.serving.app_builder): the token is checked on the
    request head, before a byte of the body is read or decoded, so an unauthenticated client costs no
    body's memory or parsing. A refused request that announced a body gets `Connection: close`: its body
    is still on the wire and is never read."""

    def __init__(self, app: ASGIApp, token: str | Collection[str]):
        self.app = app
        tokens = [token] if isinstance(token, str) else list(token)
        self._expected = [t.encode() for t in tokens if t]

    def _accepts(self, given: str | None) -> bool:
        if given is None:
            return False
        raw = given.encode("latin-1")  # header bytes as sent (starlette decodes them as latin-1)
        # Every token compared, so the time taken does not tell which one nearly matched.
        return sum(hmac.compare_digest(raw, t) for t in self._expected) > 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if self._accepts(bearer_token(headers)):
            await self.app(scope, receive, send)
            return
        has_body = headers.get("content-length", "0") not in ("", "0") or "chunked" in headers.get(
            "transfer-encoding", ""
        ).lower()
        refusal = JSONResponse(
            {"detail": "missing or wrong bearer token (set Authorization: Bearer <token>)"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer", **({"Connection": "close"} if has_body else {})},
        )
        await refusal(scope, receive, send)
