"""The bundle manifest: the one contract every part of the product shares (see DESIGN.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ._detection import BOX_DEFAULTS, BoxFormat, BoxUnits, Head, head_problem, shapes_text

__all__ = [
    "MANIFEST_SCHEMA",
    "MAX_INPUT_SIDE",
    "MAX_VERSION",
    "FileEntry",
    "Manifest",
    "Postprocess",
    "Preprocess",
    "Quantization",
    "TensorSpec",
]

MANIFEST_SCHEMA = 1

Layout = Literal["NHWC", "NCHW", "NC", "other"]
Task = Literal["classification", "detection", "regression", "tabular"]
ModelFormat = Literal["tflite", "onnx"]
ResizeMode = Literal["squash", "letterbox", "center-crop"]

#: the highest bundle version: stored as a signed 32-bit integer on devices and in the registry
MAX_VERSION = 2**31 - 1
#: the largest side a preprocessing resize may ask for; a model input bigger than this is no edge model,
#: and an unbounded size lets a signed but hostile manifest exhaust a device's memory in one frame
MAX_INPUT_SIDE = 8192
Interpolation = Literal["nearest", "bilinear", "bicubic", "area"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Quantization(_Strict):
    """Affine quantization of one tensor: real = scale * (q - zero_point)."""

    scale: float
    zero_point: int

    @field_validator("scale")
    @classmethod
    def _positive(cls, v: float) -> float:
        if not v > 0:
            raise ValueError("quantization scale must be > 0")
        return v


class TensorSpec(_Strict):
    """One model input or output as the model itself declares it."""

    name: str
    shape: list[int] = Field(description="-1 marks a dynamic dimension")
    dtype: str = Field(description="numpy dtype name, e.g. float32, uint8, int8")
    layout: Layout = "other"
    quantization: Quantization | None = None


class Preprocess(_Strict):
    """How a raw input becomes the model's input tensor.

    For images: decode to RGB, optionally swap to BGR, resize to ``size`` (width, height) with
    ``resize_mode``, then ``x = (pixel * scale - mean) / std`` per channel, then quantize with the
    input tensor's own parameters when the model input is integer. When the model input is
    quantized and neither ``mean`` nor ``std`` is given, pixels are fed as they are (the usual
    convention of uint8 models such as Coral's).
    """

    kind: Literal["image", "none"] = "image"
    size: tuple[int, int] | None = None
    resize_mode: ResizeMode = "squash"
    interpolation: Interpolation = "bilinear"
    color: Literal["rgb", "bgr"] = "rgb"
    mean: list[float] | None = None
    std: list[float] | None = None
    scale: float = 1.0
    #: gray level (0-255) of the border a letterbox resize adds (Ultralytics models: 114)
    pad_value: int = Field(default=0, ge=0, le=255)

    @model_validator(mode="after")
    def _check(self) -> Preprocess:
        if self.std is not None and any(s == 0 for s in self.std):
            raise ValueError("preprocess.std must not contain 0")
        for field in ("mean", "std"):
            v = getattr(self, field)
            if v is not None and len(v) not in (1, 3):
                raise ValueError(f"preprocess.{field} must have 1 or 3 values, got {len(v)}")
        if self.size is not None and (self.size[0] <= 0 or self.size[1] <= 0):
            raise ValueError("preprocess.size must be positive")
        if self.size is not None and max(self.size) > MAX_INPUT_SIDE:
            raise ValueError(f"preprocess.size {self.size[0]}x{self.size[1]} is larger than {MAX_INPUT_SIDE} on a side")
        return self


class Postprocess(_Strict):
    """How output tensors become results."""

    softmax: bool | Literal["auto"] = "auto"
    top_k: int = Field(default=5, ge=1)
    threshold: float = 0.0
    labels: str | None = "labels.txt"
    #: name of the output holding class scores when a model has several (e.g. sklearn's
    #: label + probabilities); by default an output named like "prob*", else the first one
    output: str | None = None
    # -- detection (task "detection"): see edge_runtime._detection --
    #: layout of the detection outputs: ``ssd`` (post-processed boxes/classes/scores/count),
    #: ``yolo`` (raw Ultralytics head [1, 4+nc, N]) or ``yolov5`` (raw head [1, N, 5+nc])
    head: Head | None = None
    #: how the head gives a box, and whether in 0-1 of the input or in input pixels
    #: (default per head: ssd yxyx normalized, yolo/yolov5 cxcywh pixels)
    box_format: BoxFormat | None = None
    box_units: BoxUnits | None = None
    #: detections scoring below this are dropped
    score_threshold: float = Field(default=0.25, ge=0.0, le=1.0)
    #: a box overlapping a better one of its class with IoU above this is suppressed
    iou_threshold: float = Field(default=0.45, gt=0.0, le=1.0)
    max_detections: int = Field(default=100, ge=1, le=10_000)

    @model_validator(mode="before")
    @classmethod
    def _box_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("head") in BOX_DEFAULTS:
            fmt, units = BOX_DEFAULTS[data["head"]]
            data = {**data}
            if data.get("box_format") is None:
                data["box_format"] = fmt
            if data.get("box_units") is None:
                data["box_units"] = units
        return data


class FileEntry(_Strict):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class Manifest(_Strict):
    """manifest.json of a bundle. ``files`` covers every file of the bundle except the manifest
    and its signature, model included, so a valid signature plus matching hashes proves the whole
    bundle."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: int = Field(default=MANIFEST_SCHEMA, alias="schema")
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    #: 1 to 2**31-1: a signed 32-bit integer everywhere it is stored (device state, registry, URLs)
    version: int = Field(ge=1, le=MAX_VERSION)
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    expires: str | None = None
    task: Task = "classification"
    format: ModelFormat
    model: str
    files: dict[str, FileEntry]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    preprocess: Preprocess = Preprocess()
    postprocess: Postprocess = Postprocess()
    source: dict[str, Any] = Field(default_factory=dict)
    quantization: str = "none"
    metrics: dict[str, Any] = Field(default_factory=dict)
    profiles: list[str] = Field(default_factory=list)
    min_runtime: str = "0.1.0"
    samples: list[str] = Field(
        default_factory=list, description="bundle files holding sample inputs for health checks"
    )

    @field_validator("schema_")
    @classmethod
    def _known_schema(cls, v: int) -> int:
        if v > MANIFEST_SCHEMA:
            raise ValueError(f"manifest schema {v} is newer than this runtime understands ({MANIFEST_SCHEMA})")
        return v

    @field_validator("files")
    @classmethod
    def _safe_names(cls, v: dict[str, FileEntry]) -> dict[str, FileEntry]:
        for name in v:
            if not _is_plain_relative(name):
                raise ValueError(f"file name {name!r} must be a plain relative path inside the bundle")
            if name in ("manifest.json", "manifest.sig"):
                raise ValueError(f"{name} must not be listed in files")
        return v

    @model_validator(mode="after")
    def _model_listed(self) -> Manifest:
        if self.model not in self.files:
            raise ValueError(f"model file {self.model!r} is not listed in files")
        if self.postprocess.labels is not None and self.task in ("classification", "detection") and (
            self.postprocess.labels not in self.files
        ):
            raise ValueError(f"labels file {self.postprocess.labels!r} is not listed in files")
        self._check_detection()
        for s in self.samples:
            if s not in self.files:
                raise ValueError(f"sample file {s!r} is not listed in files")
        if not self.inputs:
            raise ValueError("a model needs at least one input")
        if not self.outputs:
            raise ValueError("a model needs at least one output")
        return self

    def _check_detection(self) -> None:
        head = self.postprocess.head
        if self.task != "detection":
            if head is not None:
                raise ValueError(f"postprocess.head {head!r} is for task detection, not {self.task}")
            return
        if head is None:
            raise ValueError("a detection bundle needs postprocess.head (ssd, yolo or yolov5)")
        shapes = [o.shape for o in self.outputs]
        problem = head_problem(head, shapes)
        if problem is not None:
            raise ValueError(f"outputs {shapes_text([o.name for o in self.outputs], shapes)} "
                             f"do not fit postprocess.head {head!r}: {problem}")

    def to_json_bytes(self) -> bytes:
        import json

        return (json.dumps(self.model_dump(mode="json", by_alias=True), indent=2, sort_keys=True) + "\n").encode()


def _is_plain_relative(name: str) -> bool:
    if not name or name.startswith(("/", "\\")) or "\\" in name or "\x00" in name:
        return False
    parts = name.split("/")
    return all(p not in ("", ".", "..") for p in parts)
