"""The retrieval server's routes: Search-R1's `POST /retrieve`, plus `/health` and `/info`.

Every client dialect in use is answered in the shape it parses:
  - `{"queries": [...]}` in JSON or msgpack (Search-R1, verl, prime, older GEM) -> `{"result": [[...]]}`
  - `{"query": "..."}` in JSON (SkyRL-gym) -> `{"result": [[...]]}`
  - `{"query": "..."}` in msgpack (GEM) -> `{"result": [...]}`, the flat list of its one query
A msgpack request is answered in msgpack.

Awkward query text (a lone surrogate, too long, too many terms) is repaired and searched, or with
`strict` limits refused with a 422 naming the query, before any search (search_env.query_sanitizer).
A query the backend still fails on gets an empty row and an entry in `errors`, and the rest of the
batch its hits (query_isolation); only a backend that cannot search at all answers 503.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from agent_server.backends.base import Hit
from agent_server.retrieval.query_isolation import BackendFailure
from agent_server.retrieval.service import RetrievalService
from agent_server.serving.app_builder import body_limits_of, direct, replica_id_of, server_state
from agent_server.serving.errors import validation_message
from agent_server.serving.request_body import EMPTY_BODY, encode_msgpack
from agent_server.serving.request_guard import decoded_body
from search_env.query_sanitizer import QueryRefused
from search_env.retrieval_schema import (
    ErrorResponse,
    HealthResponse,
    RetrieveRequest,
    RetrieveResponse,
)
from search_env.threads import current_threads

router = APIRouter()


async def _service(request: Request) -> RetrievalService:
    return server_state(request)


Service = Annotated[RetrievalService, Depends(_service)]


def _document(hit: Hit) -> dict[str, str]:
    return {"id": hit.id, "contents": hit.contents}


def _format(hits: list[list[Hit]], return_scores: bool) -> list[list[dict[str, Any]]]:
    # Plain dicts, not pydantic objects: a 2,560-query turn would otherwise spend its time here.
    if return_scores:
        return [[{"document": _document(h), "score": float(h.score)} for h in row] for row in hits]
    return [[_document(h) for h in row] for row in hits]


_RETRIEVE_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": RetrieveRequest.model_json_schema()},
            "application/msgpack": {"schema": RetrieveRequest.model_json_schema()},
        },
    }
}


def _error(status: int, message: str, as_msgpack: bool = False) -> Response:
    if as_msgpack:
        return Response(encode_msgpack({"detail": message}), status, media_type="application/msgpack")
    return JSONResponse({"detail": message}, status_code=status)


@router.get("/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
async def health(service: Service) -> JSONResponse:
    """Ready only once the indexes are loaded: 503 with status 'loading' (or 'failed') before."""
    body = {"status": service.state, "detail": service.error}
    return JSONResponse(body, status_code=200 if service.state == "ready" else 503)


@router.get("/info")
async def info(service: Service, request: Request) -> dict[str, Any]:
    """Backend, index size, encoder, limits, cache hit counts, batching figures, awkward-query counts,
    CPU threads, and this server's replica id."""
    limits = service.limits.model_dump()
    return service.info() | {
        "limits": limits,
        "request_body": dataclasses.asdict(body_limits_of(request)),
        "threads": current_threads(),
        "replica_id": replica_id_of(request),
    }


@router.post(
    "/retrieve",
    response_model=RetrieveResponse,
    responses={
        400: {"model": ErrorResponse},
        413: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
        503: {"model": ErrorResponse},
    },
    openapi_extra=_RETRIEVE_OPENAPI,
)
@direct
async def retrieve(request: Request) -> Response:
    """Search-R1's `/retrieve`: top-k passages for each query (JSON or msgpack; see module doc)."""
    service: RetrievalService = server_state(request)
    limits = service.limits
    decoded = decoded_body(request.scope)  # the guard decodes every non-empty body, within limits
    if decoded is None:
        return _error(400, EMPTY_BODY)
    payload, is_msgpack = decoded
    as_msgpack = is_msgpack or "msgpack" in request.headers.get("accept", "")
    if not isinstance(payload, dict):
        return _error(422, f"request body must be an object, got {type(payload).__name__}", as_msgpack)
    queries = payload.get("queries")
    if isinstance(queries, list) and len(queries) > limits.max_queries:
        # Before pydantic, which would check (and report on) every one of them.
        message = f"too many queries in one request: {len(queries)} > limit {limits.max_queries}"
        return _error(422, message, as_msgpack)
    try:
        req = RetrieveRequest.model_validate(payload)
    except ValidationError as err:
        return _error(422, validation_message(err), as_msgpack)
    problem = limits.violation(req)
    if problem:
        return _error(422, problem, as_msgpack)
    try:
        queries = await service.prepare(req.batch)
    except QueryRefused as err:
        return _error(422, f"{err} (this server runs with --strict)", as_msgpack)
    if service.state != "ready":
        message = f"retriever is {service.state}" + (f": {service.error}" if service.error else "")
        return _error(503, message, as_msgpack)

    try:
        answer = await service.search(queries, req.topk or limits.default_topk)
    except BackendFailure as err:
        return _error(503, str(err), as_msgpack)
    result: Any = _format(answer.hits, req.return_scores)
    if req.query is not None and is_msgpack:
        result = result[0]  # GEM parses `result` as the flat list of its one query
    body: dict[str, Any] = {"result": result}
    if answer.errors:  # only then: Search-R1's trainer and the field-for-field shape stay as they were
        body["errors"] = [{"index": i, "detail": detail} for i, detail in sorted(answer.errors.items())]
    if as_msgpack:
        return Response(encode_msgpack(body), media_type="application/msgpack")
    # orjson: JSONResponse's compact JSON (keys in order, UTF-8) several times faster; the only byte that
    # differs is a tiny float's form (2.5e-7 for json.dumps' 2.5e-07), the same number to any JSON parser.
    return Response(orjson.dumps(body), media_type="application/json")
