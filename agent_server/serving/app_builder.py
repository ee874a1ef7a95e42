"""The one place searchgym's servers become FastAPI apps, so each protection is written once.

A server is its routers and its own state (FastAPI's "bigger applications" layout: an APIRouter per
package, agent_server.retrieval.routes and agent_server.env.routes); `build_app` gives both the same
protections, outermost first:

1. request ids and the request log (agent_server.serving.request_log);
2. request bodies within size, JSON and time limits, decoded off the event loop, and a 500 with no
   traceback that keeps the connection for anything unexpected (agent_server.serving.request_guard);
3. with tokens, bearer-token auth on every path but /health (agent_server.serving.auth);
4. `{"detail": message}` answers with a 4xx for what a client got wrong: ClientError, FastAPI's
   validation and HTTP errors (agent_server.serving.errors).

The body limits come before auth, so an unauthenticated client too is cut off at them. Limits on a
connection and its request heads are uvicorn's (agent_server.serving.connection_limits).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import APIRouter, FastAPI, Request

from agent_server.serving.auth import BearerTokenMiddleware
from agent_server.serving.errors import install_error_handlers
from agent_server.serving.request_body import BodyLimits
from agent_server.serving.request_guard import RequestGuard
from agent_server.serving.request_log import RequestLog
from search_env import __version__

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def build_app(
    *,
    title: str,
    description: str,
    routers: Sequence[APIRouter],
    state: object,
    lifespan: Lifespan | None = None,
    body_limits: BodyLimits,
    tokens: str | Sequence[str] | None = None,
    allow_msgpack: bool = False,
) -> FastAPI:
    """An app serving `routers`, its routes reaching `state` through `server_state(request)`.

    `lifespan` starts and stops what `state` runs (FastAPI's lifespan; None: nothing to run); `body_limits` bound every
    request body (also published through `body_limits_of`); `tokens`: one or more accepted bearer
    tokens, none for an open server; `allow_msgpack`: bodies may be msgpack as well as JSON.
    """
    app = FastAPI(title=title, description=description, version=__version__, lifespan=lifespan)
    app.state.server = state
    app.state.body_limits = body_limits
    for router in routers:
        app.include_router(router)
    install_error_handlers(app)
    # Each middleware added wraps the ones before it: the last added runs first.
    accepted = [tokens] if isinstance(tokens, str) else list(tokens or [])
    if any(accepted):
        app.add_middleware(BearerTokenMiddleware, token=accepted)
    app.add_middleware(RequestGuard, limits=body_limits, allow_msgpack=allow_msgpack)
    app.add_middleware(RequestLog)
    return app


def server_state(request: Request) -> Any:
    """The `state` the request's app was built with (the server's service, sessions...)."""
    return request.app.state.server


def body_limits_of(request: Request) -> BodyLimits:
    """The body limits the request's app holds requests to (shown in both servers' /info)."""
    return request.app.state.body_limits
