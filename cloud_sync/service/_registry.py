"""The model registry: signed bundle uploads, versions, channels, promote and roll back.

Every state change is one database transaction; bundle bytes go to the object store *before*
the row that points at them is committed, so no replica ever sees a version without its data.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, and_, func, insert, select, update
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlalchemy.exc import SQLAlchemyError

from edge_runtime import (
    BundleError,
    IntegrityError,
    ManifestError,
    PublicKey,
    SignatureError,
    UnsafeArchiveError,
    open_bundle,
    prescan_tar,
    safe_extract,
    sha256_file,
)

from ._db import channel_events, devices, models, utcnow, versions
from ._errors import ConflictError, NotFoundError, StorageError, UnprocessableError
from ._storage import BlobStore

__all__ = ["Registry", "VersionRecord"]

log = logging.getLogger(__name__)

Notify = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class VersionRecord:
    name: str
    version: int
    sha256: str
    size: int
    storage_key: str
    manifest: dict[str, Any]
    signed_by: str | None
    created_at: datetime

    @property
    def etag(self) -> str:
        return f'"{self.sha256}"'

    @property
    def url(self) -> str:
        return f"/api/v1/models/{self.name}/versions/{self.version}/bundle"

    def to_json(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "size": self.size,
            "created_at": _iso(self.created_at),
            "signed_by": self.signed_by,
            "task": m.get("task"),
            "format": m.get("format"),
            "expires": m.get("expires"),
            "url": self.url,
        }


def _iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    if dt.tzinfo is None:  # SQLite hands back naive datetimes; they were written as UTC
        dt = dt.replace(tzinfo=UTC)
    return dt.isoformat(timespec="seconds")




class Registry:
    def __init__(self, engine: Engine, store: BlobStore, trusted_keys: list[PublicKey], notify: Notify, *,
                 max_unpacked_bytes: int = 2 * 1024**3) -> None:
        self.engine = engine
        self.store = store
        self.trusted_keys = trusted_keys
        self._notify = notify
        self.max_unpacked_bytes = max_unpacked_bytes

    # -- upload ----------------------------------------------------------------------------
    def publish(self, archive: Path, *, channel: str | None = None) -> VersionRecord:
        """Verify ``archive`` (a .tar.gz bundle) against the trusted keys and store it.

        The raw tar headers are pre-scanned first (``prescan_tar``, constant memory): a few MB of
        gzip whose PAX header declares hundreds of MiB is refused before tarfile would read it."""
        try:
            prescan_tar(archive)
        except UnsafeArchiveError as exc:
            raise UnprocessableError(_strip(exc, archive), code="unsafe_archive") from exc
        except BundleError as exc:
            raise UnprocessableError(_strip(exc, archive), code="bad_bundle") from exc
        if not self.trusted_keys:
            raise UnprocessableError("this service has no trusted signing keys configured (trusted_keys), "
                                     "so it accepts no bundle", code="no_trusted_keys")
        with tempfile.TemporaryDirectory(prefix="edge-upload-") as tmp:
            try:
                # Unpacked here with the service's own bound, so a small upload that inflates to
                # gigabytes (a gzip bomb) is refused before it fills the disk.
                safe_extract(archive, Path(tmp) / "x", max_bytes=self.max_unpacked_bytes)
                bundle = open_bundle(_bundle_root(Path(tmp) / "x"), pubkey=self.trusted_keys)
            except UnsafeArchiveError as exc:
                raise UnprocessableError(_strip(exc, archive), code="unsafe_archive") from exc
            except SignatureError as exc:
                raise UnprocessableError(_strip(exc, archive), code="bad_signature") from exc
            except IntegrityError as exc:
                raise UnprocessableError(_strip(exc, archive), code="integrity_error") from exc
            except ManifestError as exc:
                raise UnprocessableError(_strip(exc, archive), code="bad_manifest") from exc
            except BundleError as exc:
                raise UnprocessableError(_strip(exc, archive), code="bad_bundle") from exc
            manifest = bundle.manifest
            signed_by = bundle.signed_by
            bundle.close()
        if manifest.expires is not None:
            try:
                exp = datetime.fromisoformat(manifest.expires)
            except ValueError as exc:
                raise UnprocessableError(f"manifest expires {manifest.expires!r} is not an ISO 8601 time",
                                         code="bad_manifest") from exc
            if (exp if exp.tzinfo else exp.replace(tzinfo=UTC)) <= utcnow():
                raise UnprocessableError(f"bundle expired at {manifest.expires}", code="expired")
        digest = sha256_file(archive)
        size = archive.stat().st_size
        name, version = manifest.name, manifest.version
        key = f"{name}/{version}/{digest}.tar.gz"
        manifest_json = manifest.to_dict(json=True)
        # Cheap check before the upload to the store; the unique constraint settles races.
        latest = self.latest_version(name)
        if latest is not None and version <= latest:
            raise ConflictError(f"{name} v{version} is not newer than the registry's latest v{latest}; "
                                "bump manifest version", code="version_exists")
        self.store.put_file(key, archive)
        now = utcnow()
        try:
            with self.engine.begin() as conn:
                if conn.execute(select(models.c.name).where(models.c.name == name)).first() is None:
                    conn.execute(insert(models).values(name=name, created_at=now))
                latest = conn.execute(select(func.max(versions.c.version))
                                      .where(versions.c.model_name == name)).scalar()
                if latest is not None and version <= latest:
                    raise ConflictError(f"{name} v{version} is not newer than the registry's latest v{latest}",
                                        code="version_exists")
                conn.execute(insert(versions).values(
                    model_name=name, version=version, sha256=digest, size=size, storage_key=key,
                    manifest=manifest_json, signed_by=signed_by, created_at=now))
        except SAIntegrityError as exc:
            raise ConflictError(f"{name} v{version} was published concurrently", code="version_exists") from exc
        except SQLAlchemyError as exc:
            raise _db_error(exc) from exc
        rec = VersionRecord(name, version, digest, size, key, manifest_json, signed_by, now)
        log.info("published %s v%d (%d bytes, signed by %s)", name, version, size, signed_by)
        if channel is not None:
            self.promote(name, channel, version)
        return rec

    # -- queries ---------------------------------------------------------------------------
    def latest_version(self, name: str) -> int | None:
        try:
            with self.engine.connect() as conn:
                v = conn.execute(select(func.max(versions.c.version)).where(versions.c.model_name == name)).scalar()
        except SQLAlchemyError as exc:
            raise _db_error(exc) from exc
        return int(v) if v is not None else None

    def get_version(self, name: str, version: int) -> VersionRecord:
        try:
            with self.engine.connect() as conn:
                row = conn.execute(select(versions).where(and_(versions.c.model_name == name,
                                                               versions.c.version == version))).first()
        except SQLAlchemyError as exc:
            raise _db_error(exc) from exc
        if row is None:
            if self.latest_version(name) is None:
                raise NotFoundError(f"no model named {name!r} in the registry", code="unknown_model")
            raise NotFoundError(f"model {name!r} has no version {version}", code="unknown_version")
        return _record(row._mapping)

    def channels(self, name: str) -> dict[str, int]:
        """Each channel of ``name`` and the version it points at."""
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(channel_events.c.channel, channel_events.c.version, channel_events.c.id)
                    .where(and_(channel_events.c.model_name == name, channel_events.c.undone.is_(False)))
                    .order_by(channel_events.c.id)).all()
        except SQLAlchemyError as exc:
            raise _db_error(exc) from exc
        out: dict[str, int] = {}
        for ch, v, _ in rows:
            out[ch] = int(v)  # later rows win: the newest not-undone event is the pointer
        return out

    def channel_version(self, name: str, channel: str) -> int | None:
        return self.channels(name).get(channel)

    def resolve(self, name: str, *, version: int | None = None, channel: str | None = None) -> VersionRecord:
        """The version to serve: explicit, else the channel's, else the latest."""
        if version is None and channel is not None:
            version = self.channel_version(name, channel)
        if version is None:
            version = self.latest_version(name)
            if version is None:
                raise NotFoundError(f"no model named {name!r} in the registry", code="unknown_model")
        return self.get_version(name, version)

    def list_models(self) -> list[dict[str, Any]]:
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(versions.c.model_name, func.max(versions.c.version), func.count())
                    .group_by(versions.c.model_name).order_by(versions.c.model_name)).all()
        except SQLAlchemyError as exc:
            raise _db_error(exc) from exc
        return [{"name": n, "latest": int(latest), "versions": int(count), "channels": self.channels(n)}
                for n, latest, count in rows]

    def model_detail(self, name: str) -> dict[str, Any]:
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(select(versions).where(versions.c.model_name == name)
                                    .order_by(versions.c.version)).all()
        except SQLAlchemyError as exc:
            raise _db_error(exc) from exc
        if not rows:
            raise NotFoundError(f"no model named {name!r} in the registry", code="unknown_model")
        return {"name": name, "versions": [_record(r._mapping).to_json() for r in rows],
                "channels": self.channels(name)}

    def channel_history(self, name: str) -> list[dict[str, Any]]:
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(select(channel_events).where(channel_events.c.model_name == name)
                                    .order_by(channel_events.c.id)).all()
        except SQLAlchemyError as exc:
            raise _db_error(exc) from exc
        return [{"channel": r.channel, "version": r.version, "undone": bool(r.undone),
                 "at": _iso(r.created_at), "undone_at": _iso(r.undone_at)} for r in rows]

    # -- channels --------------------------------------------------------------------------
    def promote(self, name: str, channel: str, version: int) -> VersionRecord:
        rec = self.get_version(name, version)
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(channel_events).values(model_name=name, channel=channel, version=version,
                                                           undone=False, created_at=utcnow()))
        except SQLAlchemyError as exc:
            raise _db_error(exc) from exc
        log.info("channel %s of %s now points at v%d", channel, name, version)
        self.notify_channel(rec, channel)
        return rec

    def rollback(self, name: str, channel: str) -> VersionRecord:
        """Point ``channel`` back at the version it had before its latest promotion."""
        try:
            with self.engine.begin() as conn:
                rows = conn.execute(
                    select(channel_events.c.id, channel_events.c.version)
                    .where(and_(channel_events.c.model_name == name, channel_events.c.channel == channel,
                                channel_events.c.undone.is_(False)))
                    .order_by(channel_events.c.id.desc()).limit(50)).all()
                if not rows:
                    self._raise_unknown(conn, name, channel)
                top_version = rows[0][1]
                previous = next((int(v) for _, v in rows[1:] if v != top_version), None)
                if previous is None:
                    raise ConflictError(f"channel {channel!r} of {name} has no earlier version to roll back to",
                                        code="nothing_to_roll_back")
                # Undo every event above the one that set `previous`, so the pointer lands there.
                ids = [i for i, v in rows[: next(k for k, (_, v) in enumerate(rows) if v == previous)]]
                res = conn.execute(update(channel_events).where(and_(channel_events.c.id.in_(ids),
                                                                     channel_events.c.undone.is_(False)))
                                   .values(undone=True, undone_at=utcnow()))
                if res.rowcount != len(ids):
                    raise ConflictError(f"channel {channel!r} of {name} changed concurrently; try again",
                                        code="concurrent_change")
                log.info("channel %s of %s rolled back from v%d to v%d", channel, name, top_version, previous)
        except SQLAlchemyError as exc:
            raise _db_error(exc) from exc
        rec = self.get_version(name, previous)
        self.notify_channel(rec, channel)
        return rec

    def _raise_unknown(self, conn: Any, name: str, channel: str) -> None:
        if conn.execute(select(models.c.name).where(models.c.name == name)).first() is None:
            raise NotFoundError(f"no model named {name!r} in the registry", code="unknown_model")
        raise NotFoundError(f"model {name!r} has no channel {channel!r}", code="unknown_channel")

    def notify_channel(self, rec: VersionRecord, channel: str) -> int:
        """Send an update notice to every active device following ``channel`` of this model."""
        try:
            with self.engine.connect() as conn:
                ids = conn.execute(select(devices.c.id).where(and_(
                    devices.c.model == rec.name, devices.c.channel == channel,
                    devices.c.revoked_at.is_(None)))).scalars().all()
        except SQLAlchemyError as exc:
            raise _db_error(exc) from exc
        payload = {"schema": 1, "type": "update", "model": rec.name, "version": rec.version,
                   "channel": channel, "sha256": rec.sha256, "size": rec.size, "url": rec.url,
                   "expires": rec.manifest.get("expires")}
        for device_id in ids:
            self._notify(f"edge/{device_id}/cmd/update", payload)
        return len(ids)


def _bundle_root(root: Path) -> Path:
    # Archives hold the files at the top or inside one folder (like edge_runtime accepts).
    if (root / "manifest.json").exists():
        return root
    entries = list(root.iterdir()) if root.is_dir() else []
    if len(entries) == 1 and entries[0].is_dir() and (entries[0] / "manifest.json").exists():
        return entries[0]
    return root


def _record(m: Any) -> VersionRecord:
    return VersionRecord(m["model_name"], int(m["version"]), m["sha256"], int(m["size"]), m["storage_key"],
                         m["manifest"], m["signed_by"], m["created_at"])


def _strip(exc: BaseException, archive: Path) -> str:
    # The temporary upload path means nothing to the caller.
    return str(exc).replace(f"{archive}/", "").replace(f"{archive}: ", "").replace(str(archive), "upload")


def _db_error(exc: SQLAlchemyError) -> StorageError:
    return StorageError(f"database error: {exc.__class__.__name__}: {str(exc).splitlines()[0][:200]}")
