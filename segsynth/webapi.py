"""What the two web apps (the serving endpoint and the review app) answer when they refuse a
request: ``{"error": {"code", "message"}}`` with a 4xx status, for their own errors, FastAPI's
validation errors and Starlette's HTTP errors alike; and :class:`RequestGuard`, the ASGI layer
in front of both apps' routes (bearer token, header limits, body size limit, body read deadlines)."""
from __future__ import annotations

import asyncio
import hmac
import time
from dataclasses import dataclass
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
        response = json_error(exc.status, exc.code, exc.message)
        if exc.status == 503:  # busy, not broken: clients (and segsynth remove --url) retry
            response.headers["Retry-After"] = "1"
        return response

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return json_error(exc.status_code, f"http_{exc.status_code}", str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return json_error(validation_status, validation_code, f"{where}: {first.get('msg', 'invalid request')}")


@dataclass(frozen=True)
class RequestLimits:
    """What a request may cost before a route runs (checked by :class:`RequestGuard`).

    A client that sends headers beyond ``max_header_bytes`` / ``max_headers`` gets 431; one whose
    body takes longer than ``body_timeout_s`` in all, or arrives slower than ``min_body_rate``
    bytes/s on average once ``body_grace_s`` has passed (one byte a second, to hold a slot), gets
    408 and its slot back; a body over ``max_body_bytes`` (declared, or counted while it arrives)
    gets 413. ``None`` turns a check off.
    """

    max_header_bytes: int | None = 16_384  # names + values; browsers send ~1-2 KB, a JWT a few KB
    max_headers: int | None = 100
    body_timeout_s: float | None = 60.0  # 20 MB at ~330 KB/s; a slower client should upload elsewhere
    min_body_rate: float | None = 16_384.0  # bytes/s on average after the grace period
    body_grace_s: float = 2.0  # a slow start (TLS, a phone waking its radio) is not an attack
    # None: the routes check sizes themselves (the endpoint's upload limit depends on the route); an
    # app of small JSON bodies (the review app) sets it here, so no route reads more
    max_body_bytes: int | None = None

    @property
    def reads_body(self) -> bool:
        """Whether :func:`guarded_receive` has anything to check."""
        return self.body_timeout_s is not None or bool(self.min_body_rate) or self.max_body_bytes is not None


class BodyRefused(Exception):
    """A request body the guard stopped reading; ``status`` and ``code`` are what the client gets."""

    status, code = 400, "bad_body"


class BodyTimeout(BodyRefused):
    """The client sent its body too slowly (see :class:`RequestLimits`)."""

    status, code = 408, "body_timeout"


class BodyTooLarge(BodyRefused):
    """The body grew past ``max_body_bytes`` while it arrived (see :class:`RequestLimits`)."""

    status, code = 413, "too_large"


def _too_large(limit: int) -> str:
    return f"the request body is over the limit of {limit} bytes; send a smaller one"


def guarded_receive(receive, limits: RequestLimits, clock=time.monotonic):
    """``receive`` (ASGI) that raises :class:`BodyTimeout` when the body arrives too slowly and
    :class:`BodyTooLarge` when it grows past ``max_body_bytes``.

    The deadline for the next chunk is the earlier of the total ``body_timeout_s`` and the time
    by which, at ``min_body_rate``, the bytes so far plus one more should have arrived. Once the
    body is complete, later calls (a response waiting for the client to disconnect) pass through."""
    started = clock()
    received = 0
    complete = False

    async def receive_with_deadline():
        nonlocal received, complete
        if complete:
            return await receive()
        deadlines = []
        if limits.body_timeout_s is not None:
            deadlines.append(started + limits.body_timeout_s)
        if limits.min_body_rate:
            deadlines.append(started + limits.body_grace_s + (received + 1) / limits.min_body_rate)
        if deadlines:
            wait = min(deadlines) - clock()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(wait, 0.0))
            except asyncio.TimeoutError:
                raise BodyTimeout(f"the request body arrived too slowly ({received} bytes in "
                                  f"{clock() - started:.1f} s); send it at once, at least "
                                  f"{int(limits.min_body_rate or 0)} bytes/s, within {limits.body_timeout_s} s") from None
        else:
            message = await receive()
        if message.get("type") == "http.request":
            received += len(message.get("body", b""))
            if limits.max_body_bytes is not None and received > limits.max_body_bytes:
                raise BodyTooLarge(_too_large(limits.max_body_bytes))
            complete = not message.get("more_body", False)
        return message

    return receive_with_deadline


SERVE_TOKEN_HINT = "the serve config's auth_token or $SEGSYNTH_AUTH_TOKEN"


