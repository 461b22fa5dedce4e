"""Errors of the cloud service. Each carries the HTTP status and a short machine-readable code,
so one exception handler turns every one of them into the same JSON error body::

    {"error": {"code": "unknown_model", "message": "no model named 'x' in the registry"}}

Third-party errors (SQLAlchemy, boto3, paho, Pillow, the runtime's EdgeError) are wrapped into
these at the boundary, so the API never leaks a traceback and never answers 500 for bad input.
"""

from __future__ import annotations

from typing import ClassVar

from .._errors import CloudError

__all__ = [
    "BadRequestError",
    "ConflictError",
    "ForbiddenError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RangeNotSatisfiableError",
    "ServiceError",
    "StorageError",
    "TooManyRequestsError",
    "UnauthorizedError",
    "UnprocessableError",
    "UnsupportedMediaTypeError",
]


class ServiceError(CloudError):
    """An error the service answers with ``status`` and a JSON body naming ``code``."""

    status: ClassVar[int] = 400
    default_code: ClassVar[str] = "bad_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code


class BadRequestError(ServiceError):
    status = 400
    default_code = "bad_request"


class UnauthorizedError(ServiceError):
    """No credentials, or credentials that match nothing."""

    status = 401
    default_code = "unauthorized"


class ForbiddenError(ServiceError):
    """Valid credentials that may not do this (a device calling an admin endpoint)."""

    status = 403
    default_code = "forbidden"


class NotFoundError(ServiceError):
    status = 404
    default_code = "not_found"


class ConflictError(ServiceError):
    status = 409
    default_code = "conflict"


class PayloadTooLargeError(ServiceError):
    status = 413
    default_code = "payload_too_large"


class UnsupportedMediaTypeError(ServiceError):
    status = 415
    default_code = "unsupported_media_type"


class RangeNotSatisfiableError(ServiceError):
    status = 416
    default_code = "range_not_satisfiable"

    def __init__(self, message: str, *, size: int) -> None:
        super().__init__(message)
        self.size = size


class UnprocessableError(ServiceError):
    """Well-formed but unusable: a tampered bundle, a tensor of the wrong shape, a garbage image."""

    status = 422
    default_code = "unprocessable"


class TooManyRequestsError(ServiceError):
    """The caller is over a rate limit; the message says when to try again."""

    status = 429
    default_code = "rate_limited"


class StorageError(ServiceError):
    """The object store or the database failed: the service's fault, not the caller's."""

    status = 503
    default_code = "storage_unavailable"
