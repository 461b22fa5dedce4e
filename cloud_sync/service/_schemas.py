"""Request and response bodies of the JSON API (they make the OpenAPI schema at /docs)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ._devices import DEVICE_ID_PATTERN

__all__ = [
    "ChannelSet",
    "ClassifyResponse",
    "DetectionOut",
    "DeviceCreate",
    "DeviceCreated",
    "DeviceOut",
    "ErrorBody",
    "FleetDevice",
    "Heartbeat",
    "InferRequestBody",
    "InferResponseBody",
    "ModelDetail",
    "ModelSummary",
    "UpdateInfo",
    "V2ErrorBody",
    "VersionOut",
]

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
CHANNEL = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class V2ErrorBody(BaseModel):
    """The Open Inference Protocol's error (every ``/v2`` route): ``error`` is the message; the
    machine-readable code is in the ``Edge-Error-Code`` header."""

    error: str


class VersionOut(BaseModel):
    name: str
    version: int
    sha256: str
    size: int
    created_at: str | None
    signed_by: str | None
    task: str | None
    format: str | None
    expires: str | None
    url: str


class ModelSummary(BaseModel):
    name: str
    latest: int
    versions: int
    channels: dict[str, int]


class ModelDetail(BaseModel):
    name: str
    versions: list[VersionOut]
    channels: dict[str, int]


class ChannelSet(_In):
    version: int = Field(ge=1, le=2**31 - 1)


class DeviceCreate(_In):
    id: str | None = Field(default=None, pattern=DEVICE_ID_PATTERN,
                           description="also the MQTT topic segment edge/<id>/...; generated when omitted")
    name: str | None = Field(default=None, max_length=128)
    model: str | None = Field(default=None, max_length=128, pattern=NAME)
    channel: str = Field(default="stable", pattern=CHANNEL)


class DeviceOut(BaseModel):
    id: str
    name: str
    model: str | None
    channel: str
    created_at: str | None
    revoked: bool
    revoked_at: str | None
    last_seen: str | None
    model_version: int | None
    outbox_depth: int | None
    latency_ms: float | None
    fps: float | None


class FleetDevice(DeviceOut):
    """A device as the fleet view shows it: registration merged with its latest telemetry."""

    channel: str | None  # type: ignore[assignment]
    registered: bool = Field(description="false for a device that sent telemetry but was never registered")
    status: str | None = Field(description="online/offline from its MQTT status (last will)")


class DeviceCreated(DeviceOut):
    token: str = Field(description="shown once; the service keeps only its hash")


class Heartbeat(_In):
    model_version: int | None = Field(default=None, ge=0, le=2**31 - 1)
    outbox_depth: int | None = Field(default=None, ge=0, le=2**31 - 1)
    latency_ms: float | None = Field(default=None, ge=0, le=1e9)
    fps: float | None = Field(default=None, ge=0, le=1e6)


class UpdateInfo(BaseModel):
    model: str | None
    channel: str
    update_available: bool
    version: int | None = None
    sha256: str | None = None
    size: int | None = None
    url: str | None = None
    expires: str | None = None


class TensorIn(BaseModel):
    name: str
    shape: list[int]
    datatype: Literal["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                      "FP16", "FP32", "FP64"]
    data: list[Any] | None = None
    parameters: dict[str, Any] | None = None


class OutputRequest(BaseModel):
    name: str


class InferRequestBody(BaseModel):
    id: str | None = None
    inputs: list[TensorIn]
    outputs: list[OutputRequest] | None = None
    parameters: dict[str, Any] | None = None


class TensorOut(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    #: absent when the output went in binary (``parameters.binary_data_size``)
    data: list[Any] | None = None
    parameters: dict[str, Any] | None = None


class InferResponseBody(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[TensorOut]


class LabelScore(BaseModel):
    label: str
    score: float
    index: int


class ModelRef(BaseModel):
    name: str
    version: int


class DetectionOut(BaseModel):
    label: str
    score: float
    box: list[float] = Field(min_length=4, max_length=4, description="[x1, y1, x2, y2] in the image's pixels")


class ClassifyResponse(BaseModel):
    model: ModelRef
    top_k: list[LabelScore] | None
    values: list[float] | None = None
    #: a detector's objects, best first (null for other models)
    detections: list[DetectionOut] | None = None
    latency_ms: dict[str, float]
    backend: str
    path: Literal["cloud"] = "cloud"
