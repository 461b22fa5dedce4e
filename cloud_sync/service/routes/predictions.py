"""Batch predictions, read back by key: ``GET /api/v1/predictions``.

``edge batch`` writes one row per input and model version into ``batch_predictions``; when the batch
job and the service share a database, this is how an application looks its predictions up later.
Pages are keyset-paginated on the table's primary key (source key, model, version), so a page costs
the same at row 10 and at row 10 million, and rows written meanwhile never shift a page.
"""

from __future__ import annotations

import base64
import binascii
import json
from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from sqlalchemy import and_, or_, select
from starlette.concurrency import run_in_threadpool

from cloud_sync.db import batch_predictions

from .._deps import Anyone, get_service
from .._errors import BadRequestError
from ._common import ERRORS

__all__ = ["router"]

router = APIRouter()
TAG: list[str | Enum] = ["predictions"]
MAX_PAGE = 1000
#: the longest source key a query may name: S3's key limit, and short enough that a query string stays
#: within what HTTP servers accept even when every character is percent-encoded UTF-8
MAX_KEY = 1024


def _encode_cursor(row: Any) -> str:
    raw = json.dumps([row.source_key, row.model_name, row.model_version], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, str, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        source, model, version = json.loads(raw)
        if not (isinstance(source, str) and isinstance(model, str) and isinstance(version, int)):
            raise TypeError
        return source, model, version
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise BadRequestError("cursor is not one this service gave out", code="bad_cursor") from exc


def _row(r: Any) -> dict[str, Any]:
    return {"source": r.source_key, "model": {"name": r.model_name, "version": r.model_version},
            "ts": r.ts.isoformat() if r.ts is not None else None, "backend": r.backend,
            "top_label": r.top_label, "top_score": r.top_score, "detections": r.detections, "values": r.values,
            "latency_ms": r.latency_ms, "error": r.error, "record": r.record}


@router.get("/api/v1/predictions", tags=TAG, responses=ERRORS)
async def predictions(request: Request, _: Anyone,
                      source: Annotated[str | None, Query(max_length=MAX_KEY,
                                                          description="this source key only")] = None,
                      source_prefix: Annotated[str | None, Query(max_length=MAX_KEY,
                                                                 description="source keys starting with this")] = None,
                      model: Annotated[str | None, Query(max_length=128, description="this model only")] = None,
                      version: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="this version only")] = None,
                      errors: Annotated[bool | None, Query(description="true: only failed inputs; false: none")] = None,
                      limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
                      cursor: Annotated[str | None, Query(max_length=2 * MAX_KEY,
                                                          description="`next` of the page before")] = None,
                      ) -> dict[str, Any]:
    """Predictions ``edge batch`` wrote, by source key and model (admin or device token), in key order:
    ``items`` and ``next`` (the cursor of the following page, or null)."""
    for value in (source, source_prefix, model):
        if value is not None and "\x00" in value:  # no database stores NUL in text
            raise BadRequestError("a filter contains a NUL character", code="bad_filter")
    t = batch_predictions.c
    conds = []
    if source is not None:
        conds.append(t.source_key == source)
    if source_prefix is not None:
        escaped = source_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conds.append(t.source_key.like(escaped + "%", escape="\\"))
    if model is not None:
        conds.append(t.model_name == model)
    if version is not None:
        conds.append(t.model_version == version)
    if errors is not None:
        conds.append(t.error.is_not(None) if errors else t.error.is_(None))
    if cursor is not None:
        s, m, v = _decode_cursor(cursor)
        # (source, model, version) > cursor, spelled out: SQLite's row values need 3.15+, and this
        # form uses the primary key's index on every database.
        conds.append(or_(t.source_key > s, and_(t.source_key == s, or_(
            t.model_name > m, and_(t.model_name == m, t.model_version > v)))))
    query = (select(batch_predictions).where(*conds)
             .order_by(t.source_key, t.model_name, t.model_version).limit(limit + 1))
    engine = get_service(request).engine

    def fetch() -> list[Any]:
        with engine.connect() as c:
            return list(c.execute(query))

    rows = await run_in_threadpool(fetch)
    page, more = rows[:limit], len(rows) > limit
    return {"items": [_row(r) for r in page], "next": _encode_cursor(page[-1]) if more else None}
