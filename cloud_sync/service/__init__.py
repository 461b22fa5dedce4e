"""The cloud service: model registry, online inference (Open Inference Protocol), device registry,
fleet dashboard and metrics, as one FastAPI app.

>>> from cloud_sync.service import ServiceSettings, create_app   # doctest: +SKIP
>>> app = create_app(ServiceSettings(admin_token="...", trusted_keys=["signing.pub"]))  # doctest: +SKIP
"""

from __future__ import annotations

from ._app import Service, create_app, create_app_from_env
from ._errors import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
    RangeNotSatisfiableError,
    ServiceError,
    StorageError,
    UnauthorizedError,
    UnprocessableError,
    UnsupportedMediaTypeError,
)
from ._metrics import MULTIPROC_ENV, clean_multiprocess_dir
from ._settings import CONFIG_ENV, ENV_PREFIX, ServiceSettings, legacy_env_names

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "MULTIPROC_ENV",
    "BadRequestError",
    "ConflictError",
    "ForbiddenError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RangeNotSatisfiableError",
    "Service",
    "ServiceError",
    "ServiceSettings",
    "StorageError",
    "UnauthorizedError",
    "UnprocessableError",
    "UnsupportedMediaTypeError",
    "clean_multiprocess_dir",
    "create_app",
    "create_app_from_env",
    "legacy_env_names",
]
