"""Field samples: images a device was unsure about, sent up so the next model can be trained on
what the field actually sees.

``POST /api/v1/device/samples`` (device token) takes a multipart form: ``image`` (a JPEG or PNG
file, at most ``max_image_bytes``) and ``metadata`` (a JSON object, at most 16 KiB: what the
device saw, e.g. its local top-k, the cloud's answer, the source, the time). The image goes to
the service's object store under a content-addressed key, the row to ``fleet_samples``. Sending
the same bytes again (a retry after a lost answer) is not a new sample: the answer is the stored
one with ``duplicate: true``, so a device may resend until it gets an acknowledgement.

Admins list samples (``GET /api/v1/samples``) and fetch their images
(``GET /api/v1/samples/{id}/image``) to build the next training set. This module is the logic;
the routes are in ``routes/samples.py``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import Request
from PIL import Image
from pydantic import BaseModel
from sqlalchemy import Engine, delete, func, insert, select
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import UploadFile

from ._db import samples, utcnow
from ._errors import (
    BadRequestError,
    NotFoundError,
    PayloadTooLargeError,
    StorageError,
    TooManyRequestsError,
    UnprocessableError,
    UnsupportedMediaTypeError,
)
from ._imagein import DECODE_LIMITS, open_bounded, replay_request
from ._registry import _iso
from ._storage import BlobStore

__all__ = ["MAX_METADATA_BYTES", "SampleOut", "SampleStore", "parse_metadata", "parse_sample_form"]

log = logging.getLogger(__name__)

#: bound on the JSON metadata of one sample
MAX_METADATA_BYTES = 16 * 1024
_FORMATS = {"JPEG": ("image/jpeg", ".jpg"), "PNG": ("image/png", ".png")}


class SampleOut(BaseModel):
    id: int
    device_id: str
    sha256: str
    size: int
    content_type: str
    width: int
    height: int
    received_at: str | None
    metadata: dict[str, Any]
    duplicate: bool = False


def _row(r: Any, duplicate: bool = False) -> dict[str, Any]:
    return {"id": r.id, "device_id": r.device_id, "sha256": r.sha256, "size": r.size,
            "content_type": r.content_type, "width": r.width, "height": r.height,
            "received_at": _iso(r.received_at), "metadata": r.meta or {}, "duplicate": duplicate}


async def parse_sample_form(request: Request, body: bytes) -> tuple[bytes, str | None]:
    """The ``image`` file and the ``metadata`` text of an already size-checked multipart body."""
    replay = replay_request(request, body)
    try:
        async with replay.form(max_files=1, max_fields=4) as form:
            image = form.get("image")
            if not isinstance(image, UploadFile):
                raise BadRequestError("multipart body has no file field 'image'", code="missing_image")
            meta = form.get("metadata")
            if isinstance(meta, UploadFile):
                text: str | None = (await meta.read(MAX_METADATA_BYTES + 1)).decode("utf-8", "replace")
            else:
                text = meta
            return await image.read(), text
    except (ValueError, KeyError, AssertionError) as exc:
        raise BadRequestError(f"multipart body cannot be parsed: {exc}", code="bad_multipart") from exc


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number; send finite numbers (or null)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:32]} is out of range for a JSON number")
    return value


def parse_metadata(text: str | None) -> dict[str, Any]:
    if text is None or not text.strip():
        return {}
    if len(text.encode("utf-8")) > MAX_METADATA_BYTES:
        raise BadRequestError(f"metadata is larger than {MAX_METADATA_BYTES} bytes", code="metadata_too_large")
    try:
        # NaN, Infinity and 1e999 are not JSON (RFC 8259): no database column stores them
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except ValueError as exc:
        raise BadRequestError(f"metadata is not JSON: {exc}", code="bad_metadata") from exc
    except RecursionError as exc:
        raise BadRequestError("metadata is nested too deeply", code="bad_metadata") from exc
    if not isinstance(value, dict):
        raise BadRequestError("metadata must be a JSON object", code="bad_metadata")
    return value


def _inspect(data: bytes) -> tuple[str, str, int, int]:
    """(content type, suffix, width, height) of a JPEG or PNG; 415/422 for anything else. The
    header's pixel count is checked before any decoding, and decodes share the service's bound."""
    with DECODE_LIMITS.slots:
        im = open_bounded(data)
        try:
            with im:
                fmt, (w, h) = im.format or "", im.size
                if fmt not in _FORMATS:
                    raise UnsupportedMediaTypeError(f"samples are JPEG or PNG images, not {fmt or 'unknown'}",
                                                    code="unsupported_image_format")
                im.load()  # a truncated file fails here rather than in someone's training run
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise UnprocessableError(f"the image is corrupt or truncated ({exc})", code="bad_image") from exc
    ctype, suffix = _FORMATS[fmt]
    return ctype, suffix, w, h


class SampleStore:
    """Rows in ``fleet_samples``, images in the service's object store."""

    def __init__(self, engine: Engine, store: BlobStore, *, max_per_device: int = 1000,
                 max_bytes_per_device: int = 256 * 1024**2, max_per_minute: int = 60) -> None:
        self.engine = engine
        self.store = store
        self.max_per_device = max_per_device
        self.max_bytes_per_device = max_bytes_per_device
        self.max_per_minute = max_per_minute

    def add(self, device_id: str, data: bytes, meta: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Store a sample; a device's oldest samples are dropped to keep it within its quota
        (``max_per_device`` samples, ``max_bytes_per_device`` bytes). One image larger than the
        whole byte quota is refused (413) and changes nothing."""
        if len(data) > self.max_bytes_per_device:
            raise PayloadTooLargeError(f"the image is {len(data)} bytes; a device's samples may take at most "
                                       f"{self.max_bytes_per_device} bytes", code="sample_quota")
        ctype, suffix, w, h = _inspect(data)
        digest = hashlib.sha256(data).hexdigest()
        existing = self._find(device_id, digest)
        if existing is not None:
            return _row(existing, duplicate=True), False
        self._check_rate(device_id)
        key = f"samples/{device_id}/{digest}{suffix}"
        with tempfile.TemporaryDirectory(prefix="edge-sample-") as tmp:
            path = Path(tmp) / f"sample{suffix}"
            path.write_bytes(data)
            self.store.put_file(key, path)
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(samples).values(
                    device_id=device_id, sha256=digest, size=len(data), content_type=ctype, width=w, height=h,
                    storage_key=key, meta=meta, received_at=utcnow()))
        except SAIntegrityError:
            # The same sample arrived twice at once (a retry racing its original): one row wins.
            pass
        except SQLAlchemyError as exc:
            raise StorageError(f"database error: {exc.__class__.__name__}") from exc
        row = self._find(device_id, digest)
        if row is None:
            raise StorageError("the sample was stored but cannot be read back")
        log.info("sample %s from %s (%d bytes)", row.id, device_id, len(data))
        self._retain(device_id, keep=row.id)
        return _row(row), True

    def _check_rate(self, device_id: str) -> None:
        """429 when the device stored ``max_per_minute`` samples in the last minute (counted in the
        database, so the bound holds across replicas)."""
        since = utcnow() - timedelta(minutes=1)
        try:
            with self.engine.connect() as conn:
                recent = conn.execute(select(func.count()).select_from(samples).where(
                    samples.c.device_id == device_id, samples.c.received_at > since)).scalar() or 0
        except SQLAlchemyError as exc:
            raise StorageError(f"database error: {exc.__class__.__name__}") from exc
        if recent >= self.max_per_minute:
            raise TooManyRequestsError(f"device {device_id!r} sent {recent} samples in the last minute; the limit is "
                                       f"{self.max_per_minute} a minute: try again in a minute")

    def _retain(self, device_id: str, keep: int) -> None:
        """Drop the device's oldest samples past its quota (never ``keep``, the one just stored).
        Rows go first, then their images: a crash in between leaves an orphan file, never a row
        without its image."""
        try:
            with self.engine.begin() as conn:
                rows = conn.execute(select(samples.c.id, samples.c.size, samples.c.storage_key)
                                    .where(samples.c.device_id == device_id)
                                    .order_by(samples.c.id.desc())).all()
                count = total = 0
                drop: list[Any] = []
                for r in rows:
                    count, total = count + 1, total + int(r.size)
                    if r.id != keep and (count > self.max_per_device or total > self.max_bytes_per_device):
                        drop.append(r)
                        count, total = count - 1, total - int(r.size)
                if drop:
                    conn.execute(delete(samples).where(samples.c.id.in_([r.id for r in drop])))
        except SQLAlchemyError as exc:
            raise StorageError(f"database error: {exc.__class__.__name__}") from exc
        for r in drop:
            try:
                self.store.delete(r.storage_key)
            except (StorageError, OSError) as exc:  # an orphan image is logged; the upload succeeded
                log.warning("samples: cannot delete the image of dropped sample %s: %s", r.id, exc)
        if drop:
            log.info("samples: dropped %d oldest sample(s) of %s to keep its quota (%d samples, %d bytes)",
                     len(drop), device_id, self.max_per_device, self.max_bytes_per_device)

    def _find(self, device_id: str, digest: str) -> Any:
        try:
            with self.engine.connect() as conn:
                return conn.execute(select(samples).where(samples.c.device_id == device_id,
                                                          samples.c.sha256 == digest)).first()
        except SQLAlchemyError as exc:
            raise StorageError(f"database error: {exc.__class__.__name__}") from exc

    def page(self, device_id: str | None, limit: int, after: int) -> list[dict[str, Any]]:
        q = select(samples).where(samples.c.id > after).order_by(samples.c.id).limit(limit)
        if device_id is not None:
            q = q.where(samples.c.device_id == device_id)
        try:
            with self.engine.connect() as conn:
                return [_row(r) for r in conn.execute(q)]
        except SQLAlchemyError as exc:
            raise StorageError(f"database error: {exc.__class__.__name__}") from exc

    def image(self, sample_id: int) -> tuple[bytes, str]:
        try:
            with self.engine.connect() as conn:
                r = conn.execute(select(samples).where(samples.c.id == sample_id)).first()
        except SQLAlchemyError as exc:
            raise StorageError(f"database error: {exc.__class__.__name__}") from exc
        if r is None:
            raise NotFoundError(f"no sample {sample_id}", code="unknown_sample")
        data = b"".join(self.store.iter_range(r.storage_key, 0, r.size - 1))
        return data, r.content_type
