"""The FastAPI application: registry, online inference, devices, dashboard, metrics.

``create_app(settings)`` builds everything from the settings; all state that matters lives in
the database and the object store, so any number of replicas can run behind a load balancer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import Enum
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge_runtime import EdgeError, InputError, PublicKey, __version__, load_public_key

from . import _schemas as S
from ._auth import Principal, hash_token, parse_bearer, tokens_equal
from ._dashboard import dashboard_data, fleet
from ._db import make_engine
from ._devices import DeviceRegistry
from ._errors import (
    BadRequestError,
    ForbiddenError,
    RangeNotSatisfiableError,
    ServiceError,
    StorageError,
    UnauthorizedError,
    UnprocessableError,
    UnsupportedMediaTypeError,
)
from ._http import content_type, parse_range, read_limited, spool_limited
from ._imagein import decode_image, image_from_request
from ._inference import LoadedModel, ModelManager
from ._metrics import MetricsRegistry
from ._notify import Notifier, make_notifier
from ._oip import datatype_of, encode_outputs, json_dumps, parse_infer_request
from ._registry import Registry
from ._settings import ServiceSettings
from ._storage import BlobStore, open_store

__all__ = ["Service", "create_app", "create_app_from_env"]

log = logging.getLogger(__name__)

BUNDLE_TYPES = ("application/gzip", "application/x-gzip", "application/octet-stream", "application/x-tar")
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
CHANNEL = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
ModelName = Annotated[str, PathParam(pattern=NAME, description="model name")]
Channel = Annotated[str, PathParam(pattern=CHANNEL, description="channel name, e.g. stable or beta")]
Version = Annotated[int, PathParam(ge=1, le=2**31 - 1)]

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": S.ErrorBody, "description": "bad request"},
    401: {"model": S.ErrorBody, "description": "missing or invalid token"},
    403: {"model": S.ErrorBody, "description": "token may not do this"},
    404: {"model": S.ErrorBody, "description": "not found"},
    422: {"model": S.ErrorBody, "description": "unusable input"},
}


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

    @classmethod
    def build(cls, settings: ServiceSettings) -> Service:
        keys = [load_public_key(p) for p in settings.trusted_keys]
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


# -- auth ------------------------------------------------------------------------------------
_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <token>`: the admin token or a "
                     "device token")


def _svc(request: Request) -> Service:
    svc: Service = request.app.state.service
    return svc


async def _principal(request: Request,
                     creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
    token = creds.credentials if creds is not None else parse_bearer(request.headers.get("authorization"))
    if not token:
        raise UnauthorizedError("this endpoint needs a token: send 'Authorization: Bearer <token>'",
                                code="missing_token")
    svc = _svc(request)
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


# -- error handling ---------------------------------------------------------------------------
def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    headers = {}
    if isinstance(exc, RangeNotSatisfiableError):
        headers["Content-Range"] = f"bytes */{exc.size}"
    if isinstance(exc, UnauthorizedError):
        headers["WWW-Authenticate"] = "Bearer"
    if exc.status >= 500:
        log.error("%s %s: %s", request.method, request.url.path, exc.message)
    return _error(exc.status, exc.code, exc.message, headers)


async def _edge_error(request: Request, exc: Exception) -> Response:
    code = "bad_input" if isinstance(exc, InputError) else "runtime_error"
    return _error(422, code, str(exc))


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errs = exc.errors()
    parts = []
    for e in errs[:5]:
        loc = ".".join(str(x) for x in e.get("loc", ()))
        parts.append(f"{loc}: {e.get('msg')}")
    body = {"error": {"code": "invalid_request", "message": "; ".join(parts) or "invalid request",
                      "details": [{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in errs[:20]]}}
    return JSONResponse(body, status_code=422)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    return _error(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail),
                  dict(exc.headers or {}))


async def _unexpected(request: Request, exc: Exception) -> Response:
    # The last resort for bugs: log the traceback here, answer without internals.
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return _error(500, "internal_error", "internal error; the service logged the details")


# -- metrics middleware ------------------------------------------------------------------------
class _MetricsMiddleware:
    """Counts requests by route template (not raw path: bounded label values), status and time."""

    def __init__(self, app: ASGIApp, metrics: MetricsRegistry) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]

        async def _send(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.http_requests.inc(method=scope["method"], route=path, status=str(status[0]))
            self.metrics.http_latency.observe(time.perf_counter() - t0, route=path)


# -- the app -------------------------------------------------------------------------------------
def create_app(settings: ServiceSettings | None = None, *, service: Service | None = None) -> FastAPI:
    settings = settings or ServiceSettings()
    svc = service or Service.build(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await svc.close()

    app = FastAPI(
        title="edge cloud service",
        version=__version__,
        description="Model registry, online inference (Open Inference Protocol / KServe v2), device "
                    "registry and fleet dashboard. Admin endpoints need the admin token, device endpoints "
                    "a device token, both as `Authorization: Bearer <token>`.",
        lifespan=lifespan,
        docs_url=None,  # served below from local assets: FastAPI's default page loads them from a CDN
    )
    app.state.service = svc
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(EdgeError, _edge_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(_MetricsMiddleware, metrics=svc.metrics)
    _registry_routes(app)
    _device_routes(app)
    _inference_routes(app)
    _ops_routes(app)
    from ._samples import sample_routes  # here, not at the top: _samples uses this module's auth

    sample_routes(app, svc)
    static = files("cloud_sync.service").joinpath("static")
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    _docs_route(app)
    return app


def _docs_route(app: FastAPI) -> None:
    """``/docs`` with Swagger UI from the ``swagger-ui-bundle-v2`` package, so the API page works
    on a network with no internet, like the dashboard."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse

    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        swagger_ui_path = None
    if swagger_ui_path is not None:
        app.mount("/docs-assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")
        js, css = "/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css"
        icon = "/docs-assets/favicon-32x32.png"
    else:  # not installed: fall back to FastAPI's CDN defaults rather than no page at all
        js = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"
        css = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"
        icon = "https://fastapi.tiangolo.com/img/favicon.png"

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - API",
                                   swagger_js_url=js, swagger_css_url=css, swagger_favicon_url=icon)


