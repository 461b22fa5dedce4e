"""Error handlers and the request-metrics middleware.

Every error is ``{"error": {"code", "message"}}``, except on the Open Inference Protocol routes
(``/v2``...), where the protocol (and tritonclient, which formats its exception from it) wants
``{"error": "<message>"}``: there the code travels in the ``Edge-Error-Code`` header.
"""

from __future__ import annotations

import logging
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge_runtime import EdgeError, InputError

from ._errors import RangeNotSatisfiableError, ServiceError, UnauthorizedError
from ._metrics import MetricsRegistry

__all__ = ["ERROR_CODE_HEADER", "MetricsMiddleware", "install_error_handlers"]

#: the header that carries the machine-readable error code on the /v2 routes
ERROR_CODE_HEADER = "Edge-Error-Code"

log = logging.getLogger(__name__)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(EdgeError, _edge_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


def _is_v2(request: Request) -> bool:
    path = request.url.path
    return path == "/v2" or path.startswith("/v2/")


def _error(request: Request, status: int, code: str, message: str, headers: dict[str, str] | None = None,
           details: list[dict[str, object]] | None = None) -> JSONResponse:
    if _is_v2(request):
        return JSONResponse({"error": message}, status_code=status,
                            headers={**(headers or {}), ERROR_CODE_HEADER: code})
    err: dict[str, object] = {"code": code, "message": message}
    if details is not None:
        err["details"] = details
    return JSONResponse({"error": err}, status_code=status, headers=headers)


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    headers = {}
    if isinstance(exc, RangeNotSatisfiableError):
        headers["Content-Range"] = f"bytes */{exc.size}"
    if isinstance(exc, UnauthorizedError):
        headers["WWW-Authenticate"] = "Bearer"
    if exc.status >= 500:
        log.error("%s %s: %s", request.method, request.url.path, exc.message)
    return _error(request, exc.status, exc.code, exc.message, headers)


async def _edge_error(request: Request, exc: Exception) -> Response:
    code = "bad_input" if isinstance(exc, InputError) else "runtime_error"
    return _error(request, 422, code, str(exc))


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errs = exc.errors()
    parts = []
    for e in errs[:5]:
        loc = ".".join(str(x) for x in e.get("loc", ()))
        parts.append(f"{loc}: {e.get('msg')}")
    return _error(request, 422, "invalid_request", "; ".join(parts) or "invalid request",
                  details=[{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in errs[:20]])


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    return _error(request, exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail),
                  dict(exc.headers or {}))


async def _unexpected(request: Request, exc: Exception) -> Response:
    # The last resort for bugs: log the traceback here, answer without internals.
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return _error(request, 500, "internal_error", "internal error; the service logged the details")


class MetricsMiddleware:
    """Counts requests by route template (not raw path: bounded label values), status and time."""

    def __init__(self, app: ASGIApp, metrics: MetricsRegistry) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]

        async def _send(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.http_requests.inc(method=scope["method"], route=path, status=str(status[0]))
            self.metrics.http_latency.observe(time.perf_counter() - t0, route=path)
