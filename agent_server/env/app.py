"""The env server: SearchQAEnv sessions over HTTP (create, reset, step, batched step, close, list).

Searches of all sessions go to one retrieval server through one shared client. A step that fails
because the retriever is down answers 503 and leaves its session exactly as it was, so the client
can retry the same step once the retriever is back. A search the retriever refuses or fails on is
that session's observation (search_env.env_search), as in SearchQAEnv: the other sessions of a
batch get their documents.

A create or step with a `request_id` is applied once: it runs to its end even if its client gives up,
its answer is recorded, and a retry with the same id gets that answer (agent_server.env.replay_log). A
session is used only by whoever created it (agent_server.env.sessions). Data sets are the operator's
(agent_server.env.datasets), loaded once, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from agent_server.env.datasets import DEFAULT_WORLDS, DataRegistry
from agent_server.env.replay_log import ReplayMismatch, fingerprint
from agent_server.env.sessions import Session, SessionError, SessionManager
from agent_server.serving.auth import BearerTokenMiddleware, caller_id
from agent_server.serving.errors import install_error_handlers
from agent_server.serving.request_body import BodyLimits, items_for
from agent_server.serving.request_guard import RequestGuard
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
from search_env.http_client import RequestRefused, ServiceUnavailable
from search_env.registration import ENV_IDS
from search_env.retriever_client import RetrieverClient
from search_env.search_qa_env import ActionTooLong, EpisodeNotStarted, EpisodeOver, StepPlan, StepResult

log = logging.getLogger("agent_server.env")
T = TypeVar("T")

_ERRORS = {
    404: {"description": "unknown session (or another client's) or env id"},
    409: {"description": "step before reset, or after the episode ended; a request_id reused for another request"},
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


def _retrieve_exception(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved here: a step whose client left must not log "never retrieved"


async def _run_to_end(work: Awaitable[T]) -> T:
    """Await `work`, which runs to its end even if this request is cancelled (its client gave up):
    a step whose search was sent is applied and recorded, and the client's retry gets its answer."""
    task = asyncio.ensure_future(work)
    task.add_done_callback(_retrieve_exception)
    return await asyncio.shield(task)


async def _retriever_problem(retriever: RetrieverClient, timeout_s: float) -> str | None:
    """None if the retriever answers its /health as ready (or has none, as Search-R1's own server);
    else what is wrong, in words that name no host or path (/health is open to anyone)."""
    try:
        body = await retriever.http.arequest("GET", "/health", retries=0, timeout=timeout_s)
    except RequestRefused:
        return None  # it answers, only not /health: searches will tell
    except (ServiceUnavailable, ValueError) as err:  # ValueError: an answer that is not JSON
        log.warning("health: %s", err)
        return "the retrieval server is unreachable or not ready; steps that search answer 503"
    status = body.get("status") if isinstance(body, dict) else None
    if status in (None, "ready"):
        return None
    log.warning("health: the retrieval server says %r", status)
    return "the retrieval server is not ready; steps that search answer 503"


