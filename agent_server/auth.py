"""Optional bearer-token guard shared by searchgym's servers."""

from __future__ import annotations

import hmac
import os

from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp

from search_env.http_client import TOKEN_ENV

OPEN_PATHS = frozenset({"/health"})


def token_from_env(var: str = TOKEN_ENV) -> str | None:
    """The token to require, from the environment (never from a command line, where `ps` shows it)."""
    return os.environ.get(var) or None


class BearerTokenMiddleware(BaseHTTPMiddleware):
    """Every path but /health needs `Authorization: Bearer <token>` when a token is set."""

    def __init__(self, app: ASGIApp, token: str):
        super().__init__(app)
        self._expected = f"Bearer {token}".encode()

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if request.url.path not in OPEN_PATHS:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, self._expected):
                return JSONResponse(
                    {"detail": "missing or wrong bearer token (set Authorization: Bearer <token>)"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return await call_next(request)
