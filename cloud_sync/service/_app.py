"""The FastAPI application, assembled: ``create_app(settings)`` builds the ``Service`` (its state),
installs the error handlers and the metrics middleware, and includes one router per area
(``routes/``: registry, devices, inference, ops and dashboard, samples).

All state that matters lives in the database and the object store, so any number of replicas can
run behind a load balancer.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from importlib.resources import files

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from edge_runtime import __version__

from ._deps import Service
from ._handlers import MetricsMiddleware, install_error_handlers
from ._settings import CONFIG_ENV, ServiceSettings
from .routes import ROUTERS
from .routes.ops import DOCS_ASSETS, docs_assets_dir

__all__ = ["Service", "create_app", "create_app_from_env"]


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
        docs_url=None,  # routes/ops.py serves /docs from local assets: FastAPI's default page uses a CDN
    )
    app.state.service = svc
    install_error_handlers(app)
    app.add_middleware(MetricsMiddleware, metrics=svc.metrics)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(files("cloud_sync.service").joinpath("static"))), name="static")
    assets = docs_assets_dir()
    if assets is not None:
        app.mount(DOCS_ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")
    return app


def create_app_from_env() -> FastAPI:
    """The app for ``uvicorn --factory`` (several workers): settings from the TOML file named by
    ``EDGE_CLOUD_CONFIG`` (what ``edge cloud serve`` passes on), overridden by EDGE_CLOUD_* variables."""
    return create_app(ServiceSettings.from_toml(os.environ.get(CONFIG_ENV)))
