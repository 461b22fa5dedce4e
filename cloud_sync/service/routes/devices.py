"""Devices: the admin registers (the token is shown once), lists and revokes them; a device reads
its own record, checks for updates and reports heartbeats with its token."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam

from .. import _schemas as S
from .._dashboard import fleet
from .._deps import Admin, Device, get_service
from ._common import ERRORS

__all__ = ["router"]

router = APIRouter()
TAG: list[str | Enum] = ["devices"]


@router.post("/api/v1/devices", status_code=201, tags=TAG, response_model=S.DeviceCreated,
             responses={**ERRORS, 409: {"model": S.ErrorBody}})
def register_device(request: Request, body: S.DeviceCreate, _: Admin) -> dict[str, Any]:
    """Register a device. The answer holds its token: the only time it is ever shown."""
    devices = get_service(request).devices
    record, token = devices.register(device_id=body.id, name=body.name, model=body.model, channel=body.channel)
    return {**record, "token": token}


@router.get("/api/v1/devices", tags=TAG, response_model=list[S.FleetDevice], responses=ERRORS)
def list_devices(request: Request, _: Admin) -> list[dict[str, Any]]:
    """Every device with last seen, model version, channel, outbox depth and latency (from its
    heartbeats and its MQTT telemetry, whichever is newer)."""
    svc = get_service(request)
    return fleet(svc.engine, svc.devices.list())


@router.get("/api/v1/devices/{device_id}", tags=TAG, response_model=S.DeviceOut, responses=ERRORS)
def get_device(request: Request, device_id: Annotated[str, PathParam(max_length=64)], _: Admin) -> dict[str, Any]:
    return get_service(request).devices.get(device_id)


@router.delete("/api/v1/devices/{device_id}", tags=TAG, response_model=S.DeviceOut, responses=ERRORS)
def revoke_device(request: Request, device_id: Annotated[str, PathParam(max_length=64)],
                  _: Admin) -> dict[str, Any]:
    """Revoke a device: its token stops working at once, on every replica."""
    return get_service(request).devices.revoke(device_id)


@router.get("/api/v1/device", tags=TAG, response_model=S.DeviceOut, responses=ERRORS)
def whoami(request: Request, me: Device) -> dict[str, Any]:
    """The calling device's own record."""
    assert me.device_id is not None
    return get_service(request).devices.get(me.device_id)


@router.get("/api/v1/device/update", tags=TAG, response_model=S.UpdateInfo, responses=ERRORS)
def check_update(request: Request, me: Device,
                 current_version: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None) -> dict[str, Any]:
    """What the device's channel serves for its model, and whether that is newer than
    `current_version`."""
    svc = get_service(request)
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


@router.post("/api/v1/device/heartbeat", tags=TAG, response_model=S.DeviceOut, responses=ERRORS)
def heartbeat(request: Request, body: S.Heartbeat, me: Device) -> dict[str, Any]:
    """A device reports itself over HTTP (when it has no MQTT)."""
    assert me.device_id is not None
    return get_service(request).devices.heartbeat(me.device_id, body.model_dump())
