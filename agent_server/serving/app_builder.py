"""The one place searchgym's servers become FastAPI apps, so each protection is written once.

A server is its routers and its own state (FastAPI's "bigger applications" layout: an APIRouter per
package, agent_server.retrieval.routes and agent_server.env.routes); `build_app` gives both the same
protections, outermost first:

1. request ids and the request log (agent_server.serving.request_log), and on every answer the
   server's replica id (`X-Replica-Id`, also in /info: which of several replicas answered);
2. with tokens, bearer-token auth on every path but /health, on the request head, before any body is
   read (agent_server.serving.auth);
3. request bodies within size, JSON and time limits, decoded off the event loop, and a 500 with no
   traceback that keeps the connection for anything unexpected (agent_server.serving.request_guard);
4. `{"detail": message}` answers with a 4xx for what a client got wrong: ClientError, FastAPI's
   validation and HTTP errors (agent_server.serving.errors).

Auth comes before the body, so an unauthenticated client costs no body's memory or parsing. Limits on a
connection and its request heads are uvicorn's (agent_server.serving.connection_limits).

A hot route whose endpoint takes only the Request and returns a Response can be marked `@direct`:
Starlette's own routing then serves it, without FastAPI's request handler (dependency solving, two
exit stacks, telemetry), which measured about 100 µs of the event loop's ~290 µs per small /retrieve.
Its APIRoute stays, for the OpenAPI schema; every protection above wraps it the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI, Request
from fastapi.routing import APIRoute
from starlette.routing import Route

from agent_server.serving.auth import BearerTokenMiddleware
from agent_server.serving.errors import install_error_handlers
from agent_server.serving.request_body import BodyLimits
from agent_server.serving.request_guard import RequestGuard
from agent_server.serving.request_log import RequestLog
from search_env import __version__

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])
_DIRECT = "__searchgym_direct__"


def direct(endpoint: Endpoint) -> Endpoint:
    """Mark `endpoint` (`async def f(request: Request) -> Response`) to be served by Starlette's routing
    (see the module doc); put it under the router's decorator."""
    setattr(endpoint, _DIRECT, True)
    return endpoint


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
    replica_id: str | None = None,
) -> FastAPI:
    """An app serving `routers`, its routes reaching `state` through `server_state(request)`.

    `lifespan` starts and stops what `state` runs (FastAPI's lifespan; None: nothing to run); `body_limits` bound every
    request body (also published through `body_limits_of`); `tokens`: one or more accepted bearer
    tokens, none for an open server; `allow_msgpack`: bodies may be msgpack as well as JSON;
    `replica_id` names this server among its replicas (`replica_id_of`; None: no X-Replica-Id header).
    """
    app = FastAPI(title=title, description=description, version=__version__, lifespan=lifespan)
    app.state.server = state
    app.state.body_limits = body_limits
    app.state.replica_id = replica_id
    direct_routes: list[Route] = []
    for router in routers:
        app.include_router(router)
        direct_routes += [
            Route(route.path, route.endpoint, methods=list(route.methods), name=route.name)
            for route in router.routes
            if isinstance(route, APIRoute) and getattr(route.endpoint, _DIRECT, False)
        ]
    app.router.routes[:0] = direct_routes  # matched first; their APIRoutes are the schema's
    install_error_handlers(app)
    # Each middleware added wraps the ones before it: the last added runs first.
    accepted = [tokens] if isinstance(tokens, str) else list(tokens or [])
    app.add_middleware(RequestGuard, limits=body_limits, allow_msgpack=allow_msgpack)
    if any(accepted):  # outside the guard: the token is checked before any body is read
        app.add_middleware(BearerTokenMiddleware, token=accepted)
    app.add_middleware(RequestLog, replica_id=replica_id)
    return app


def server_state(request: Request) -> Any:
    """The `state` the request's app was built with (the server's service, sessions...)."""
    return request.app.state.server


def body_limits_of(request: Request) -> BodyLimits:
    """The body limits the request's app holds requests to (shown in both servers' /info)."""
    return request.app.state.body_limits


def replica_id_of(request: Request) -> str | None:
    """The replica id the request's app was built with (both servers' /info)."""
    return request.app.state.replica_id
