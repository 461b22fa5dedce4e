"""Conversion options: one pydantic model, validated without I/O (files are checked when used)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from device_profiles.checked import Invalid
from edge_runtime import Preprocess

__all__ = ["QUANT_MODES", "ConvertOptions", "QuantMode", "parse_preprocess", "parse_quantize", "parse_shape"]

QuantMode = Literal["none", "fp16", "dynamic", "int8"]
QUANT_MODES: tuple[QuantMode, ...] = ("none", "fp16", "dynamic", "int8")
Target = Literal["onnx", "tflite"]


def _float_only() -> list[QuantMode]:
    return ["none"]


class ConvertOptions(BaseModel):
    """Everything `edge convert` accepts, for :func:`converters.convert`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    to: Target
    quantize: list[QuantMode] = Field(default_factory=_float_only)
    calibration: list[Path] = Field(default_factory=list, description="image dirs/files or .npy tensors")
    eval: Path | None = Field(default=None, description="labelled dir (class subfolders) or .npz with x, y")
    profile: str | None = None
    input_shape: list[int] | None = None
    labels: Path | None = None
    preprocess: Preprocess | None = None
    weights: Path | None = Field(default=None, description="PyTorch state_dict for a module:factory source")
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    version: int = Field(default=1, ge=1)
    samples: int = Field(default=3, ge=0, le=100, description="sample inputs put into each bundle, taken from "
                         "the eval data (else calibration): a device runs them as its health check")
    expires: str | None = Field(default="365d", description="when devices start refusing the bundles: a duration "
                                "(365d, 12w, 48h) or an ISO 8601 date/time; None: never (a device with the "
                                "default update policy then refuses them)")
    max_drop: float = Field(default=1.0, ge=0.0, description="accuracy drop allowed, in points")
    prefer: Literal["latency", "size"] = "latency"
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    max_calibration: int = Field(default=300, ge=1)
    per_channel: bool | None = Field(default=None, description="None: on when the model has convolutions")
    reduce_range: bool | None = Field(default=None, description="None: on for x86 CPUs without VNNI")
    io_dtype: Literal["int8", "uint8"] = Field(default="int8", description="TFLite int8 model input/output type")
    precision: Literal["auto", "float", "double"] = Field(
        default="auto", description="scikit-learn: float32 or float64 ONNX inputs; auto checks on data")
    opset: int = Field(default=17, ge=11)
    trust_pickle: bool = Field(default=False, description="allow unpickling a .joblib/.pkl model: a pickle runs "
                               "arbitrary code when loaded, so only for files the user made or trusts")
    backend: str | None = None
    threads: int | None = Field(default=None, ge=1)
    latency_runs: int = Field(default=30, ge=1)
    progress: bool = False
    overwrite: bool = False

    @field_validator("quantize")
    @classmethod
    def _unique(cls, v: list[QuantMode]) -> list[QuantMode]:
        if not v:
            raise ValueError("quantize needs at least one mode (none, fp16, dynamic, int8)")
        # Every report compares against the float model, so it is always made, and made first.
        out: list[QuantMode] = ["none"]
        for m in v:
            if m not in out:
                out.append(m)
        return out

    @field_validator("input_shape")
    @classmethod
    def _shape(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or any(d <= 0 for d in v)):
            raise ValueError(f"input_shape must be positive integers such as 1,3,224,224, got {v}")
        return v


def parse_quantize(value: str) -> list[QuantMode]:
    """``"all"``, one mode, or a comma list such as ``"fp16,int8"``."""
    if value.strip() == "all":
        return list(QUANT_MODES)
    modes: list[QuantMode] = []
    for part in value.split(","):
        p = part.strip()
        if p not in QUANT_MODES:
            raise ValueError(f"unknown quantization {p!r}; use none, fp16, dynamic, int8 or all")
        modes.append(p)
    return modes


def parse_shape(value: str) -> list[int]:
    """``"1,3,224,224"`` or ``"1x3x224x224"``."""
    try:
        dims = [int(p) for p in value.replace("x", ",").split(",") if p.strip()]
    except ValueError:
        raise ValueError(f"input shape {value!r} must be integers such as 1,3,224,224") from None
    if not dims or any(d <= 0 for d in dims):
        raise ValueError(f"input shape {value!r} must be positive integers such as 1,3,224,224")
    return dims


_PRE_KEYS = {"size", "resize", "interp", "interpolation", "color", "mean", "std", "scale"}


def parse_preprocess(value: str) -> Preprocess:
    """``none`` or ``key=value`` pairs, e.g. ``size=224x224,mean=127,std=128,resize=squash``.

    Per-channel values are separated by ``/``: ``mean=123.7/116.3/103.5``.
    """
    text = value.strip()
    if text in ("none", "tabular"):
        return Preprocess(kind="none")
    fields: dict[str, object] = {"kind": "image"}
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, val = part.partition("=")
        key, val = key.strip(), val.strip()
        if not sep or key not in _PRE_KEYS:
            raise ValueError(f"preprocess item {part!r} is not key=value with key one of {sorted(_PRE_KEYS)}")
        if key == "size":
            w, _, h = val.lower().partition("x")
            fields["size"] = (int(w), int(h or w))
        elif key == "resize":
            fields["resize_mode"] = val
        elif key in ("interp", "interpolation"):
            fields["interpolation"] = val
        elif key in ("mean", "std"):
            fields[key] = [float(x) for x in val.split("/")]
        elif key == "scale":
            fields["scale"] = float(val)
        else:
            fields[key] = val
    try:
        return Preprocess.from_dict(fields)
    except Invalid as exc:
        first = exc.errors()[0]
        where = ".".join(str(k) for k in first["loc"])
        raise ValueError(f"preprocess {where + ': ' if where else ''}{first['msg'].removeprefix('Value error, ')}"
                         ) from exc
