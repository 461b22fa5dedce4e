"""The device registry: register (token shown once), list, revoke, authenticate, heartbeat."""

from __future__ import annotations

import logging
import re
import secrets
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlalchemy.exc import SQLAlchemyError

from ._auth import hash_token, new_device_token
from ._db import devices, utcnow
from ._errors import ConflictError, NotFoundError, StorageError, UnauthorizedError, UnprocessableError
from ._registry import _iso

__all__ = ["DEVICE_ID_PATTERN", "DeviceRegistry"]

log = logging.getLogger(__name__)

# The id is also the MQTT topic segment (edge/<id>/...), so no '/', '+', '#' or spaces.
DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_ID_RE = re.compile(DEVICE_ID_PATTERN)


class DeviceRegistry:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def register(self, *, device_id: str | None, name: str | None, model: str | None,
                 channel: str) -> tuple[dict[str, Any], str]:
        """Create a device; return its record and its token (the only time the token exists in clear)."""
        did = device_id or f"dev-{secrets.token_hex(6)}"
        if not _ID_RE.match(did):
            raise UnprocessableError(f"device id {did!r} is not allowed: use letters, digits, _ . -",
                                     code="bad_device_id")
        token = new_device_token()
        now = utcnow()
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(devices).values(
                    id=did, name=name or did, model=model, channel=channel, token_sha256=hash_token(token),
                    created_at=now))
        except SAIntegrityError as exc:
            raise ConflictError(f"a device with id {did!r} already exists", code="device_exists") from exc
        except SQLAlchemyError as exc:
            raise StorageError(f"database error: {exc.__class__.__name__}") from exc
        log.info("registered device %s (channel %s, model %s)", did, channel, model)
        return self.get(did), token

    def authenticate(self, token: str) -> str:
        """The id of the active device holding ``token``; UnauthorizedError otherwise."""
        try:
            with self.engine.connect() as conn:
                row = conn.execute(select(devices.c.id, devices.c.revoked_at)
                                   .where(devices.c.token_sha256 == hash_token(token))).first()
        except SQLAlchemyError as exc:
            raise StorageError(f"database error: {exc.__class__.__name__}") from exc
        if row is None:
            raise UnauthorizedError("token is not valid", code="invalid_token")
        if row.revoked_at is not None:
            raise UnauthorizedError("this device has been revoked", code="revoked")
        return str(row.id)

    def get(self, device_id: str) -> dict[str, Any]:
        try:
            with self.engine.connect() as conn:
                row = conn.execute(select(devices).where(devices.c.id == device_id)).first()
        except SQLAlchemyError as exc:
            raise StorageError(f"database error: {exc.__class__.__name__}") from exc
        if row is None:
            raise NotFoundError(f"no device {device_id!r}", code="unknown_device")
        return _public(row._mapping)

    def list(self) -> list[dict[str, Any]]:
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(select(devices).order_by(devices.c.id)).all()
        except SQLAlchemyError as exc:
            raise StorageError(f"database error: {exc.__class__.__name__}") from exc
        return [_public(r._mapping) for r in rows]

    def revoke(self, device_id: str) -> dict[str, Any]:
        self.get(device_id)
        try:
            with self.engine.begin() as conn:
                conn.execute(update(devices).where(devices.c.id == device_id, devices.c.revoked_at.is_(None))
                             .values(revoked_at=utcnow()))
        except SQLAlchemyError as exc:
            raise StorageError(f"database error: {exc.__class__.__name__}") from exc
        log.info("revoked device %s", device_id)
        return self.get(device_id)

    def heartbeat(self, device_id: str, values: dict[str, Any]) -> dict[str, Any]:
        fields = {k: v for k, v in values.items() if v is not None}
        try:
            with self.engine.begin() as conn:
                conn.execute(update(devices).where(devices.c.id == device_id).values(last_seen=utcnow(), **fields))
        except SQLAlchemyError as exc:
            raise StorageError(f"database error: {exc.__class__.__name__}") from exc
        return self.get(device_id)


def _public(m: Any) -> dict[str, Any]:
    """A device as the API shows it: everything but the token hash."""
    return {
        "id": m["id"],
        "name": m["name"],
        "model": m["model"],
        "channel": m["channel"],
        "created_at": _iso(m["created_at"]),
        "revoked": m["revoked_at"] is not None,
        "revoked_at": _iso(m["revoked_at"]),
        "last_seen": _iso(m["last_seen"]),
        "model_version": m["model_version"],
        "outbox_depth": m["outbox_depth"],
        "latency_ms": m["latency_ms"],
        "fps": m["fps"],
    }
