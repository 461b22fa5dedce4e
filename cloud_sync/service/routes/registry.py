"""Model registry: upload signed bundles, list and download versions (ETag, Range), channels
(promote, roll back), each channel change sending an update notice to its devices."""

from __future__ import annotations

import tempfile
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from .. import _schemas as S
from .._auth import Principal
from .._deps import Admin, Anyone, Service, get_service
from .._errors import ForbiddenError, NotFoundError, ServiceError, UnsupportedMediaTypeError
from .._http import content_type, parse_range, spool_limited
from .._registry import VersionRecord
from ._common import CHANNEL, ERRORS, Channel, ModelName, Version

__all__ = ["router"]

router = APIRouter()
BUNDLE_TYPES = ("application/gzip", "application/x-gzip", "application/octet-stream", "application/x-tar")
TAG: list[str | Enum] = ["registry"]


@router.post("/api/v1/models", status_code=201, tags=TAG, response_model=S.VersionOut,
             responses={**ERRORS, 409: {"model": S.ErrorBody}, 413: {"model": S.ErrorBody},
                        415: {"model": S.ErrorBody}},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/gzip": {"schema": {"type": "string", "format": "binary"}}}}})
async def upload_bundle(request: Request, _: Admin,
                        channel: Annotated[str | None, Query(pattern=CHANNEL)] = None) -> dict[str, Any]:
    """Upload a signed bundle (.tar.gz). It is verified against the trusted keys; with `channel`
    the channel points at it at once (and its devices get an update notice)."""
    svc = get_service(request)
    if content_type(request) not in BUNDLE_TYPES:
        raise UnsupportedMediaTypeError(f"upload a .tar.gz bundle as application/gzip, not "
                                        f"{content_type(request) or 'no content type'}")
    with tempfile.TemporaryDirectory(prefix="edge-upload-") as tmp:
        archive = Path(tmp) / "upload.tar.gz"
        try:
            await spool_limited(request, archive, svc.settings.max_upload_bytes, "bundle upload")
            rec = await run_in_threadpool(svc.registry.publish, archive, channel=channel)
        except ServiceError as exc:
            svc.metrics.uploads.inc(result=exc.code)
            raise
    svc.metrics.uploads.inc(result="ok")
    return rec.to_json()


def readable_version(svc: Service, who: Principal, name: str, version: int) -> VersionRecord:
    """The version, if ``who`` may read it: the admin reads everything; a device only the model it
    is assigned to (404 for any other, as if it did not exist) and only versions its channel has
    pointed at (403 for the others, e.g. another channel's beta)."""
    if who.is_admin:
        return svc.registry.get_version(name, version)
    assert who.device_id is not None
    dev = svc.devices.get(who.device_id)
    if dev["model"] != name:
        raise NotFoundError(f"no model named {name!r} is assigned to device {who.device_id!r}",
                            code="unknown_model")
    rec = svc.registry.get_version(name, version)
    channel = dev["channel"]
    if version not in {e["version"] for e in svc.registry.channel_history(name) if e["channel"] == channel}:
        raise ForbiddenError(f"{name} v{version} was never on channel {channel!r} of device {who.device_id!r}",
                             code="not_on_channel")
    return rec


@router.get("/api/v1/models", tags=TAG, response_model=list[S.ModelSummary], responses=ERRORS)
def list_models(request: Request, _: Admin) -> list[dict[str, Any]]:
    """Every model with its latest version and its channels."""
    return get_service(request).registry.list_models()


@router.get("/api/v1/models/{name}", tags=TAG, response_model=S.ModelDetail, responses=ERRORS)
def model_detail(request: Request, name: ModelName, _: Admin) -> dict[str, Any]:
    return get_service(request).registry.model_detail(name)


@router.get("/api/v1/models/{name}/versions/{version}", tags=TAG, response_model=S.VersionOut,
            responses=ERRORS)
def version_detail(request: Request, name: ModelName, version: Version, who: Anyone) -> dict[str, Any]:
    """A version (a device: of its own model, on its channel)."""
    return readable_version(get_service(request), who, name, version).to_json()


@router.get("/api/v1/models/{name}/versions/{version}/manifest", tags=TAG, responses=ERRORS)
def version_manifest(request: Request, name: ModelName, version: Version, who: Anyone) -> dict[str, Any]:
    """The bundle's manifest as JSON (a device: of its own model, on its channel)."""
    return readable_version(get_service(request), who, name, version).manifest

bundle_responses: dict[int | str, dict[str, Any]] = {
    **ERRORS, 206: {"description": "partial content"}, 304: {"description": "not modified"},
    416: {"model": S.ErrorBody}}


@router.head("/api/v1/models/{name}/versions/{version}/bundle", tags=TAG, responses=bundle_responses,
             response_class=Response, operation_id="bundle_head")
@router.get("/api/v1/models/{name}/versions/{version}/bundle", tags=TAG, responses=bundle_responses,
            response_class=Response, operation_id="bundle_download")
def download_bundle(request: Request, name: ModelName, version: Version, who: Anyone) -> Response:
    """The bundle archive, with `ETag` (its sha256) and `Range` support so a device resumes a
    broken download (`If-Range` with the ETag keeps a resumed download consistent). A device
    downloads only its own model's versions that its channel has pointed at."""
    svc = get_service(request)
    rec = readable_version(svc, who, name, version)
    headers = {"ETag": rec.etag, "Accept-Ranges": "bytes", "Cache-Control": "private, max-age=0",
               "Content-Disposition": f'attachment; filename="{name}-v{version}.tar.gz"'}
    inm = request.headers.get("if-none-match")
    if inm is not None and rec.etag in [t.strip() for t in inm.split(",")]:
        return Response(status_code=304, headers=headers)
    rng_header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range.strip() != rec.etag:
        rng_header = None  # the client's partial copy is of another bundle: send it whole
    rng = parse_range(rng_header, rec.size)
    start, end = rng if rng is not None else (0, rec.size - 1)
    length = end - start + 1 if rec.size else 0
    headers["Content-Length"] = str(length)
    status = 200
    if rng is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{rec.size}"
    if request.method == "HEAD" or length == 0:
        return Response(status_code=status, headers=headers, media_type="application/gzip")
    body = svc.store.iter_range(rec.storage_key, start, end)
    return StreamingResponse(body, status_code=status, headers=headers, media_type="application/gzip")


@router.get("/api/v1/models/{name}/channels", tags=TAG, responses=ERRORS)
def channel_history(request: Request, name: ModelName, _: Admin) -> dict[str, Any]:
    """Each channel's current version and the full promote/rollback history."""
    svc = get_service(request)
    svc.registry.model_detail(name)
    return {"name": name, "channels": svc.registry.channels(name), "history": svc.registry.channel_history(name)}


@router.put("/api/v1/models/{name}/channels/{channel}", tags=TAG, response_model=S.VersionOut, responses=ERRORS)
def promote(request: Request, name: ModelName, channel: Channel, body: S.ChannelSet, _: Admin) -> dict[str, Any]:
    """Point `channel` at a version (promote); its devices get an update notice."""
    return get_service(request).registry.promote(name, channel, body.version).to_json()


@router.post("/api/v1/models/{name}/channels/{channel}/rollback", tags=TAG, response_model=S.VersionOut,
             responses={**ERRORS, 409: {"model": S.ErrorBody}})
def rollback(request: Request, name: ModelName, channel: Channel, _: Admin) -> dict[str, Any]:
    """Point `channel` back at the version it had before its latest promotion."""
    return get_service(request).registry.rollback(name, channel).to_json()
