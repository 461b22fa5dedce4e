"""What the dashboard draws, read from the registry, the device table and the telemetry tables."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from ._registry import Registry

__all__ = ["dashboard_data"]


def dashboard_data(engine: Engine, devices: list[dict[str, Any]], registry: Registry, *,
                   hours: float) -> dict[str, Any]:
    models = registry.list_models()
    return {"devices": devices, "models": models, "series": {}, "labels": {}}
