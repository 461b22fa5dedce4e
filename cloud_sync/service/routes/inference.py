"""Online inference, the Open Inference Protocol (KServe v2 REST): health, model metadata,
``infer`` (JSON or binary tensors), and ``classify`` for an image upload."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from edge_runtime import InputError, __version__

from .. import _schemas as S
from .._deps import Anyone, get_service
from .._errors import ServiceError, StorageError, UnsupportedMediaTypeError
from .._http import content_type, read_limited
from .._imagein import image_from_request
from .._oip import check_outputs, datatype_of, decode_body, encode_body, encode_response, parse_infer_request
from .._predict import classify_image, run_items
from ._common import V2_ERRORS as ERRORS
from ._common import ModelName, Version

__all__ = ["router"]

router = APIRouter()
TAG: list[str | Enum] = ["inference (Open Inference Protocol v2)"]


@router.get("/v2", tags=TAG)
def server_metadata() -> dict[str, Any]:
    return {"name": "edge-cloud", "version": __version__, "extensions": ["binary_tensor_data", "classify"]}


@router.get("/v2/health/live", tags=TAG)
def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/v2/health/ready", tags=TAG, responses={503: {"model": S.V2ErrorBody}})
def ready(request: Request) -> dict[str, bool]:
    """Ready when the database and the object store answer."""
    svc = get_service(request)
    try:
        with svc.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        raise StorageError(f"database not reachable: {exc.__class__.__name__}") from exc
    svc.store.check()
    return {"ready": True}


async def _metadata(request: Request, name: str, version: int | None) -> dict[str, Any]:
    svc = get_service(request)
    rec = await svc.models.resolve(name, version)
    m = rec.manifest

    def tensors(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"name": t["name"], "datatype": datatype_of(t["dtype"]), "shape": t["shape"]} for t in specs]

    versions = [str(v["version"]) for v in svc.registry.model_detail(name)["versions"]]
    return {"name": rec.name, "versions": versions, "platform": f"edge_runtime_{m['format']}",
            "inputs": tensors(m["inputs"]), "outputs": tensors(m["outputs"]),
            "parameters": {"version": rec.version, "task": m.get("task"), "sha256": rec.sha256}}


@router.get("/v2/models/{name}", tags=TAG, responses=ERRORS)
async def model_metadata(request: Request, name: ModelName, _: Anyone) -> dict[str, Any]:
    """Model metadata: inputs and outputs with KServe datatypes (of the version it serves)."""
    return await _metadata(request, name, None)


@router.get("/v2/models/{name}/versions/{version}", tags=TAG, responses=ERRORS)
async def model_version_metadata(request: Request, name: ModelName, version: Version,
                                 _: Anyone) -> dict[str, Any]:
    return await _metadata(request, name, version)


@router.get("/v2/models/{name}/ready", tags=TAG, responses=ERRORS)
async def model_ready(request: Request, name: ModelName, _: Anyone) -> dict[str, Any]:
    """Loads the model if needed; ready once it can answer."""
    lm = await get_service(request).models.get(name)
    return {"name": lm.name, "version": str(lm.version), "ready": True}


@router.get("/v2/models/{name}/versions/{version}/ready", tags=TAG, responses=ERRORS)
async def model_version_ready(request: Request, name: ModelName, version: Version, _: Anyone) -> dict[str, Any]:
    """Loads that version if needed; ready once it can answer."""
    lm = await get_service(request).models.get(name, version)
    return {"name": lm.name, "version": str(lm.version), "ready": True}


infer_schema = S.InferRequestBody.model_json_schema(ref_template="#/components/schemas/{model}")
infer_body = {"requestBody": {"required": True, "content": {"application/json": {"schema": infer_schema}}}}


#: what /infer takes: JSON, or the binary layout (tritonclient's sync client sends no Content-Type,
#: its aio client labels JSON as application/octet-stream: like Triton, the presence of
#: Inference-Header-Content-Length decides the layout, not the label)
_TENSOR_TYPES = ("", "application/json", "application/octet-stream")


async def _infer(request: Request, name: str, version: int | None) -> Response:
    svc = get_service(request)
    ctype = content_type(request)
    header_len = request.headers.get("inference-header-content-length")
    if ctype not in _TENSOR_TYPES:
        raise UnsupportedMediaTypeError(f"send tensors as application/json (or the binary layout with "
                                        f"Inference-Header-Content-Length), not {ctype}")
    limit = svc.settings.max_infer_bytes
    body = decode_body(await read_limited(request, limit), request.headers.get("content-encoding"), limit)
    lm = await svc.models.get(name, version)
    try:
        req = parse_infer_request(body, header_len, list(lm.model.manifest.inputs))
        out_specs = list(lm.model.manifest.outputs)
        check_outputs(req.outputs, out_specs)
        outs = await run_items(lm, req.tensors, req.batch)
        content, headers = encode_response(lm.name, lm.version, req, outs, out_specs, lm.model.labels)
    except Exception as exc:
        svc.metrics.inference_errors.inc(model=lm.name, code=_error_code(exc))
        raise
    svc.metrics.inferences.inc(req.batch, model=lm.name)
    content, encoding = encode_body(content, request.headers.get("accept-encoding"))
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    headers["Vary"] = "Accept-Encoding"
    return Response(content, headers=headers)


def _error_code(exc: Exception) -> str:
    """The code the error handlers answer with (so metrics and answers name the same thing)."""
    if isinstance(exc, ServiceError):
        return exc.code
    return "bad_input" if isinstance(exc, InputError) else "runtime_error"


@router.post("/v2/models/{name}/infer", tags=TAG, response_model=S.InferResponseBody,
             responses={**ERRORS, 413: {"model": S.V2ErrorBody}, 415: {"model": S.V2ErrorBody}},
             openapi_extra=infer_body)
async def infer(request: Request, name: ModelName, _: Anyone) -> Response:
    """Run the model on tensors (KServe v2 JSON, or the binary tensor extension). Requests of
    concurrent callers are batched together."""
    return await _infer(request, name, None)


@router.post("/v2/models/{name}/versions/{version}/infer", tags=TAG, response_model=S.InferResponseBody,
             responses={**ERRORS, 413: {"model": S.V2ErrorBody}, 415: {"model": S.V2ErrorBody}},
             openapi_extra=infer_body)
async def infer_version(request: Request, name: ModelName, version: Version, _: Anyone) -> Response:
    return await _infer(request, name, version)


classify_body = {"requestBody": {"required": True, "content": {
    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
    "image/png": {"schema": {"type": "string", "format": "binary"}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
        "image": {"type": "string", "format": "binary"}}}}}}}


async def _classify(request: Request, name: str, version: int | None, top_k: int) -> dict[str, Any]:
    svc = get_service(request)
    data = await image_from_request(request, svc.settings.max_image_bytes)
    lm = await svc.models.get(name, version)
    try:
        out = await classify_image(lm, data, top_k)
    except Exception as exc:
        svc.metrics.inference_errors.inc(model=lm.name, code=_error_code(exc))
        raise
    svc.metrics.inferences.inc(1, model=lm.name)
    return out


@router.post("/v2/models/{name}/classify", tags=TAG, response_model=S.ClassifyResponse,
             responses={**ERRORS, 413: {"model": S.V2ErrorBody}, 415: {"model": S.V2ErrorBody}},
             openapi_extra=classify_body)
async def classify(request: Request, name: ModelName, _: Anyone,
                   top_k: Annotated[int, Query(ge=1, le=1000)] = 5) -> dict[str, Any]:
    """Classify an image (raw `image/*` body, or multipart field `image`): the top-k labels,
    computed by the same runtime, preprocessing and bundle as on the device."""
    return await _classify(request, name, None, top_k)


@router.post("/v2/models/{name}/versions/{version}/classify", tags=TAG, response_model=S.ClassifyResponse,
             responses={**ERRORS, 413: {"model": S.V2ErrorBody}, 415: {"model": S.V2ErrorBody}},
             openapi_extra=classify_body)
async def classify_version(request: Request, name: ModelName, version: Version, _: Anyone,
                           top_k: Annotated[int, Query(ge=1, le=1000)] = 5) -> dict[str, Any]:
    return await _classify(request, name, version, top_k)
