"""A TFLite model that already exists: wrapped as the float variant, quantized by ai-edge-quantizer."""

from __future__ import annotations

from typing import ClassVar

from .onnx import OnnxSource

__all__ = ["TFLiteSource"]


class TFLiteSource(OnnxSource):
    framework: ClassVar[str] = "tflite"
    targets: ClassVar[tuple[str, ...]] = ("tflite",)
    described_as: ClassVar[str] = "a .tflite model"
    suffix: ClassVar[str] = ".tflite"