def create_app_from_env() -> FastAPI:
    """The app for ``uvicorn --factory`` (several workers): settings from the TOML file named by
    ``EDGE_SERVICE_CONFIG`` (what ``edge cloud serve`` passes on), overridden by EDGE_* variables."""
    import os

    return create_app(ServiceSettings.from_toml(os.environ.get("EDGE_SERVICE_CONFIG")))


def _registry_routes(app: FastAPI) -> None:
    tag: list[str | Enum] = ["registry"]

    @app.post("/api/v1/models", status_code=201, tags=tag, response_model=S.VersionOut,
              responses={**ERRORS, 409: {"model": S.ErrorBody}, 413: {"model": S.ErrorBody},
                         415: {"model": S.ErrorBody}},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/gzip": {"schema": {"type": "string", "format": "binary"}}}}})
    async def upload_bundle(request: Request, _: Admin,
                            channel: Annotated[str | None, Query(pattern=CHANNEL)] = None) -> dict[str, Any]:
        """Upload a signed bundle (.tar.gz). It is verified against the trusted keys; with `channel`
        the channel points at it at once (and its devices get an update notice)."""
        svc = _svc(request)
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

    @app.get("/api/v1/models", tags=tag, response_model=list[S.ModelSummary], responses=ERRORS)
    def list_models(request: Request, _: Admin) -> list[dict[str, Any]]:
        """Every model with its latest version and its channels."""
        return _svc(request).registry.list_models()

    @app.get("/api/v1/models/{name}", tags=tag, response_model=S.ModelDetail, responses=ERRORS)
    def model_detail(request: Request, name: ModelName, _: Admin) -> dict[str, Any]:
        return _svc(request).registry.model_detail(name)

    @app.get("/api/v1/models/{name}/versions/{version}", tags=tag, response_model=S.VersionOut,
             responses=ERRORS)
    def version_detail(request: Request, name: ModelName, version: Version, _: Anyone) -> dict[str, Any]:
        return _svc(request).registry.get_version(name, version).to_json()

    @app.get("/api/v1/models/{name}/versions/{version}/manifest", tags=tag, responses=ERRORS)
    def version_manifest(request: Request, name: ModelName, version: Version, _: Anyone) -> dict[str, Any]:
        """The bundle's manifest as JSON."""
        return _svc(request).registry.get_version(name, version).manifest

    bundle_responses: dict[int | str, dict[str, Any]] = {
        **ERRORS, 206: {"description": "partial content"}, 304: {"description": "not modified"},
        416: {"model": S.ErrorBody}}

    @app.head("/api/v1/models/{name}/versions/{version}/bundle", tags=tag, responses=bundle_responses,
              response_class=Response, operation_id="bundle_head")
    @app.get("/api/v1/models/{name}/versions/{version}/bundle", tags=tag, responses=bundle_responses,
             response_class=Response, operation_id="bundle_download")
    def download_bundle(request: Request, name: ModelName, version: Version, _: Anyone) -> Response:
        """The bundle archive, with `ETag` (its sha256) and `Range` support so a device resumes a
        broken download (`If-Range` with the ETag keeps a resumed download consistent)."""
        svc = _svc(request)
        rec = svc.registry.get_version(name, version)
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

    @app.get("/api/v1/models/{name}/channels", tags=tag, responses=ERRORS)
    def channel_history(request: Request, name: ModelName, _: Admin) -> dict[str, Any]:
        """Each channel's current version and the full promote/rollback history."""
        svc = _svc(request)
        svc.registry.model_detail(name)
        return {"name": name, "channels": svc.registry.channels(name), "history": svc.registry.channel_history(name)}

    @app.put("/api/v1/models/{name}/channels/{channel}", tags=tag, response_model=S.VersionOut, responses=ERRORS)
    def promote(request: Request, name: ModelName, channel: Channel, body: S.ChannelSet, _: Admin) -> dict[str, Any]:
        """Point `channel` at a version (promote); its devices get an update notice."""
        return _svc(request).registry.promote(name, channel, body.version).to_json()

    @app.post("/api/v1/models/{name}/channels/{channel}/rollback", tags=tag, response_model=S.VersionOut,
              responses={**ERRORS, 409: {"model": S.ErrorBody}})
    def rollback(request: Request, name: ModelName, channel: Channel, _: Admin) -> dict[str, Any]:
        """Point `channel` back at the version it had before its latest promotion."""
        return _svc(request).registry.rollback(name, channel).to_json()


def _device_routes(app: FastAPI) -> None:
    tag: list[str | Enum] = ["devices"]

    @app.post("/api/v1/devices", status_code=201, tags=tag, response_model=S.DeviceCreated,
              responses={**ERRORS, 409: {"model": S.ErrorBody}})
    def register_device(request: Request, body: S.DeviceCreate, _: Admin) -> dict[str, Any]:
        """Register a device. The answer holds its token: the only time it is ever shown."""
        record, token = _svc(request).devices.register(device_id=body.id, name=body.name, model=body.model,
                                                       channel=body.channel)
        return {**record, "token": token}

    @app.get("/api/v1/devices", tags=tag, response_model=list[S.FleetDevice], responses=ERRORS)
    def list_devices(request: Request, _: Admin) -> list[dict[str, Any]]:
        """Every device with last seen, model version, channel, outbox depth and latency (from its
        heartbeats and its MQTT telemetry, whichever is newer)."""
        svc = _svc(request)
        return fleet(svc.engine, svc.devices.list())

    @app.get("/api/v1/devices/{device_id}", tags=tag, response_model=S.DeviceOut, responses=ERRORS)
    def get_device(request: Request, device_id: Annotated[str, PathParam(max_length=64)], _: Admin) -> dict[str, Any]:
        return _svc(request).devices.get(device_id)

    @app.delete("/api/v1/devices/{device_id}", tags=tag, response_model=S.DeviceOut, responses=ERRORS)
    def revoke_device(request: Request, device_id: Annotated[str, PathParam(max_length=64)],
                      _: Admin) -> dict[str, Any]:
        """Revoke a device: its token stops working at once, on every replica."""
        return _svc(request).devices.revoke(device_id)

    @app.get("/api/v1/device", tags=tag, response_model=S.DeviceOut, responses=ERRORS)
    def whoami(request: Request, me: Device) -> dict[str, Any]:
        """The calling device's own record."""
        assert me.device_id is not None
        return _svc(request).devices.get(me.device_id)

    @app.get("/api/v1/device/update", tags=tag, response_model=S.UpdateInfo, responses=ERRORS)
    def check_update(request: Request, me: Device,
                     current_version: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None) -> dict[str, Any]:
        """What the device's channel serves for its model, and whether that is newer than
        `current_version`."""
        svc = _svc(request)
        assert me.device_id is not None
        dev = svc.devices.get(me.device_id)
        out: dict[str, Any] = {"model": dev["model"], "channel": dev["channel"], "update_available": False}
        if dev["model"] is None:
            return out
        v = svc.registry.channel_version(dev["model"], dev["channel"])
        if v is None:
            return out
        rec = svc.registry.get_version(dev["model"], v)
        out.update(version=rec.version, sha256=rec.sha256, size=rec.size, url=rec.url,
                   expires=rec.manifest.get("expires"),
                   update_available=current_version is None or rec.version != current_version)
        return out

    @app.post("/api/v1/device/heartbeat", tags=tag, response_model=S.DeviceOut, responses=ERRORS)
    def heartbeat(request: Request, body: S.Heartbeat, me: Device) -> dict[str, Any]:
        """A device reports itself over HTTP (when it has no MQTT)."""
        assert me.device_id is not None
        return _svc(request).devices.heartbeat(me.device_id, body.model_dump())


def _inference_routes(app: FastAPI) -> None:
    tag: list[str | Enum] = ["inference (Open Inference Protocol v2)"]

    @app.get("/v2", tags=tag)
    def server_metadata() -> dict[str, Any]:
        return {"name": "edge-cloud", "version": __version__, "extensions": ["binary_tensor_data", "classify"]}

    @app.get("/v2/health/live", tags=tag)
    def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready", tags=tag, responses={503: {"model": S.ErrorBody}})
    def ready(request: Request) -> dict[str, bool]:
        """Ready when the database and the object store answer."""
        svc = _svc(request)
        try:
            with svc.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            raise StorageError(f"database not reachable: {exc.__class__.__name__}") from exc
        svc.store.check()
        return {"ready": True}

    async def _metadata(request: Request, name: str, version: int | None) -> dict[str, Any]:
        svc = _svc(request)
        rec = await svc.models.resolve(name, version)
        m = rec.manifest

        def tensors(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{"name": t["name"], "datatype": datatype_of(t["dtype"]), "shape": t["shape"]} for t in specs]

        versions = [str(v["version"]) for v in svc.registry.model_detail(name)["versions"]]
        return {"name": rec.name, "versions": versions, "platform": f"edge_runtime_{m['format']}",
                "inputs": tensors(m["inputs"]), "outputs": tensors(m["outputs"]),
                "parameters": {"version": rec.version, "task": m.get("task"), "sha256": rec.sha256}}

    @app.get("/v2/models/{name}", tags=tag, responses=ERRORS)
    async def model_metadata(request: Request, name: ModelName, _: Anyone) -> dict[str, Any]:
        """Model metadata: inputs and outputs with KServe datatypes (of the version it serves)."""
        return await _metadata(request, name, None)

    @app.get("/v2/models/{name}/versions/{version}", tags=tag, responses=ERRORS)
    async def model_version_metadata(request: Request, name: ModelName, version: Version,
                                     _: Anyone) -> dict[str, Any]:
        return await _metadata(request, name, version)

    @app.get("/v2/models/{name}/ready", tags=tag, responses=ERRORS)
    async def model_ready(request: Request, name: ModelName, _: Anyone) -> dict[str, Any]:
        """Loads the model if needed; ready once it can answer."""
        lm = await _svc(request).models.get(name)
        return {"name": lm.name, "version": str(lm.version), "ready": True}

    infer_schema = S.InferRequestBody.model_json_schema(ref_template="#/components/schemas/{model}")
    infer_body = {"requestBody": {"required": True, "content": {"application/json": {"schema": infer_schema}}}}

    async def _infer(request: Request, name: str, version: int | None) -> Response:
        svc = _svc(request)
        ctype = content_type(request)
        header_len = request.headers.get("inference-header-content-length")
        if ctype != "application/json" and not (header_len is not None and ctype == "application/octet-stream"):
            raise UnsupportedMediaTypeError(f"send tensors as application/json (or application/octet-stream with "
                                            f"Inference-Header-Content-Length), not {ctype or 'no content type'}")
        body = await read_limited(request, svc.settings.max_infer_bytes)
        lm = await svc.models.get(name, version)
        specs = list(lm.model.manifest.inputs)
        req = parse_infer_request(body, header_len, specs)
        outs = await _run_items(lm, req.tensors, req.batch)
        svc.metrics.inferences.inc(req.batch, model=lm.name)
        payload = {"model_name": lm.name, "model_version": str(lm.version), "id": req.id,
                   "outputs": encode_outputs(outs, list(lm.model.manifest.outputs), req.outputs)}
        return Response(json_dumps(payload), media_type="application/json")

    @app.post("/v2/models/{name}/infer", tags=tag, response_model=S.InferResponseBody,
              responses={**ERRORS, 413: {"model": S.ErrorBody}, 415: {"model": S.ErrorBody}},
              openapi_extra=infer_body)
    async def infer(request: Request, name: ModelName, _: Anyone) -> Response:
        """Run the model on tensors (KServe v2 JSON, or the binary tensor extension). Requests of
        concurrent callers are batched together."""
        return await _infer(request, name, None)

    @app.post("/v2/models/{name}/versions/{version}/infer", tags=tag, response_model=S.InferResponseBody,
              responses={**ERRORS, 413: {"model": S.ErrorBody}, 415: {"model": S.ErrorBody}},
              openapi_extra=infer_body)
    async def infer_version(request: Request, name: ModelName, version: Version, _: Anyone) -> Response:
        return await _infer(request, name, version)

    classify_body = {"requestBody": {"required": True, "content": {
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
            "image": {"type": "string", "format": "binary"}}}}}}}

    async def _classify(request: Request, name: str, version: int | None, top_k: int) -> dict[str, Any]:
        svc = _svc(request)
        data = await image_from_request(request, svc.settings.max_image_bytes)
        lm = await svc.models.get(name, version)
        model = lm.model
        if model.manifest.preprocess.kind != "image":
            raise UnprocessableError(f"{name} takes {model.manifest.task} rows, not images; use /infer",
                                     code="not_an_image_model")
        t0 = time.perf_counter()
        image = await run_in_threadpool(decode_image, data)
        tensors = await run_in_threadpool(model.preprocess, image)
        t1 = time.perf_counter()
        outs = await lm.infer(tensors)
        t2 = time.perf_counter()
        pred = model.postprocess(outs)
        top: list[dict[str, Any]] | None = None
        if pred.scores is not None:
            scores = pred.scores
            k = min(top_k, scores.size)
            idx = np.argsort(-scores, kind="stable")[:k]
            labels = model.labels
            top = [{"label": labels[i] if i < len(labels) else str(int(i)), "score": round(float(scores[i]), 6),
                    "index": int(i)} for i in idx]
        t3 = time.perf_counter()
        svc.metrics.inferences.inc(1, model=lm.name)
        return {"model": {"name": lm.name, "version": lm.version}, "top_k": top, "values": pred.values,
                "latency_ms": {"preprocess": round((t1 - t0) * 1000, 3), "inference": round((t2 - t1) * 1000, 3),
                               "postprocess": round((t3 - t2) * 1000, 3), "total": round((t3 - t0) * 1000, 3)},
                "backend": model.backend_name, "path": "cloud"}

    @app.post("/v2/models/{name}/classify", tags=tag, response_model=S.ClassifyResponse,
              responses={**ERRORS, 413: {"model": S.ErrorBody}, 415: {"model": S.ErrorBody}},
              openapi_extra=classify_body)
    async def classify(request: Request, name: ModelName, _: Anyone,
                       top_k: Annotated[int, Query(ge=1, le=1000)] = 5) -> dict[str, Any]:
        """Classify an image (raw `image/*` body, or multipart field `image`): the top-k labels,
        computed by the same runtime, preprocessing and bundle as on the device."""
        return await _classify(request, name, None, top_k)

    @app.post("/v2/models/{name}/versions/{version}/classify", tags=tag, response_model=S.ClassifyResponse,
              responses={**ERRORS, 413: {"model": S.ErrorBody}, 415: {"model": S.ErrorBody}},
              openapi_extra=classify_body)
    async def classify_version(request: Request, name: ModelName, version: Version, _: Anyone,
                               top_k: Annotated[int, Query(ge=1, le=1000)] = 5) -> dict[str, Any]:
        return await _classify(request, name, version, top_k)


