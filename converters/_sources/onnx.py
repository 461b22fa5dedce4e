"""An ONNX model that already exists: wrapped as the float variant, then quantized like any other."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edge_runtime import ModelError, Preprocess, describe_model

from .._errors import SourceLoadError
from ._base import Source

__all__ = ["OnnxSource"]


class OnnxSource(Source):
    framework: ClassVar[str] = "onnx"
    targets: ClassVar[tuple[str, ...]] = ("onnx",)
    described_as: ClassVar[str] = "an .onnx model"
    suffix: ClassVar[str] = ".onnx"

    shape: list[int]

    @classmethod
    def claims(cls, location: str) -> bool:
        return location.lower().endswith(cls.suffix)

    def load(self) -> None:
        path = Path(self.location)
        if not path.is_file():
            raise SourceLoadError(f"{path}: no such file")
        try:
            desc = describe_model(path)
        except ModelError as exc:
            raise SourceLoadError(str(exc)) from exc
        self.shape = desc.inputs[0].shape
        out = desc.outputs[0].shape
        if len(out) == 2 and out[1] == 1:
            self.task = "regression"

    def export(self, target: str, out: Path, *, data: Sequence[np.ndarray] = ()) -> Path:
        self.check_target(target)
        shutil.copyfile(self.location, out)
        return out

    def default_preprocess(self, target: str) -> Preprocess | None:
        if len(self.shape) == 4 and (self.shape[1] in (1, 3) or self.shape[3] in (1, 3)):
            return Preprocess(kind="image")
        return Preprocess(kind="none")

    def info(self) -> dict[str, Any]:
        return {"framework": self.framework, "location": Path(self.location).name}
