"""What the two web apps (the serving endpoint and the review app) answer when they refuse a
request: ``{"error": {"code", "message"}}`` with a 4xx status, for their own errors, FastAPI's
validation errors and Starlette's HTTP errors alike."""
from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


def json_error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def install_error_handlers(app: FastAPI, own: type[Exception], validation_status: int, validation_code: str) -> None:
    """JSON errors on ``app``: ``own`` exceptions carry ``status``, ``code`` and ``message``;
    a request that fails validation is ``validation_status`` / ``validation_code``, naming the
    field."""

    @app.exception_handler(own)
    async def _own(request: Request, exc) -> JSONResponse:
        return json_error(exc.status, exc.code, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return json_error(exc.status_code, f"http_{exc.status_code}", str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return json_error(validation_status, validation_code, f"{where}: {first.get('msg', 'invalid request')}")
