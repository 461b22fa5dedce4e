"""What the routes depend on: the per-process ``Service`` (settings, engine, store, registries,
models, notifier, metrics) and the auth dependencies (``Admin``, ``Device``, ``Anyone``).

All state that matters lives in the database and the object store, so any number of replicas
can run behind a load balancer; ``Service`` only holds connections and caches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from edge_runtime import PublicKey, load_public_key

from ._auth import Principal, hash_token, parse_bearer, tokens_equal
from ._db import make_engine
from ._devices import DeviceRegistry
from ._errors import ForbiddenError, UnauthorizedError
from ._imagein import DECODE_LIMITS
from ._inference import ModelManager
from ._metrics import MetricsRegistry
from ._notify import Notifier, make_notifier
from ._registry import Registry
from ._samples import SampleStore
from ._settings import ServiceSettings
from ._storage import BlobStore, open_store

__all__ = ["Admin", "Anyone", "Device", "Service", "get_service", "require_admin", "require_device"]


@dataclass
class Service:
    """Everything the routes use; one per process."""

    settings: ServiceSettings
    engine: Engine
    store: BlobStore
    registry: Registry
    devices: DeviceRegistry
    models: ModelManager
    notifier: Notifier
    metrics: MetricsRegistry
    trusted_keys: list[PublicKey]
    samples: SampleStore = field(init=False)

    def __post_init__(self) -> None:
        self.samples = SampleStore(self.engine, self.store, max_per_device=self.settings.samples_max_per_device,
                                   max_bytes_per_device=self.settings.samples_max_bytes_per_device,
                                   max_per_minute=self.settings.samples_max_per_minute)

    @classmethod
    def build(cls, settings: ServiceSettings) -> Service:
        keys = [load_public_key(p) for p in settings.trusted_keys]
        DECODE_LIMITS.configure(settings.max_decode_pixels, settings.max_concurrent_decodes)
        engine = make_engine(settings.resolved_database_url)
        store = open_store(settings)
        notifier = make_notifier(settings)
        metrics = MetricsRegistry()
        registry = Registry(engine, store, keys, notifier.publish, max_unpacked_bytes=settings.max_unpacked_bytes)
        return cls(settings, engine, store, registry, DeviceRegistry(engine),
                   ModelManager(registry, store, settings, keys, metrics), notifier, metrics, keys)

    async def close(self) -> None:
        await self.models.close()
        self.notifier.close()
        self.engine.dispose()


def get_service(request: Request) -> Service:
    svc: Service = request.app.state.service
    return svc


# -- auth ------------------------------------------------------------------------------------
_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <token>`: the admin token or a "
                     "device token")


async def _principal(request: Request,
                     creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
    token = creds.credentials if creds is not None else parse_bearer(request.headers.get("authorization"))
    if not token:
        raise UnauthorizedError("this endpoint needs a token: send 'Authorization: Bearer <token>'",
                                code="missing_token")
    svc = get_service(request)
    admin = svc.settings.admin_hash
    if admin is not None and tokens_equal(hash_token(token), admin):
        return Principal("admin")
    device_id = await run_in_threadpool(svc.devices.authenticate, token)
    return Principal("device", device_id)


async def require_admin(p: Annotated[Principal, Depends(_principal)]) -> Principal:
    if not p.is_admin:
        raise ForbiddenError("this endpoint needs the admin token", code="admin_only")
    return p


async def require_device(p: Annotated[Principal, Depends(_principal)]) -> Principal:
    if p.kind != "device":
        raise ForbiddenError("this endpoint needs a device token", code="device_only")
    return p


Admin = Annotated[Principal, Depends(require_admin)]
Device = Annotated[Principal, Depends(require_device)]
Anyone = Annotated[Principal, Depends(_principal)]
