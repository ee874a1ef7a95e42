"""Steps of the env server's sessions, one or a batch, each applied once.

Searches of all sessions go to one retrieval server through one shared client. A step that fails
because the retriever is down answers 503 and leaves its session exactly as it was, so the client
can retry the same step once the retriever is back. A search the retriever refuses or fails on is
that session's observation (search_env.env_search), as in SearchQAEnv: the other sessions of a
batch get their documents.

A step with a `request_id` is applied once: it runs to its end even if its client gives up, its
answer is recorded, and a retry with the same id gets that answer (agent_server.env.replay_log).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from agent_server.env.replay_log import ReplayMismatch, fingerprint
from agent_server.env.sessions import Session, SessionError, SessionManager
from agent_server.serving.errors import ClientError
from search_env.env_schema import (
    BatchStepRequest,
    BatchStepResponse,
    BatchStepResult,
    StepError,
    StepRequest,
    StepResponse,
)
from search_env.env_search import SearchOutcome, asearch_queries
from search_env.retriever_client import RetrieverClient
from search_env.search_qa_env import ActionTooLong, EpisodeNotStarted, EpisodeOver, StepPlan, StepResult

T = TypeVar("T")


class StepFailed(ClientError):
    """A step (or reset) refused: 409 out of turn, 422 a bad action, 503 the retriever down."""


def _plan(session: Session, action: str) -> StepPlan:
    try:
        return session.env.plan_step(action)
    except (EpisodeNotStarted, EpisodeOver) as err:
        raise StepFailed(str(err), 409) from err
    except (ActionTooLong, TypeError) as err:
        raise StepFailed(str(err), 422) from err


def _as_response(result: StepResult) -> StepResponse:
    obs, reward, terminated, truncated, info = result
    return StepResponse(observation=obs, reward=float(reward), terminated=terminated, truncated=truncated, info=info)


async def _search(retriever: RetrieverClient, queries: Sequence[str], topk: int) -> list[SearchOutcome]:
    """Outcomes of the searches; StepFailed 503 (before any session changes) if the retriever is down."""
    outcomes = await asearch_queries(retriever, queries, topk)
    for outcome in outcomes:
        if outcome.outage:
            raise StepFailed(f"{outcome.error}; the session is unchanged, retry the step", 503)
    return outcomes


def _retrieve_exception(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved here: a step whose client left must not log "never retrieved"


async def run_to_end(work: Awaitable[T]) -> T:
    """Await `work`, which runs to its end even if this request is cancelled (its client gave up):
    a step whose search was sent is applied and recorded, and the client's retry gets its answer."""
    task = asyncio.ensure_future(work)
    task.add_done_callback(_retrieve_exception)
    return await asyncio.shield(task)


async def step_once(retriever: RetrieverClient, session: Session, req: StepRequest) -> StepResponse:
    """One turn of `session`, or the answer recorded for `req.request_id`.

    Raises StepFailed (409, 422, 503), ReplayMismatch (409)."""
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


async def batch_once(
    retriever: RetrieverClient, manager: SessionManager, req: BatchStepRequest, owner: str | None
) -> BatchStepResponse:
    """One step for each item of `req`, all searches in one `/retrieve` request per topk; an item's
    own problem is its `error`. Raises StepFailed 503 (no session changed) if the retriever is down."""
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
            except (ReplayMismatch, StepFailed) as err:
                results[i].error = StepError(status=err.status, detail=err.message)
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
