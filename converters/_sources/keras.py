"""Keras (``.keras``/``.h5``) and TensorFlow SavedModel to TFLite (TFLiteConverter) and ONNX (tf2onnx).

TFLite quantization uses TFLiteConverter itself (fp16, dynamic range, full int8 with a
representative dataset and int8 or uint8 model I/O), since it sees the whole TF graph.
tf2onnx's ``from_keras`` does not understand Keras 3 models, so the model is traced through a
``tf.function`` with a fixed input signature and converted with ``from_function``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edge_runtime import Preprocess

from .._deps import quiet, require
from .._errors import CalibrationError, QuantizationError, ShapeError, SourceLoadError, UnsupportedModelError
from .._ort import first_line
from ._base import Source, dist_version

__all__ = ["KerasSource"]

log = logging.getLogger(__name__)


def _tf() -> Any:
    # TensorFlow's C++ logging floods stderr with notices that are not errors.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return require("tensorflow", "converting Keras/TensorFlow models")


class KerasSource(Source):
    framework: ClassVar[str] = "keras"
    targets: ClassVar[tuple[str, ...]] = ("tflite", "onnx")
    described_as: ClassVar[str] = "a Keras model (.keras, .h5) or a TensorFlow SavedModel directory"

    model: Any = None
    saved_model: bool = False
    input_shape: list[int]
    input_dtype: str = "float32"

    @classmethod
    def claims(cls, location: str) -> bool:
        p = Path(location)
        return location.lower().endswith((".keras", ".h5")) or (p.is_dir() and (p / "saved_model.pb").is_file())

    def load(self) -> None:
        tf = _tf()
        path = Path(self.location)
        if not path.exists():
            raise SourceLoadError(f"{path}: no such file or directory")
        self.saved_model = path.is_dir()
        try:
            if self.saved_model:
                self.model = tf.saved_model.load(str(path))
                fn = self._signature()
                spec = list(fn.structured_input_signature[1].values())
                if len(spec) != 1:
                    raise UnsupportedModelError(f"{path}: the serving signature takes {len(spec)} inputs; "
                                                "the runtime feeds one")
                shape, dtype = list(spec[0].shape), spec[0].dtype.name
            else:
                keras = require("keras", "loading Keras models")
                # safe_mode (the default) refuses to deserialize lambda layers' pickled code.
                self.model = keras.models.load_model(str(path), compile=False)
                if len(self.model.inputs) != 1:
                    raise UnsupportedModelError(f"{path}: the model has {len(self.model.inputs)} inputs; "
                                                "the runtime feeds one")
                shape, dtype = list(self.model.inputs[0].shape), str(self.model.inputs[0].dtype)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise SourceLoadError(f"{path}: cannot load the Keras/TensorFlow model ({first_line(exc)}); "
                                  "save it with model.save('model.keras') or model.export(DIR)") from exc
        given = self.options.input_shape
        if given is not None:
            if len(given) != len(shape) or any(s is not None and s != g for s, g in zip(shape[1:], given[1:],
                                                                                       strict=False)):
                raise ShapeError(f"{path}: the model takes inputs shaped {_fmt(shape)}, not {given}; "
                                 "drop --input-shape or give the model's own shape")
            shape = given
        if any(d is None for d in shape[1:]):
            raise ShapeError(f"{path}: the input shape {_fmt(shape)} has unknown dimensions; give them with "
                             "--input-shape, e.g. --input-shape 1,224,224,3")
        self.input_shape = [1, *[int(d) for d in shape[1:]]]
        self.input_dtype = dtype.replace("tf.", "")
        out = self._call(np.zeros(self.input_shape, dtype=self.input_dtype))
        if out.ndim == 2 and out.shape[1] == 1:
            self.task = "regression"

    def _signature(self) -> Any:
        sigs = getattr(self.model, "signatures", {})
        if "serving_default" not in sigs:
            raise UnsupportedModelError(f"{self.location}: the SavedModel has no serving_default signature")
        return sigs["serving_default"]

    def _call(self, x: np.ndarray) -> np.ndarray:
        tf = _tf()
        if self.saved_model:
            fn = self._signature()
            name = next(iter(fn.structured_input_signature[1]))
            res = fn(**{name: tf.constant(x)})
            return np.asarray(next(iter(res.values())))
        return np.asarray(self.model(x, training=False))

    def default_preprocess(self, target: str) -> Preprocess | None:
        if len(self.input_shape) == 4 and self.input_shape[3] in (1, 3):
            return Preprocess(kind="image")
        return Preprocess(kind="none")

    def layout(self, target: str) -> str | None:
        return "NHWC" if len(self.input_shape) == 4 else ("NC" if len(self.input_shape) == 2 else None)

    def info(self) -> dict[str, Any]:
        d: dict[str, Any] = {"framework": "tensorflow" if self.saved_model else "keras",
                             "version": dist_version("tensorflow-cpu") if dist_version("tensorflow-cpu") != "unknown"
                             else dist_version("tensorflow"), "location": Path(self.location).name}
        if not self.saved_model:
            d["keras"] = dist_version("keras")
        return d

    # -- export ------------------------------------------------------------------------------
    def _converter(self) -> Any:
        tf = _tf()
        if self.saved_model:
            return tf.lite.TFLiteConverter.from_saved_model(self.location)
        return tf.lite.TFLiteConverter.from_keras_model(self.model)

    def export(self, target: str, out: Path, *, data: Sequence[np.ndarray] = ()) -> Path:
        self.check_target(target)
        if target == "tflite":
            return self._run_converter(self._converter(), out, "float")
        return self._export_onnx(out)

    def _run_converter(self, conv: Any, out: Path, what: str) -> Path:
        try:
            with quiet("TFLiteConverter"):
                blob = conv.convert()
        except (RuntimeError, ValueError, TypeError) as exc:
            err = QuantizationError if what != "float" else UnsupportedModelError
            raise err(f"TFLiteConverter ({what}) failed: {_converter_message(exc)}") from exc
        out.write_bytes(blob)
        return out

    def native_quantize(self, target: str, mode: str, calibration: Sequence[np.ndarray], out: Path) -> Path | None:
        if target != "tflite":
            return None
        tf = _tf()
        conv = self._converter()
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        if mode == "fp16":
            conv.target_spec.supported_types = [tf.float16]
        elif mode == "int8":
            if not calibration:
                raise CalibrationError("int8 quantization needs calibration data: pass --calibration DIR_OR_NPY")
            samples = [np.asarray(c, dtype=np.float32) for c in calibration]

            def representative() -> Iterator[list[np.ndarray]]:
                for s in samples:
                    yield [s]

            conv.representative_dataset = representative
            # Full integer: a model that would silently keep float ops fails here instead.
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            io = tf.uint8 if self.options.io_dtype == "uint8" else tf.int8
            conv.inference_input_type = io
            conv.inference_output_type = io
        elif mode != "dynamic":
            return None
        return self._run_converter(conv, out, mode)

    def _export_onnx(self, out: Path) -> Path:
        tf = _tf()
        tf2onnx = require("tf2onnx", "converting Keras/TensorFlow models to ONNX")
        spec = (tf.TensorSpec([None, *self.input_shape[1:]], tf.as_dtype(self.input_dtype), name="input"),)
        if self.saved_model:
            sig = self._signature()
            name = next(iter(sig.structured_input_signature[1]))

            def call(x: Any) -> Any:
                return next(iter(sig(**{name: x}).values()))
        else:
            model = self.model

            def call(x: Any) -> Any:
                return model(x, training=False)

        fn = tf.function(call, input_signature=spec)
        try:
            with quiet("tf2onnx"):
                tf2onnx.convert.from_function(fn, input_signature=spec, opset=self.options.opset,
                                              output_path=str(out))
        except (RuntimeError, ValueError, TypeError, KeyError, NotImplementedError) as exc:
            raise UnsupportedModelError(f"tf2onnx cannot convert {self.location}: {first_line(exc)}; "
                                        "an op without an ONNX mapping is the usual cause") from exc
        return out


def _fmt(shape: Sequence[Any]) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _converter_message(exc: BaseException) -> str:
    text = str(exc)
    for line in text.splitlines():
        if "error:" in line and ("op" in line or "quantiz" in line):
            return line.strip()[:300] + "; that op has no kernel in this mode: try dynamic or fp16"
    return first_line(exc)
