"""The env server's routes: SearchQAEnv sessions over HTTP (create, reset, step, batched step, close,
list), plus `/health` and `/info`.

A session is used only by whoever created it (agent_server.env.sessions); a create or step with a
`request_id` is applied once (agent_server.env.steps). Data sets are the operator's
(agent_server.env.datasets), loaded once, off the event loop.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from agent_server.env.sessions import with_flag
from agent_server.env.state import EnvServer
from agent_server.env.steps import StepFailed, batch_once, run_to_end, step_once
from agent_server.serving.app_builder import body_limits_of, replica_id_of, server_state
from agent_server.serving.auth import caller_id
from search_env.env_schema import (
    BatchStepRequest,
    BatchStepResponse,
    CreateSessionRequest,
    ResetRequest,
    ResetResponse,
    SessionInfo,
    StepRequest,
    StepResponse,
)
from search_env.registration import ENV_IDS

_ERRORS = {
    404: {"description": "unknown session (or another client's) or env id"},
    409: {
        "description": "step before reset, or after the episode ended; a request_id reused for another request; "
        "data of an embedded world the server's retriever does not serve"
    },
    422: {"description": "invalid request or option"},
    429: {"description": "too many live sessions"},
    503: {"description": "the retrieval server is unavailable; the session is unchanged"},
}

router = APIRouter()


async def _server(request: Request) -> EnvServer:
    return server_state(request)


Server = Annotated[EnvServer, Depends(_server)]


@router.get("/health")
async def health(server: Server) -> dict[str, str | None]:
    """'ready', or 'degraded' while the retriever is down (the server itself still answers: 200)."""
    problem = await server.retriever_problem()
    return {"status": "ready", "detail": None} if problem is None else {"status": "degraded", "detail": problem}


@router.get("/info")
async def info(server: Server, request: Request) -> dict[str, Any]:
    manager, registry = server.sessions, server.datasets
    return {
        "env_ids": sorted(ENV_IDS),
        "retriever_url": server.retriever.base_url,
        "sessions": len(manager),
        "sessions_created": manager.created_total,
        "sessions_expired": manager.expired_total,
        "datasets": registry.offered(),
        "data_loads": registry.loads,
        "limits": server.limits(),
        "request_body": dataclasses.asdict(body_limits_of(request)),
        "replica_id": replica_id_of(request),
    }


@router.post("/sessions", response_model=SessionInfo, status_code=201, responses=_ERRORS)
async def create_session(req: CreateSessionRequest, server: Server, request: Request) -> SessionInfo:
    """Create a session of a registered env id with env options (data, split, topk, max_turns...).

    With `request_id`, a repeat of the request gets the same session instead of another.
    """
    return await server.sessions.create(req.env_id, req.options, caller_id(request), req.request_id)


@router.get("/sessions", response_model=list[SessionInfo])
async def list_sessions(server: Server, request: Request) -> list[SessionInfo]:
    """The caller's sessions (those created with the same bearer token, or with none)."""
    return [s.describe() for s in server.sessions.sessions(caller_id(request))]


@router.get("/sessions/{session_id}", response_model=SessionInfo, responses=_ERRORS)
async def get_session(session_id: str, server: Server, request: Request) -> SessionInfo:
    return server.sessions.get(session_id, caller_id(request)).describe()


@router.delete("/sessions/{session_id}", status_code=204, responses=_ERRORS)
async def close_session(session_id: str, server: Server, request: Request) -> None:
    server.sessions.close(session_id, caller_id(request))


@router.post("/sessions/{session_id}/reset", response_model=ResetResponse, responses=_ERRORS)
async def reset(session_id: str, server: Server, request: Request, req: ResetRequest | None = None) -> ResetResponse:
    """Start an episode: a seed, and/or options {index} / {id} / {question, golden_answers}.

    A refused reset (422) leaves the session exactly as it was.
    """
    req = req or ResetRequest()
    session = server.sessions.get(session_id, caller_id(request))
    options = req.options.model_dump(exclude_none=True) if req.options is not None else None
    async with session.lock:
        try:
            obs, info = session.reset(req.seed, options)
        except (ValueError, TypeError) as err:
            raise StepFailed(f"cannot reset: {with_flag(err)}", 422) from err
    return ResetResponse(observation=obs, info=info)


@router.post("/sessions/{session_id}/step", response_model=StepResponse, responses=_ERRORS)
async def step(session_id: str, req: StepRequest, server: Server, request: Request) -> StepResponse:
    """One turn: the action text; the observation, reward, terminated, truncated and info.

    With `request_id`, a repeat of the request gets the recorded answer and the turn is not taken again.
    """
    session = server.sessions.get(session_id, caller_id(request))
    return await run_to_end(step_once(server.retriever, session, req))


@router.post("/sessions/step", response_model=BatchStepResponse, responses=_ERRORS)
async def batch_step(req: BatchStepRequest, server: Server, request: Request) -> BatchStepResponse:
    """One step for each of many sessions; all their searches go in one `/retrieve` request.

    Per-session problems (unknown session, step after the end, a reused request_id...) come back
    as that item's `error`; a retriever outage fails the whole request with 503 and changes no
    session. An item with a `request_id` already answered gets its recorded answer.
    """
    if len(req.steps) > server.max_batch:
        raise StepFailed(f"too many steps in one batch: {len(req.steps)} > limit {server.max_batch}", 422)
    return await run_to_end(batch_once(server.retriever, server.sessions, req, caller_id(request)))
