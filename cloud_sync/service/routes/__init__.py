"""The service's HTTP routes, one ``APIRouter`` per area; ``create_app`` includes them in this order."""

from __future__ import annotations

from fastapi import APIRouter

from .devices import router as devices_router
from .inference import router as inference_router
from .objects import router as objects_router
from .ops import router as ops_router
from .predictions import router as predictions_router
from .registry import router as registry_router
from .samples import router as samples_router

__all__ = ["ROUTERS"]

ROUTERS: tuple[APIRouter, ...] = (registry_router, devices_router, inference_router, ops_router, samples_router,
                                  objects_router, predictions_router)