class RequestGuard:
    """Pure ASGI middleware (no per-request task or body copy, unlike ``@app.middleware``):
    header limits (431), the bearer token (401, compared in constant time, from the
    ``Authorization`` header only, on every path but the open ones), a declared body over
    ``max_body_bytes`` (413); a route that is refused never runs. While the route reads the body:
    too slow (408), too large (413); the guard's answer replaces whatever the route made of the
    cut-off body (FastAPI calls it a 400). ``token()`` and ``limits()`` are read per request: a
    replica sets them when it starts.

    ``open_paths``: paths that end with one of these strings (the endpoint's probes, under any
    route prefix), or a predicate on the path (an app that knows its exact paths)."""

    def __init__(self, app, token: Callable[[], str | None] = lambda: None,
                 limits: Callable[[], RequestLimits | None] = lambda: None,
                 open_paths: Iterable[str] | Callable[[str], bool] = ("/healthz", "/readyz"),
                 token_hint: str = SERVE_TOKEN_HINT):
        self.app, self.token, self.limits, self.token_hint = app, token, limits, token_hint
        if callable(open_paths):
            self.is_open = open_paths
        else:
            suffixes = tuple(open_paths)
            self.is_open = lambda path: path.rstrip("/").endswith(suffixes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limits = self.limits()
        headers = scope.get("headers") or []
        refusal = None
        if limits is not None:
            size = sum(len(k) + len(v) for k, v in headers)
            if limits.max_headers is not None and len(headers) > limits.max_headers:
                refusal = (431, "headers_too_large", f"{len(headers)} request headers; at most {limits.max_headers}")
            elif limits.max_header_bytes is not None and size > limits.max_header_bytes:
                refusal = (431, "headers_too_large", f"the request headers hold {size} bytes; at most "
                                                     f"{limits.max_header_bytes}")
        expected = self.token()
        if refusal is None and expected and not self.is_open(scope["path"]):
            given_header = next((v for k, v in headers if k == b"authorization"), b"").decode("latin-1")
            scheme, _, given = given_header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
                refusal = (401, "unauthorized", f"{'wrong token' if given else 'no token'}: send the header "
                                                f"'Authorization: Bearer <token>' ({self.token_hint})")
        if refusal is None and limits is not None and limits.max_body_bytes is not None:
            declared = next((v for k, v in headers if k == b"content-length"), b"")
            if declared.isdigit() and int(declared) > limits.max_body_bytes:
                refusal = (413, "too_large", _too_large(limits.max_body_bytes))
        if refusal is not None:
            status, code, message = refusal
            response = json_error(status, code, message)
            if status == 401:
                response.headers["WWW-Authenticate"] = "Bearer"
            return await response(scope, receive, send)
        if limits is None or not limits.reads_body:
            return await self.app(scope, receive, send)
        refused: list[BodyRefused] = []
        checked = guarded_receive(receive, limits)

        async def receive_noting():
            try:
                return await checked()
            except BodyRefused as e:  # noted: the route may turn it into a response of its own
                refused.append(e)
                raise

        started = False

        async def send_tracking(message):
            nonlocal started
            if refused and not started:  # the route's answer to a body cut off (FastAPI: 400): ours goes instead
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive_noting, send_tracking)
        except BodyRefused:
            if started:  # too late for a status: the connection just ends
                raise
        if refused and not started:
            e = refused[0]
            response = json_error(e.status, e.code, str(e))
            response.headers["Connection"] = "close"
            await response(scope, receive, send)


def install_request_guard(app: FastAPI, token: Callable[[], str | None] = lambda: None,
                          limits: Callable[[], RequestLimits | None] = lambda: None,
                          open_paths: Iterable[str] | Callable[[str], bool] = ("/healthz", "/readyz"),
                          token_hint: str = SERVE_TOKEN_HINT) -> None:
    """:class:`RequestGuard` around ``app``: the outermost layer, before routing and FastAPI's
    own error handling (a refused request costs a header scan)."""
    app.add_middleware(RequestGuard, token=token, limits=limits, open_paths=open_paths, token_hint=token_hint)


_BEARER: dict[str, str | None] = {"token": None}  # this process's serving token (one replica per process)


def set_bearer_token(token: str | None) -> None:
    _BEARER["token"] = token or None


def bearer_token() -> str | None:
    return _BEARER["token"]


_LIMITS: dict[str, RequestLimits | None] = {"limits": None}  # this process's request limits (set by a replica)


def set_request_limits(limits: RequestLimits | None) -> None:
    _LIMITS["limits"] = limits


def request_limits() -> RequestLimits | None:
    return _LIMITS["limits"]
