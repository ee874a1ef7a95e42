"""JSON error answers shared by searchgym's servers: a status and a `detail` message, never a traceback.

A route refuses a request by raising a `ClientError` (its 4xx and message); FastAPI's own refusals
(validation, unknown paths and methods) get the same `{"detail": ...}` shape. An unexpected exception
is answered (500) by agent_server.serving.request_guard, which keeps the connection.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

MAX_REPORTED_ERRORS = 10


class ClientError(Exception):
    """A request the server refuses for what it asks: answered `status` (a 4xx; a class attribute,
    or given) with `{"detail": message}` by every app the builder makes."""

    status = 400

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


def validation_message(err: ValidationError | RequestValidationError) -> str:
    """`field.path: what is wrong; ...` from pydantic's errors (the first ten, then how many more)."""
    errors = err.errors()
    parts = []
    for e in errors[:MAX_REPORTED_ERRORS]:
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    if len(errors) > MAX_REPORTED_ERRORS:
        parts.append(f"and {len(errors) - MAX_REPORTED_ERRORS} more errors")
    return "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    """`{"detail": message}` answers for ClientError and for FastAPI's validation and HTTP errors."""

    @app.exception_handler(ClientError)
    async def _refused(_: Request, err: ClientError) -> JSONResponse:
        return JSONResponse({"detail": err.message}, status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        for e in err.errors():
            if e.get("type") == "json_invalid":
                reason = (e.get("ctx") or {}).get("error", "")
                return JSONResponse({"detail": f"request body is not valid JSON: {reason}"}, status_code=400)
        return JSONResponse({"detail": validation_message(err)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, err: StarletteHTTPException) -> JSONResponse:
        detail = str(err.detail)
        if err.status_code == 400 and detail == "There was an error parsing the body":
            detail = "request body could not be read as UTF-8 JSON"
        return JSONResponse({"detail": detail}, status_code=err.status_code, headers=err.headers)
