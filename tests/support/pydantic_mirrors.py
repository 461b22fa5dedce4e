"""The pydantic models the device's manifest and profile types were until 2026-12 (verbatim, from
edge_runtime/_manifest.py and device_profiles/_model.py at 104fd18): the reference the stdlib
records (device_profiles.checked) are checked against in tests/runtime/test_records_differential.py
and tests/device_profiles/test_profiles_differential.py. Only tests import pydantic for these types.
"""


from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from edge_runtime._detection import BOX_DEFAULTS, BoxFormat, BoxUnits, Head, head_problem, shapes_text
from edge_runtime._manifest import MANIFEST_SCHEMA, MAX_INPUT_SIDE, MAX_VERSION, _is_plain_relative

__all__ = ["DetectRules", "FileEntry", "Manifest", "Postprocess", "Preprocess", "Profile", "Quantization", "TensorSpec"]

# -- edge_runtime/_manifest.py ----------------------------------------------------------------------------

Layout = Literal["NHWC", "NCHW", "NC", "other"]
Task = Literal["classification", "detection", "regression", "tabular"]
ModelFormat = Literal["tflite", "onnx"]
ResizeMode = Literal["squash", "letterbox", "center-crop"]
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


# -- device_profiles/_model.py ----------------------------------------------------------------------------

Arch = Literal["aarch64", "armv7l", "x86_64"]
BackendName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$")]
ProfileQuantization = Literal["int8", "fp16", "dynamic", "none"]
CameraKind = Literal["picamera2", "usb", "android", "none"]
_NAME_RE = re.compile(r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$")


class DetectRules(BaseModel):
    """How detection recognises the machine a profile is for (the ``[detect]`` table).

    A profile is a candidate only when the machine's architecture equals the profile's ``arch``
    and its ``platform.system()`` is in ``systems``. Among candidates, one recognised by the
    Android markers or by its board model string wins (the longest matching model string, i.e.
    the most specific one); otherwise the ``fallback`` profile of that architecture is used.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    systems: tuple[str, ...] = Field(default=("Linux",), min_length=1)
    """``platform.system()`` values this profile runs on (compared case-insensitively)."""
    models: tuple[str, ...] = ()
    """Substrings of the board model (device-tree ``model``, cpuinfo ``Model``) that identify it."""
    android: bool | None = None
    """True: only on Android (and Android markers select it); False: never on Android; None: either."""
    fallback: bool = False
    """Used for its architecture when no more specific profile matches."""

    @field_validator("models")
    @classmethod
    def _models_not_blank(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # An empty pattern would be a substring of every model and silently match any board.
        if any(not m.strip() for m in value):
            raise ValueError("model strings must not be empty")
        return value

    @field_validator("fallback")
    @classmethod
    def _fallback_is_generic(cls, value: bool, info: ValidationInfo) -> bool:
        # A fallback catches whatever nothing else matched; giving it board models would make
        # it both specific and generic, and detection could no longer explain its choice.
        if value and info.data.get("models"):
            raise ValueError("a fallback profile matches by architecture only; remove its models")
        return value


class Profile(BaseModel):
    """One kind of device: what it is and how the runtime should run models on it.

    Immutable: shipped profiles are cached and shared, so nobody may change them in place.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME_RE.pattern)
    """Identifier, equal to the file name without ``.toml`` (e.g. ``rpi-4b``)."""
    title: str = Field(min_length=1)
    """Human name, e.g. ``Raspberry Pi 4 Model B``."""
    description: str = ""
    arch: Arch
    """Python's view of the machine: ``aarch64``, ``armv7l`` (32-bit ARM userland) or ``x86_64``."""
    cpu: str = Field(min_length=1)
    """SoC and cores, e.g. ``Broadcom BCM2711, 4x Arm Cortex-A72``."""
    cores: int = Field(ge=1, le=1024)
    cpu_mhz: int | None = Field(default=None, ge=1)
    """Nominal clock of the fastest cores."""
    memory_mb: int = Field(ge=64)
    """Typical RAM of the device (detection reports the real MemTotal)."""
    memory_options_mb: tuple[int, ...] = ()
    """RAM sizes the device is sold with, if more than one."""
    os: str = Field(min_length=1)
    """Recommended operating system."""
    system_python: str | None = Field(default=None, pattern=r"^3\.\d+$")
    """Python version the OS ships (None when it varies)."""
    notes: tuple[str, ...] = ()
    """OS, Python and installation notes, one sentence each."""
    backends: tuple[BackendName, ...] = Field(min_length=1)
    """Backends in order of preference; the runtime uses the first installed one that runs the format."""
    threads: int = Field(ge=1)
    """Inference threads to ask the backend for."""
    quantization: ProfileQuantization
    """Quantization to build models with for this device."""
    camera: CameraKind
    """The camera stack the device normally has."""
    latency_budget_ms: float = Field(gt=0)
    """Target end-to-end latency per frame (preprocess + inference + postprocess)."""
    memory_ceiling_mb: int = Field(ge=16)
    """Most memory the model and runtime should use, so the OS and camera stack keep the rest."""
    detect: DetectRules | None = None
    """How detection recognises the device; None: used only when named."""

    @field_validator("memory_options_mb")
    @classmethod
    def _options_include_typical(cls, value: tuple[int, ...], info: ValidationInfo) -> tuple[int, ...]:
        typical = info.data.get("memory_mb")
        if value and typical is not None and typical not in value:
            raise ValueError(f"memory_mb ({typical}) must be one of the memory options {list(value)}")
        if any(v < 64 for v in value):
            raise ValueError("memory options are in MB and must be at least 64")
        return value

    @field_validator("backends")
    @classmethod
    def _backends_unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"backends must not repeat: {list(value)}")
        return value

    @field_validator("threads")
    @classmethod
    def _threads_fit_cores(cls, value: int, info: ValidationInfo) -> int:
        # More threads than cores only adds contention on these small CPUs.
        cores = info.data.get("cores")
        if cores is not None and value > cores:
            raise ValueError(f"threads ({value}) must not exceed cores ({cores})")
        return value

    @field_validator("memory_ceiling_mb")
    @classmethod
    def _ceiling_below_memory(cls, value: int, info: ValidationInfo) -> int:
        # The ceiling must hold on the smallest variant sold, not just the typical one.
        sizes = info.data.get("memory_options_mb") or ()
        typical = info.data.get("memory_mb")
        smallest = min(sizes) if sizes else typical
        if smallest is not None and value >= smallest:
            raise ValueError(
                f"memory_ceiling_mb ({value}) must be below the smallest memory size ({smallest} MB)"
            )
        return value


