"""The bundle manifest: the one contract every part of the product shares (see DESIGN.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from device_profiles.checked import Check, Checked, Invalid

from ._detection import BOX_DEFAULTS, BoxFormat, BoxUnits, Head, head_problem, shapes_text

__all__ = [
    "MANIFEST_SCHEMA",
    "MAX_INPUT_SIDE",
    "MAX_VERSION",
    "FileEntry",
    "Invalid",
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

# The manifest types are checked records (device_profiles.checked: frozen dataclasses validated on
# construction with the standard library only), not pydantic models: a device reads a manifest on
# every start, and pydantic cost a one-image run ~85 ms of CPU and ~11 MiB. They accept what JSON
# gives natively (no "1" or 1.0 for an int, no true for a number, no NaN or infinity);
# tests/runtime/test_records_differential.py proves them equal to the pydantic models they replaced.


@dataclass(frozen=True, init=False, kw_only=True)
class Quantization(Checked):
    """Affine quantization of one tensor: real = scale * (q - zero_point)."""

    scale: float
    zero_point: int

    @classmethod
    def _check_scale(cls, v: float, valid: dict[str, Any]) -> float:
        if not v > 0:
            raise ValueError("quantization scale must be > 0")
        return v


@dataclass(frozen=True, init=False, kw_only=True)
class TensorSpec(Checked):
    """One model input or output as the model itself declares it."""

    name: str
    #: -1 marks a dynamic dimension
    shape: list[int]
    #: numpy dtype name, e.g. float32, uint8, int8
    dtype: str
    layout: Layout = "other"
    quantization: Quantization | None = None


@dataclass(frozen=True, init=False, kw_only=True)
class Preprocess(Checked):
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
    pad_value: Annotated[int, Check(ge=0, le=255)] = 0

    def _check(self) -> None:
        if self.std is not None and any(s == 0 for s in self.std):
            raise ValueError("preprocess.std must not contain 0")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if v is not None and len(v) not in (1, 3):
                raise ValueError(f"preprocess.{name} must have 1 or 3 values, got {len(v)}")
        if self.size is not None and (self.size[0] <= 0 or self.size[1] <= 0):
            raise ValueError("preprocess.size must be positive")
        if self.size is not None and max(self.size) > MAX_INPUT_SIDE:
            raise ValueError(f"preprocess.size {self.size[0]}x{self.size[1]} is larger than {MAX_INPUT_SIDE} on a side")


@dataclass(frozen=True, init=False, kw_only=True)
class Postprocess(Checked):
    """How output tensors become results."""

    softmax: bool | Literal["auto"] = "auto"
    top_k: Annotated[int, Check(ge=1)] = 5
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
    score_threshold: Annotated[float, Check(ge=0.0, le=1.0)] = 0.25
    #: a box overlapping a better one of its class with IoU above this is suppressed
    iou_threshold: Annotated[float, Check(gt=0.0, le=1.0)] = 0.45
    max_detections: Annotated[int, Check(ge=1, le=10_000)] = 100

    @classmethod
    def _before(cls, data: dict[str, Any]) -> dict[str, Any]:
        head = data.get("head")
        if isinstance(head, str) and head in BOX_DEFAULTS:
            fmt, units = BOX_DEFAULTS[head]
            if data.get("box_format") is None:
                data["box_format"] = fmt
            if data.get("box_units") is None:
                data["box_units"] = units
        return data


@dataclass(frozen=True, init=False, kw_only=True)
class FileEntry(Checked):
    sha256: Annotated[str, Check(pattern=r"^[0-9a-f]{64}$")]
    size: Annotated[int, Check(ge=0)]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True, init=False, kw_only=True)
class Manifest(Checked):
    """manifest.json of a bundle. ``files`` covers every file of the bundle except the manifest
    and its signature, model included, so a valid signature plus matching hashes proves the whole
    bundle.

    The key ``schema`` is the field ``schema_`` (either name is accepted when making one)."""

    _aliases: ClassVar[dict[str, str]] = {"schema": "schema_"}

    # (in the order of the pydantic model this replaced: errors are reported in field order; a
    # record has no generated __init__, so required fields may follow defaulted ones)
    schema_: int = MANIFEST_SCHEMA
    name: Annotated[str, Check(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    #: 1 to 2**31-1: a signed 32-bit integer everywhere it is stored (device state, registry, URLs)
    version: Annotated[int, Check(ge=1, le=MAX_VERSION)]
    created: str = field(default_factory=_now)
    expires: str | None = None
    task: Task = "classification"
    format: ModelFormat
    model: str
    files: dict[str, FileEntry]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    preprocess: Preprocess = field(default_factory=Preprocess)
    postprocess: Postprocess = field(default_factory=Postprocess)
    source: dict[str, Any] = field(default_factory=dict)
    quantization: str = "none"
    metrics: dict[str, Any] = field(default_factory=dict)
    profiles: list[str] = field(default_factory=list)
    min_runtime: str = "0.1.0"
    #: bundle files holding sample inputs for health checks
    samples: list[str] = field(default_factory=list)

    @classmethod
    def _check_schema(cls, v: int, valid: dict[str, Any]) -> int:
        if v > MANIFEST_SCHEMA:
            raise ValueError(f"manifest schema {v} is newer than this runtime understands ({MANIFEST_SCHEMA})")
        return v

    @classmethod
    def _check_files(cls, v: dict[str, FileEntry], valid: dict[str, Any]) -> dict[str, FileEntry]:
        for name in v:
            if not _is_plain_relative(name):
                raise ValueError(f"file name {name!r} must be a plain relative path inside the bundle")
            if name in ("manifest.json", "manifest.sig"):
                raise ValueError(f"{name} must not be listed in files")
        return v

    def _check(self) -> None:
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

        return (json.dumps(self.to_dict(json=True), indent=2, sort_keys=True) + "\n").encode()


def _is_plain_relative(name: str) -> bool:
    if not name or name.startswith(("/", "\\")) or "\\" in name or "\x00" in name:
        return False
    parts = name.split("/")
    return all(p not in ("", ".", "..") for p in parts)
