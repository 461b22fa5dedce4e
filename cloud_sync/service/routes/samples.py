"""Field samples over HTTP: a device uploads an image it was unsure about (multipart ``image`` and
``metadata``); admins list samples and fetch their images (the logic is ``_samples``)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from .. import _schemas as S
from .._deps import Admin, Device, get_service
from .._errors import BadRequestError, PayloadTooLargeError, UnsupportedMediaTypeError
from .._http import content_type, read_limited
from .._samples import MAX_METADATA_BYTES, SampleOut, parse_metadata, parse_sample_form
from ._common import ERRORS

__all__ = ["router"]

router = APIRouter()
TAG: list[str | Enum] = ["samples"]
_UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["image"], "properties": {
        "image": {"type": "string", "format": "binary", "description": "JPEG or PNG"},
        "metadata": {"type": "string", "description": "a JSON object (at most 16 KiB)"}}}}}}}


@router.post("/api/v1/device/samples", status_code=201, tags=TAG, response_model=SampleOut,
             responses={**ERRORS, 200: {"model": SampleOut, "description": "already stored (a resend)"},
                        413: {"model": S.ErrorBody}, 415: {"model": S.ErrorBody},
                        429: {"model": S.ErrorBody, "description": "over the device's samples per minute"}},
             openapi_extra=_UPLOAD_BODY)
async def upload_sample(request: Request, me: Device) -> Any:
    """Store an image the device was unsure about, with what it knew (multipart: `image`,
    `metadata`). 201 for a new sample, 200 with `duplicate: true` for bytes already stored.
    Each device keeps at most `samples_max_per_device` samples and `samples_max_bytes_per_device`
    bytes (its oldest are dropped to make room) and stores at most `samples_max_per_minute` new
    samples a minute (429 past that)."""
    assert me.device_id is not None
    svc = get_service(request)
    if content_type(request) != "multipart/form-data":
        raise UnsupportedMediaTypeError("send a multipart/form-data body with fields 'image' and 'metadata'")
    limit = svc.settings.max_image_bytes
    raw = await read_limited(request, limit + MAX_METADATA_BYTES + 64 * 1024, "sample upload")
    data, text = await parse_sample_form(request, raw)
    if not data:
        raise BadRequestError("the image is empty (0 bytes)", code="empty_image")
    if len(data) > limit:
        raise PayloadTooLargeError(f"the image is larger than the limit of {limit} bytes")
    meta = parse_metadata(text)
    rec, created = await run_in_threadpool(svc.samples.add, me.device_id, data, meta)
    return JSONResponse(rec, status_code=201 if created else 200)


@router.get("/api/v1/samples", tags=TAG, response_model=list[SampleOut], responses=ERRORS)
def list_samples(request: Request, _: Admin, device_id: Annotated[str | None, Query(max_length=64)] = None,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                 after: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0) -> list[dict[str, Any]]:
    """Samples in arrival order (page with `after` = the last id seen), optionally of one device."""
    return get_service(request).samples.page(device_id, limit, after)


@router.get("/api/v1/samples/{sample_id}/image", tags=TAG, response_class=Response,
            responses={**ERRORS, 200: {"content": {"image/jpeg": {}, "image/png": {}}}})
def sample_image(request: Request, sample_id: Annotated[int, PathParam(ge=1, le=2**31 - 1)], _: Admin) -> Response:
    """The sample's image, byte for byte as the device sent it."""
    data, ctype = get_service(request).samples.image(sample_id)
    return Response(data, media_type=ctype)
