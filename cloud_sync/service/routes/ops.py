"""Operations and the dashboard: ``/metrics`` (Prometheus), ``/`` (the dashboard page), the
dashboard's data, and ``/docs`` (Swagger UI from local assets, so it works with no internet)."""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

from .._dashboard import dashboard_data
from .._deps import Admin, get_service
from ._common import ERRORS

__all__ = ["DOCS_ASSETS", "PROMETHEUS_TEXT", "docs_assets_dir", "router"]

router = APIRouter()
#: the classic text exposition format (0.0.4), which generate_latest writes and every scraper reads
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
#: where create_app mounts Swagger UI's files when the swagger-ui-bundle package is installed
DOCS_ASSETS = "/docs-assets"


@router.get("/metrics", tags=["ops"], response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus text format: this replica's metrics, summed over its worker processes when it
    runs several (``edge cloud serve --workers N``), with each worker's ``process_*`` metrics."""
    body, _ = get_service(request).metrics.render()
    return Response(body, media_type=PROMETHEUS_TEXT)


@router.get("/", tags=["dashboard"], response_class=Response, include_in_schema=False)
def index() -> Response:
    html = files("cloud_sync.service").joinpath("static/index.html").read_text(encoding="utf-8")
    return Response(html, media_type="text/html; charset=utf-8")


@router.get("/api/v1/dashboard", tags=["dashboard"], responses=ERRORS)
def dashboard(request: Request, _: Admin,
              hours: Annotated[float, Query(gt=0, le=24 * 31)] = 24) -> dict[str, Any]:
    """Everything the dashboard page draws: fleet, per-device latency/fps series, prediction
    counts per label over time, versions per channel."""
    svc = get_service(request)
    return dashboard_data(svc.engine, svc.devices.list(), svc.registry, hours=hours)


@cache
def docs_assets_dir() -> Path | None:
    """Swagger UI's files from the ``swagger-ui-bundle-v2`` package, or None when it is missing."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    return Path(swagger_ui_path)


@router.get("/docs", include_in_schema=False)
async def docs(request: Request) -> HTMLResponse:
    app = request.app
    if docs_assets_dir() is not None:
        js, css = f"{DOCS_ASSETS}/swagger-ui-bundle.js", f"{DOCS_ASSETS}/swagger-ui.css"
        icon = f"{DOCS_ASSETS}/favicon-32x32.png"
    else:  # not installed: fall back to FastAPI's CDN defaults rather than no page at all
        js = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"
        css = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"
        icon = "https://fastapi.tiangolo.com/img/favicon.png"
    return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - API",
                               swagger_js_url=js, swagger_css_url=css, swagger_favicon_url=icon)
