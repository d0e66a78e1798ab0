"""What the two web apps (the serving endpoint and the review app) answer when they refuse a
request: ``{"error": {"code", "message"}}`` with a 4xx status, for their own errors, FastAPI's
validation errors and Starlette's HTTP errors alike."""
from __future__ import annotations

import hmac
from typing import Callable, Iterable

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


def install_bearer_auth(app: FastAPI, token: Callable[[], str | None], open_paths: Iterable[str] = ("/healthz", "/readyz")) -> None:
    """Every request to ``app`` but ``open_paths`` (matched at the end of the path, so a route
    prefix does not matter) needs ``Authorization: Bearer <token()>`` when ``token()`` is set;
    otherwise 401 with ``WWW-Authenticate: Bearer`` and nothing runs. ``token`` is read per
    request: a replica sets it when it starts."""
    open_paths = tuple(open_paths)

    @app.middleware("http")
    async def _bearer(request: Request, call_next):
        expected = token()
        if expected and not request.url.path.rstrip("/").endswith(open_paths):
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
                problem = "wrong token" if given else "no token"
                r = json_error(401, "unauthorized", f"{problem}: send the header 'Authorization: Bearer <token>' "
                                                    "(the serve config's auth_token or $SEGSYNTH_AUTH_TOKEN)")
                r.headers["WWW-Authenticate"] = "Bearer"
                return r
        return await call_next(request)


_BEARER: dict[str, str | None] = {"token": None}  # this process's serving token (one replica per process)


def set_bearer_token(token: str | None) -> None:
    _BEARER["token"] = token or None


def bearer_token() -> str | None:
    return _BEARER["token"]
