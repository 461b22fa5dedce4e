"""The AWS Lambda handler: API Gateway REST (v1 proxy), HTTP API (v2) and Function URL events.

``POST`` with an image body (API Gateway and Function URLs pass binary bodies base64-encoded with
``isBase64Encoded: true``) or an Open Inference Protocol JSON tensor answers ``200`` with the record
JSON; ``GET`` answers the model's description (a health check). Bad input answers a 4xx JSON body
``{"error": {"code": ..., "message": ...}}``; a bundle that cannot be loaded answers 500 the same way
(and is tried again at the next request).

Invoked directly (``aws lambda invoke``, Step Functions), an event that is itself an OIP request
(``{"inputs": [...]}``) or ``{"image": "<base64>"}`` returns the record (or ``{"error": ...}``).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Mapping
from typing import Any

from .._host import MAX_BODY_BYTES, HostError, RequestError
from ._loader import get_host

__all__ = ["error_status", "lambda_handler"]

log = logging.getLogger(__name__)

_JSON = {"Content-Type": "application/json"}


def error_status(exc: RequestError) -> int:
    return 413 if exc.code == "too_large" else 400


def lambda_handler(event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    if not isinstance(event, Mapping):
        return _direct_error(RequestError("the event must be a JSON object", code="bad_event"))
    if event.get("version") == "2.0":  # HTTP API payload 2.0 and Function URLs
        ctx = event.get("requestContext") or {}
        method = str((ctx.get("http") or {}).get("method", "POST")).upper()
        return _http(event, method, str(ctx.get("requestId") or "lambda"))
    if "httpMethod" in event:  # REST API proxy integration, payload 1.0
        ctx = event.get("requestContext") or {}
        return _http(event, str(event["httpMethod"]).upper(), str(ctx.get("requestId") or "lambda"))
    return _direct(event, getattr(context, "aws_request_id", None) or "lambda")


def _http(event: Mapping[str, Any], method: str, request_id: str) -> dict[str, Any]:
    try:
        host = get_host()
    except HostError as exc:
        log.exception("the bundle cannot be loaded")
        return _response(500, {"error": {"code": "bundle_unavailable", "message": str(exc)}})
    if method in ("GET", "HEAD"):
        return _response(200, {"model": host.info})
    if method != "POST":
        return _response(405, {"error": {"code": "method_not_allowed",
                                         "message": f"{method} is not allowed: POST an image or a JSON tensor"}},
                         {"Allow": "GET, POST"})
    try:
        body = _body(event)
        ctype = _header(event.get("headers"), "content-type") or _header(event.get("multiValueHeaders"),
                                                                          "content-type")
        record = host.answer(body, content_type=ctype, source=f"lambda:{request_id}")
    except RequestError as exc:
        log.info("request %s refused: %s", request_id, exc)
        return _response(error_status(exc), {"error": {"code": exc.code, "message": exc.message}})
    return _response(200, record)


def _body(event: Mapping[str, Any]) -> bytes:
    raw = event.get("body")
    if raw is None:
        raise RequestError("the request has no body: POST an image or an OIP JSON tensor", code="empty_body")
    if not isinstance(raw, str):
        raise RequestError("the event's body must be a string", code="bad_event")
    if len(raw) > MAX_BODY_BYTES * 4 // 3 + 4:
        raise RequestError(f"the body is more than {MAX_BODY_BYTES} bytes", code="too_large")
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RequestError(f"isBase64Encoded is true but the body is not base64: {exc}",
                               code="bad_base64") from exc
    # A REST API without binaryMediaTypes passes an image as (mangled) text: say how to fix it.
    data = raw.encode("utf-8")
    if not data.lstrip()[:1] == b"{":
        raise RequestError("the body is not base64-encoded and not JSON: send images as binary (API Gateway "
                           "REST APIs need binaryMediaTypes, e.g. image/*) or as an OIP JSON tensor",
                           code="bad_image")
    return data


def _header(headers: Any, name: str) -> str | None:
    if not isinstance(headers, Mapping):
        return None
    for k, v in headers.items():
        if isinstance(k, str) and k.lower() == name:
            if isinstance(v, list):  # multiValueHeaders (REST API payload 1.0)
                return str(v[0]) if v else None
            return str(v)
    return None


def _response(status: int, doc: Any, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {"statusCode": status, "headers": {**_JSON, **(headers or {})}, "body": json.dumps(doc),
            "isBase64Encoded": False}


def _direct(event: Mapping[str, Any], request_id: str) -> dict[str, Any]:
    try:
        if "inputs" in event:
            body, ctype = json.dumps(dict(event)).encode(), "application/json"
        elif isinstance(event.get("image"), str):
            try:
                body, ctype = base64.b64decode(event["image"], validate=True), "application/octet-stream"
            except (binascii.Error, ValueError) as exc:
                raise RequestError(f"'image' is not base64: {exc}", code="bad_base64") from exc
        else:
            raise RequestError("unknown event: expected an API Gateway / Function URL request, an OIP request "
                               "({\"inputs\": [...]}) or {\"image\": \"<base64>\"}", code="bad_event")
        return dict(get_host().answer(body, content_type=ctype, source=f"lambda:{request_id}"))
    except RequestError as exc:
        return _direct_error(exc)


def _direct_error(exc: RequestError) -> dict[str, Any]:
    return {"error": {"code": exc.code, "message": exc.message}}