async def _run_items(lm: LoadedModel, tensors: list[np.ndarray], batch: int) -> list[np.ndarray]:
    """Send a request's batch to the batcher: whole when the model's batch is dynamic, else item by
    item (a fixed-batch-1 model), and join the answers back along the batch axis."""
    first = lm.model.manifest.inputs[0].shape
    fixed = first[0] if first else -1
    if fixed == -1 or fixed == batch:
        return await lm.infer(tensors)
    if fixed != 1:
        raise BadRequestError(f"{lm.name} takes a batch of exactly {fixed}, got {batch}", code="bad_shape")
    parts = await asyncio.gather(*(lm.infer([t[i:i + 1] for t in tensors]) for i in range(batch)))
    return [np.concatenate([p[j] for p in parts], axis=0) for j in range(len(parts[0]))]


def _ops_routes(app: FastAPI) -> None:
    @app.get("/metrics", tags=["ops"], response_class=Response)
    def metrics(request: Request) -> Response:
        """Prometheus text format (this replica's counters)."""
        return Response(_svc(request).metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/", tags=["dashboard"], response_class=Response, include_in_schema=False)
    def index() -> Response:
        html = files("cloud_sync.service").joinpath("static/index.html").read_text(encoding="utf-8")
        return Response(html, media_type="text/html; charset=utf-8")

    @app.get("/api/v1/dashboard", tags=["dashboard"], responses=ERRORS)
    def dashboard(request: Request, _: Admin,
                  hours: Annotated[float, Query(gt=0, le=24 * 31)] = 24) -> dict[str, Any]:
        """Everything the dashboard page draws: fleet, per-device latency/fps series, prediction
        counts per label over time, versions per channel."""
        svc = _svc(request)
        return dashboard_data(svc.engine, svc.devices.list(), svc.registry, hours=hours)

