"""JSON error answers shared by searchgym's servers: a status and a `detail` message, never a traceback."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("agent_server")


def validation_message(err: ValidationError | RequestValidationError) -> str:
    """`field.path: what is wrong; ...` from pydantic's errors."""
    parts = []
    for e in err.errors():
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
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

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, err: Exception) -> JSONResponse:
        # The message and traceback may name files and hosts of the server: they go to its log only.
        log.exception("unexpected error")
        return JSONResponse({"detail": f"internal error ({type(err).__name__}); the server's log has the details"},
                            status_code=500)
