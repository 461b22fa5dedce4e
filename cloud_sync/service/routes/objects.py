"""Detected objects over time: ``/api/v1/fleet/objects``, counts per label and time bucket from
``telemetry_detections`` (the dashboard's "objects per label" chart reads the same numbers)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from .._dashboard import objects_per_label
from .._deps import Admin, get_service
from .._errors import BadRequestError
from ._common import ERRORS

__all__ = ["router"]

router = APIRouter()
TAG: list[str | Enum] = ["dashboard"]
MAX_LABELS = 100


@router.get("/api/v1/fleet/objects", tags=TAG, responses=ERRORS)
def objects(request: Request, _: Admin,
            hours: Annotated[float, Query(gt=0, le=24 * 31, description="window, up to now")] = 24,
            label: Annotated[list[str] | None, Query(description="only these labels (repeat)")] = None,
            device: Annotated[str | None, Query(max_length=64, description="only this device")] = None,
            min_score: Annotated[float | None, Query(ge=0, le=1, description="only objects scoring at least")] = None,
            ) -> dict[str, Any]:
    """Objects the fleet's detectors found, per label and time bucket (minute, hour or day by
    window), by frame time: ``objects.totals`` per label and ``objects.buckets`` [{t, counts}];
    the 12 most frequent labels by name, the rest as ``other``."""
    labels = label or []
    if len(labels) > MAX_LABELS:
        raise BadRequestError(f"at most {MAX_LABELS} labels per query, got {len(labels)}", code="too_many_labels")
    if any("\x00" in v for v in [*labels, device or ""]):  # no database stores NUL in text
        raise BadRequestError("a label or device id contains a NUL character", code="bad_filter")
    return objects_per_label(get_service(request).engine, hours=hours, labels=labels, device_id=device,
                             min_score=min_score)
