"""TFLite quantization of an existing float .tflite with ai-edge-quantizer (AEQ).

Used for models that are already TFLite (PyTorch through litert-torch, or a user's file); Keras
and SavedModel sources quantize with TFLiteConverter instead (see ``_sources/keras.py``).

int8 ranges are the true minimum and maximum over every calibration input. AEQ's own
``calibrate`` over a list keeps a moving average of the ranges, which lands inside the extremes:
on EfficientNet-Lite0 that clipped the logits of confident images (several classes saturating at
127) and lost the top-1 of ``cat.png``. Calibrating each input on its own and merging the ranges
gives the plain min/max that TFLiteConverter uses.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._deps import quiet, require
from .._errors import CalibrationError, QuantizationError
from .._options import ConvertOptions
from .._ort import first_line
from ._base import NotApplicable, Quantizer, QuantResult

__all__ = ["TFLiteQuantizer"]

log = logging.getLogger(__name__)


class TFLiteQuantizer(Quantizer):
    target: ClassVar[str] = "tflite"

    def quantize(self, float_model: Path, mode: str, calibration: Sequence[np.ndarray], options: ConvertOptions,
                 out: Path) -> QuantResult:
        aeq = require("ai_edge_quantizer", "quantizing TFLite models")
        from ai_edge_quantizer import qtyping, recipe, recipe_manager
        from ai_edge_quantizer.algorithm_manager import AlgorithmName

        sig, in_name, in_dtype = _signature(float_model)
        if in_dtype != np.float32:
            raise NotApplicable(f"the model's input is {np.dtype(in_dtype).name}, so it is already quantized")
        qt = aeq.quantizer.Quantizer(str(float_model))
        settings: dict[str, Any] = {"tool": "ai-edge-quantizer"}
        notes: list[str] = []
        if mode == "fp16":
            rm = recipe_manager.RecipeManager()
            rm.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                      num_bits=16, algorithm_key=AlgorithmName.FLOAT_CASTING)
            qt.load_quantization_recipe(rm.get_quantization_recipe())
            notes.append("fp16 weights, float32 compute (XNNPACK dequantizes them at load)")
            qsvs = None
        elif mode == "dynamic":
            qt.load_quantization_recipe(recipe.dynamic_wi8_afp32())
            notes.append("int8 weights, activations quantized at run time")
            qsvs = None
        elif mode == "int8":
            if options.io_dtype == "uint8":
                raise QuantizationError("ai-edge-quantizer writes int8 model inputs/outputs; uint8 I/O is available "
                                        "for Keras/SavedModel sources (TFLiteConverter); use --io-dtype int8")
            if not calibration:
                raise CalibrationError("int8 quantization needs calibration data: pass --calibration DIR_OR_NPY")
            qt.load_quantization_recipe(recipe.static_wi8_ai8())
            qsvs = _minmax(qt, sig, in_name, calibration, options.progress)
            settings.update({"activations": "int8", "weights": "int8 per-channel", "io": "int8",
                             "calibration": "minmax", "calibration_inputs": len(calibration)})
            notes.append(f"full int8 (int8 I/O), min/max ranges over {len(calibration)} calibration input(s)")
            if options.calibration_method != "minmax":
                notes.append(f"{options.calibration_method} calibration is ONNX-only; TFLite used min/max")
        else:
            raise QuantizationError(f"unknown TFLite quantization mode {mode!r}")
        try:
            with quiet("ai-edge-quantizer"):
                result = qt.quantize(qsvs, enable_progress_bar=False, enable_progress_report=False)
                result.export_model(str(out), overwrite=True)
        except (RuntimeError, ValueError, KeyError, TypeError, NotImplementedError) as exc:
            raise QuantizationError(f"ai-edge-quantizer ({mode}) failed: {first_line(exc)}") from exc
        settings["mode"] = mode
        return QuantResult(out, settings, notes)


def _signature(path: Path) -> tuple[str, str, Any]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    details = it.get_input_details()
    if details and details[0]["dtype"] != np.float32:
        raise NotApplicable(f"the model's input is {np.dtype(details[0]['dtype']).name}, so it is already quantized")
    sigs = it.get_signature_list()
    if not sigs:
        raise QuantizationError(f"{path}: the TFLite model has no signature, which ai-edge-quantizer needs; "
                                "export it with a serving signature")
    name = next(iter(sigs))
    inputs = sigs[name]["inputs"]
    if len(inputs) != 1:
        raise QuantizationError(f"{path}: the model takes {len(inputs)} inputs; the converters handle one")
    runner = it.get_signature_runner(name)
    dtype = runner.get_input_details()[inputs[0]]["dtype"]
    return name, inputs[0], dtype


def _minmax(qt: Any, sig: str, in_name: str, calibration: Sequence[np.ndarray], progress: bool) -> dict[str, Any]:
    merged: dict[str, dict[str, Any]] = {}
    for x in _progress(calibration, progress):
        try:
            with quiet("ai-edge-quantizer"):
                qsv = qt.calibrate({sig: [{in_name: np.asarray(x, dtype=np.float32)}]}, num_threads=1)
        except (RuntimeError, ValueError) as exc:
            raise CalibrationError(f"calibration input of shape {list(np.shape(x))} does not run through the "
                                   f"model: {first_line(exc)}") from exc
        for tensor, stats in qsv.items():
            have = merged.get(tensor)
            if have is None:
                merged[tensor] = dict(stats)
            else:
                have["min"] = np.minimum(have["min"], stats["min"])
                have["max"] = np.maximum(have["max"], stats["max"])
    return merged


def _progress(items: Sequence[np.ndarray], enabled: bool) -> Iterator[np.ndarray]:
    if not enabled:
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, desc="calibrating (tflite int8)", unit="input", leave=False)
