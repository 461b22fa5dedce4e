"""The Google Cloud Functions (functions-framework) HTTP entry point.

``POST`` an image (any ``image/*`` or ``application/octet-stream`` body) or an Open Inference
Protocol JSON tensor (``application/json``): ``200`` with the record JSON. ``GET``: the model's
description. Bad input: a 4xx JSON body ``{"error": {"code": ..., "message": ...}}``.

Flask is functions-framework's; this module does not import it (the handler only reads the request
and returns Flask's ``(body, status, headers)`` tuple), so it loads as fast as the AWS handler.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from .._host import MAX_BODY_BYTES, HostError, RequestError
from ._aws import error_status
from ._loader import get_host

if TYPE_CHECKING:
    from flask import Request

__all__ = ["http_predict"]

log = logging.getLogger(__name__)

Response = tuple[str, int, dict[str, str]]


def http_predict(request: Request) -> Response:
    """``functions-framework --target http_predict``: one request, one record."""
    try:
        host = get_host()
    except HostError as exc:
        log.exception("the bundle cannot be loaded")
        return _json(500, {"error": {"code": "bundle_unavailable", "message": str(exc)}})
    if request.method in ("GET", "HEAD"):
        return _json(200, {"model": host.info})
    if request.method != "POST":
        return _json(405, {"error": {"code": "method_not_allowed",
                                     "message": f"{request.method} is not allowed: POST an image or a JSON tensor"}},
                     {"Allow": "GET, POST"})
    rid = request.headers.get("Function-Execution-Id") or request.headers.get("X-Cloud-Trace-Context") or "gcf"
    try:
        if (request.content_length or 0) > MAX_BODY_BYTES:
            raise RequestError(f"the body is {request.content_length} bytes, more than {MAX_BODY_BYTES}",
                               code="too_large")
        body = request.get_data(cache=False)
        record = host.answer(body, content_type=request.content_type, source=f"gcf:{rid.split('/')[0]}")
    except RequestError as exc:
        log.info("request %s refused: %s", rid, exc)
        return _json(error_status(exc), {"error": {"code": exc.code, "message": exc.message}})
    return _json(200, record)


def _json(status: int, doc: Any, headers: dict[str, str] | None = None) -> Response:
    return json.dumps(doc), status, {"Content-Type": "application/json", **(headers or {})}
