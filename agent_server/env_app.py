"""The env server: SearchQAEnv sessions over HTTP (create, reset, step, batched step, close, list).

Searches of all sessions go to one retrieval server through one shared client. A step that fails
because the retriever is down answers 503 and leaves its session exactly as it was, so the client
can retry the same step once the retriever is back. A search the retriever refuses or fails on is
that session's observation (search_env.env_search), as in SearchQAEnv: the other sessions of a
batch get their documents.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from agent_server.auth import BearerTokenMiddleware
from agent_server.env_sessions import Session, SessionError, SessionManager
from agent_server.errors import install_error_handlers
from agent_server.request_body import BodyLimits, items_for
from agent_server.request_guard import RequestGuard
from search_env.env_schema import (
    BatchStepRequest,
    BatchStepResponse,
    BatchStepResult,
    CreateSessionRequest,
    ResetRequest,
    ResetResponse,
    SessionInfo,
    StepError,
    StepRequest,
    StepResponse,
)
from search_env.env_search import SearchOutcome, asearch_queries
from search_env.registration import ENV_IDS
from search_env.retriever_client import RetrieverClient
from search_env.search_qa_env import ActionTooLong, EpisodeNotStarted, EpisodeOver, StepPlan, StepResult

_ERRORS = {
    404: {"description": "unknown session or env id"},
    409: {"description": "step before reset, or after the episode ended"},
    422: {"description": "invalid request or option"},
    429: {"description": "too many live sessions"},
    503: {"description": "the retrieval server is unavailable; the session is unchanged"},
}


class StepFailed(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _plan(session: Session, action: str) -> StepPlan:
    try:
        return session.env.plan_step(action)
    except (EpisodeNotStarted, EpisodeOver) as err:
        raise StepFailed(409, str(err)) from err
    except (ActionTooLong, TypeError) as err:
        raise StepFailed(422, str(err)) from err


def _as_response(result: StepResult) -> StepResponse:
    obs, reward, terminated, truncated, info = result
    return StepResponse(observation=obs, reward=float(reward), terminated=terminated, truncated=truncated, info=info)


async def _search(retriever: RetrieverClient, queries: Sequence[str], topk: int) -> list[SearchOutcome]:
    """Outcomes of the searches; StepFailed 503 (before any session changes) if the retriever is down."""
    outcomes = await asearch_queries(retriever, queries, topk)
    for outcome in outcomes:
        if outcome.outage:
            raise StepFailed(503, f"{outcome.error}; the session is unchanged, retry the step")
    return outcomes


def create_env_app(
    retriever_url: str,
    *,
    max_sessions: int = 1024,
    idle_timeout_s: float = 900.0,
    max_action_chars: int = 8192,
    max_obs_chars: int = 32768,
    max_batch: int = 4096,
    datasets: dict[str, str] | None = None,
    retriever_timeout: float = 30.0,
    retriever_retries: int = 2,
    token: str | None = None,
    body_limits: BodyLimits | None = None,
) -> FastAPI:
    """The env server's app; request bodies are held to `body_limits` (agent_server.request_guard)."""
    body_limits = body_limits or BodyLimits(max_items=items_for(max_batch))
    retriever = RetrieverClient(retriever_url, timeout=retriever_timeout, retries=retriever_retries, backoff=0.25)
    manager = SessionManager(
        retriever,
        max_sessions=max_sessions,
        idle_timeout_s=idle_timeout_s,
        max_action_chars=max_action_chars,
        max_obs_chars=max_obs_chars,
        datasets=datasets,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reaper = asyncio.get_running_loop().create_task(manager.reap_forever())
        yield
        reaper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reaper
        await retriever.aclose()

    app = FastAPI(
        title="searchgym env server",
        description="SearchQAEnv sessions over HTTP; `RemoteSearchEnv` is its Gymnasium client.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.sessions = manager
    if token:
        app.add_middleware(BearerTokenMiddleware, token=token)
    app.add_middleware(RequestGuard, limits=body_limits)  # last added: outermost, so before the token check
    install_error_handlers(app)

    @app.exception_handler(SessionError)
    async def _session_error(_: Any, err: SessionError) -> JSONResponse:
        return JSONResponse({"detail": err.message}, status_code=err.status)

    @app.exception_handler(StepFailed)
    async def _step_failed(_: Any, err: StepFailed) -> JSONResponse:
        return JSONResponse({"detail": err.detail}, status_code=err.status)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ready"}

    @app.get("/info")
    async def info() -> dict[str, Any]:
        return {
            "env_ids": sorted(ENV_IDS),
            "retriever_url": retriever.base_url,
            "sessions": len(manager),
            "sessions_created": manager.created_total,
            "sessions_expired": manager.expired_total,
            "datasets": ["world:<preset>", *sorted(manager.datasets)],
            "limits": {
                "max_sessions": max_sessions,
                "idle_timeout_s": idle_timeout_s,
                "max_action_chars": max_action_chars,
                "max_obs_chars": max_obs_chars,
                "max_batch": max_batch,
            },
            "request_body": dataclasses.asdict(body_limits),
        }

    @app.post("/sessions", response_model=SessionInfo, status_code=201, responses=_ERRORS)
    async def create_session(req: CreateSessionRequest) -> SessionInfo:
        """Create a session of a registered env id with env options (data, split, topk, max_turns...)."""
        return manager.create(req.env_id, req.options).describe()

    @app.get("/sessions", response_model=list[SessionInfo])
    async def list_sessions() -> list[SessionInfo]:
        return [s.describe() for s in manager.sessions()]

    @app.get("/sessions/{session_id}", response_model=SessionInfo, responses=_ERRORS)
    async def get_session(session_id: str) -> SessionInfo:
        return manager.get(session_id).describe()

    @app.delete("/sessions/{session_id}", status_code=204, responses=_ERRORS)
    async def close_session(session_id: str) -> None:
        manager.close(session_id)

    @app.post("/sessions/{session_id}/reset", response_model=ResetResponse, responses=_ERRORS)
    async def reset(session_id: str, req: ResetRequest | None = None) -> ResetResponse:
        """Start an episode: a seed, and/or options {index} / {id} / {question, golden_answers}."""
        req = req or ResetRequest()
        session = manager.get(session_id)
        async with session.lock:
            try:
                obs, info = session.env.reset(seed=req.seed, options=req.options)
            except (ValueError, TypeError) as err:
                raise StepFailed(422, f"cannot reset: {err}") from err
        return ResetResponse(observation=obs, info=info)

    @app.post("/sessions/{session_id}/step", response_model=StepResponse, responses=_ERRORS)
    async def step(session_id: str, req: StepRequest) -> StepResponse:
        """One turn: the action text; the observation, reward, terminated, truncated and info."""
        session = manager.get(session_id)
        async with session.lock:
            plan = _plan(session, req.action)
            search = (await _search(retriever, [plan.query], session.env.topk))[0] if plan.query is not None else None
            return _as_response(session.env.apply_step(plan, search))

    @app.post("/sessions/step", response_model=BatchStepResponse, responses=_ERRORS)
    async def batch_step(req: BatchStepRequest) -> BatchStepResponse:
        """One step for each of many sessions; all their searches go in one `/retrieve` request.

        Per-session problems (unknown session, step after the end...) come back as that item's
        `error`; a retriever outage fails the whole request with 503 and changes no session.
        """
        if len(req.steps) > max_batch:
            raise StepFailed(422, f"too many steps in one batch: {len(req.steps)} > limit {max_batch}")
        results: list[BatchStepResult] = [BatchStepResult(session_id=s.session_id) for s in req.steps]
        sessions: dict[int, Session] = {}
        seen: set[str] = set()
        for i, item in enumerate(req.steps):
            if item.session_id in seen:
                results[i].error = StepError(status=409, detail="session appears twice in one batch")
                continue
            seen.add(item.session_id)
            try:
                sessions[i] = manager.get(item.session_id)
            except SessionError as err:
                results[i].error = StepError(status=err.status, detail=err.message)
        # Locks in a fixed order, so two overlapping batches cannot deadlock.
        ordered = sorted(sessions.items(), key=lambda kv: kv[1].id)
        async with contextlib.AsyncExitStack() as stack:
            for _, session in ordered:
                await stack.enter_async_context(session.lock)
            plans: dict[int, StepPlan] = {}
            for i, session in sessions.items():
                try:
                    plans[i] = _plan(session, req.steps[i].action)
                except StepFailed as err:
                    results[i].error = StepError(status=err.status, detail=err.detail)
            searches: dict[int, SearchOutcome] = {}
            by_topk: dict[int, list[int]] = {}
            for i, plan in plans.items():
                if plan.query is not None:
                    by_topk.setdefault(sessions[i].env.topk, []).append(i)
            for topk, idx in by_topk.items():
                found = await _search(retriever, [plans[i].query or "" for i in idx], topk)
                searches.update(zip(idx, found, strict=True))
            for i, plan in plans.items():
                results[i].result = _as_response(sessions[i].env.apply_step(plan, searches.get(i)))
        return BatchStepResponse(results=results)

    return app