def create_env_app(
    retriever_url: str,
    *,
    max_sessions: int = 1024,
    idle_timeout_s: float = 900.0,
    max_action_chars: int = 8192,
    max_obs_chars: int = 32768,
    max_batch: int = 4096,
    datasets: dict[str, str] | None = None,
    worlds: Iterable[str] = DEFAULT_WORLDS,
    data_cache: int = 8,
    retriever_timeout: float = 30.0,
    retriever_retries: int = 2,
    health_timeout_s: float = 2.0,
    token: str | Sequence[str] | None = None,
    body_limits: BodyLimits | None = None,
) -> FastAPI:
    """The env server's app. `datasets` maps names clients may give to files, folders or Hugging Face
    names; `worlds` are the embedded presets served; `token` one or more accepted bearer tokens;
    request bodies are held to `body_limits` (agent_server.serving.request_guard).

    Raises ValueError for a data set or world that cannot be offered.
    """
    registry = DataRegistry(datasets, worlds, cache_size=data_cache)
    body_limits = body_limits or BodyLimits(max_items=items_for(max_batch))
    retriever = RetrieverClient(retriever_url, timeout=retriever_timeout, retries=retriever_retries, backoff=0.25)
    manager = SessionManager(
        retriever,
        registry,
        max_sessions=max_sessions,
        idle_timeout_s=idle_timeout_s,
        max_action_chars=max_action_chars,
        max_obs_chars=max_obs_chars,
    )
    probe: dict[str, asyncio.Task[str | None]] = {}

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
    app.state.datasets = registry
    tokens = [token] if isinstance(token, str) else list(token or [])
    if tokens:
        app.add_middleware(BearerTokenMiddleware, token=tokens)
    app.add_middleware(RequestGuard, limits=body_limits)  # last added: outermost, so before the token check
    install_error_handlers(app)

    @app.exception_handler(SessionError)
    async def _session_error(_: Any, err: SessionError) -> JSONResponse:
        return JSONResponse({"detail": err.message}, status_code=err.status)

    @app.exception_handler(StepFailed)
    async def _step_failed(_: Any, err: StepFailed) -> JSONResponse:
        return JSONResponse({"detail": err.detail}, status_code=err.status)

    @app.exception_handler(ReplayMismatch)
    async def _replay_mismatch(_: Any, err: ReplayMismatch) -> JSONResponse:
        return JSONResponse({"detail": err.message}, status_code=err.status)

    @app.get("/health")
    async def health() -> dict[str, str | None]:
        """'ready', or 'degraded' while the retriever is down (the server itself still answers: 200)."""
        task = probe.get("retriever")
        if task is None or task.done():
            # One probe at a time, however many callers: /health is open, the retriever should not pay for it.
            task = probe["retriever"] = asyncio.get_running_loop().create_task(
                _retriever_problem(retriever, health_timeout_s)
            )
        problem = await asyncio.shield(task)
        return {"status": "ready", "detail": None} if problem is None else {"status": "degraded", "detail": problem}

    @app.get("/info")
    async def info() -> dict[str, Any]:
        return {
            "env_ids": sorted(ENV_IDS),
            "retriever_url": retriever.base_url,
            "sessions": len(manager),
            "sessions_created": manager.created_total,
            "sessions_expired": manager.expired_total,
            "datasets": registry.offered(),
            "data_loads": registry.loads,
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
    async def create_session(req: CreateSessionRequest, request: Request) -> SessionInfo:
        """Create a session of a registered env id with env options (data, split, topk, max_turns...).

        With `request_id`, a repeat of the request gets the same session instead of another.
        """
        return await manager.create(req.env_id, req.options, caller_id(request), req.request_id)

    @app.get("/sessions", response_model=list[SessionInfo])
    async def list_sessions(request: Request) -> list[SessionInfo]:
        """The caller's sessions (those created with the same bearer token, or with none)."""
        return [s.describe() for s in manager.sessions(caller_id(request))]

    @app.get("/sessions/{session_id}", response_model=SessionInfo, responses=_ERRORS)
    async def get_session(session_id: str, request: Request) -> SessionInfo:
        return manager.get(session_id, caller_id(request)).describe()

    @app.delete("/sessions/{session_id}", status_code=204, responses=_ERRORS)
    async def close_session(session_id: str, request: Request) -> None:
        manager.close(session_id, caller_id(request))

    @app.post("/sessions/{session_id}/reset", response_model=ResetResponse, responses=_ERRORS)
    async def reset(session_id: str, request: Request, req: ResetRequest | None = None) -> ResetResponse:
        """Start an episode: a seed, and/or options {index} / {id} / {question, golden_answers}.

        A refused reset (422) leaves the session exactly as it was.
        """
        req = req or ResetRequest()
        session = manager.get(session_id, caller_id(request))
        options = req.options.model_dump(exclude_none=True) if req.options is not None else None
        async with session.lock:
            try:
                obs, info = session.reset(req.seed, options)
            except (ValueError, TypeError) as err:
                raise StepFailed(422, f"cannot reset: {err}") from err
        return ResetResponse(observation=obs, info=info)

    async def step_once(session: Session, req: StepRequest) -> StepResponse:
        async with session.lock:
            digest = fingerprint(req.action)
            recorded = session.replies.get(req.request_id, digest)
            if recorded is not None:
                return recorded
            plan = _plan(session, req.action)
            search = (await _search(retriever, [plan.query], session.env.topk))[0] if plan.query is not None else None
            answer = _as_response(session.env.apply_step(plan, search))
            session.replies.record(req.request_id, digest, answer)
            return answer

    @app.post("/sessions/{session_id}/step", response_model=StepResponse, responses=_ERRORS)
    async def step(session_id: str, req: StepRequest, request: Request) -> StepResponse:
        """One turn: the action text; the observation, reward, terminated, truncated and info.

        With `request_id`, a repeat of the request gets the recorded answer and the turn is not taken again.
        """
        session = manager.get(session_id, caller_id(request))
        return await _run_to_end(step_once(session, req))

    async def batch_once(req: BatchStepRequest, owner: str | None) -> BatchStepResponse:
        results: list[BatchStepResult] = [BatchStepResult(session_id=s.session_id) for s in req.steps]
        sessions: dict[int, Session] = {}
        seen: set[str] = set()
        for i, item in enumerate(req.steps):
            if item.session_id in seen:
                results[i].error = StepError(status=409, detail="session appears twice in one batch")
                continue
            seen.add(item.session_id)
            try:
                sessions[i] = manager.get(item.session_id, owner)
            except SessionError as err:
                results[i].error = StepError(status=err.status, detail=err.message)
        # Locks in a fixed order, so two overlapping batches cannot deadlock.
        ordered = sorted(sessions.items(), key=lambda kv: kv[1].id)
        async with contextlib.AsyncExitStack() as stack:
            for _, session in ordered:
                await stack.enter_async_context(session.lock)
            plans: dict[int, StepPlan] = {}
            digests: dict[int, str] = {}
            for i, session in sessions.items():
                item = req.steps[i]
                digests[i] = fingerprint(item.action)
                try:
                    recorded = session.replies.get(item.request_id, digests[i])
                    if recorded is not None:
                        results[i].result = recorded  # a replayed item: answered, not stepped again
                        continue
                    plans[i] = _plan(session, item.action)
                except ReplayMismatch as err:
                    results[i].error = StepError(status=err.status, detail=err.message)
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
                answer = _as_response(sessions[i].env.apply_step(plan, searches.get(i)))
                sessions[i].replies.record(req.steps[i].request_id, digests[i], answer)
                results[i].result = answer
        return BatchStepResponse(results=results)

    @app.post("/sessions/step", response_model=BatchStepResponse, responses=_ERRORS)
    async def batch_step(req: BatchStepRequest, request: Request) -> BatchStepResponse:
        """One step for each of many sessions; all their searches go in one `/retrieve` request.

        Per-session problems (unknown session, step after the end, a reused request_id...) come back
        as that item's `error`; a retriever outage fails the whole request with 503 and changes no
        session. An item with a `request_id` already answered gets its recorded answer.
        """
        if len(req.steps) > max_batch:
            raise StepFailed(422, f"too many steps in one batch: {len(req.steps)} > limit {max_batch}")
        return await _run_to_end(batch_once(req, caller_id(request)))

    return app
