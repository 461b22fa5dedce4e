"""Quantizers, one module per target format, chosen through an explicit registry."""

from __future__ import annotations

from ._base import NotApplicable, Quantizer, QuantResult
from .onnx import OnnxQuantizer
from .tflite import TFLiteQuantizer

__all__ = ["QUANTIZERS", "NotApplicable", "QuantResult", "Quantizer"]

QUANTIZERS: dict[str, Quantizer] = {
    OnnxQuantizer.target: OnnxQuantizer(),
    TFLiteQuantizer.target: TFLiteQuantizer(),
}
