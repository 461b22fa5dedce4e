"""ONNX quantization: fp16 (onnxconverter-common), dynamic and static int8 (onnxruntime.quantization).

Traps handled rather than hit:

- Dynamic quantization of ``Conv`` yields ``ConvInteger``, which onnxruntime's CPU provider has no
  kernel for (int8 weights); dynamic mode quantizes MatMul/Attention/LSTM only and says so.
- U8S8 (uint8 activations, int8 weights) on x86 CPUs without VNNI goes through ``vpmaddubsw``,
  whose int16 sums saturate; ``reduce_range`` (7-bit weights) is switched on for those CPUs.
- Static int8 runs ``quant_pre_process`` (shape inference + graph optimization) first, as the
  onnxruntime docs ask, and calibrates on the user's data through the runtime's preprocessing.
- A detection head (one ``[1, 4+classes, N]`` output, as the runtime guesses it) ends in a decode
  tail that concatenates boxes in pixels with scores in 0-1: one uint8 scale for both leaves the
  scores a handful of steps. The tail (every node after the last Conv/MatMul/Gemm on the way to
  the output) stays float, as Ultralytics' own int8 exports do.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._cpu import has_vnni, is_x86
from .._deps import quiet, require
from .._errors import CalibrationError, QuantizationError
from .._options import ConvertOptions
from .._ort import first_line, ort_errors, ort_session
from ._base import NotApplicable, Quantizer, QuantResult

__all__ = ["OnnxQuantizer"]

log = logging.getLogger(__name__)

#: ops whose dynamic (integer) kernels onnxruntime's CPU provider runs; Conv is left out on purpose
_DYNAMIC_OPS = ("MatMul", "Attention", "LSTM", "EmbedLayerNormalization")
_CONV_OPS = ("Conv", "ConvTranspose")
#: compute ops whose int8 QDQ form onnxruntime fuses into integer kernels
_STATIC_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "Attention")


class OnnxQuantizer(Quantizer):
    target: ClassVar[str] = "onnx"

    def quantize(self, float_model: Path, mode: str, calibration: Sequence[np.ndarray], options: ConvertOptions,
                 out: Path) -> QuantResult:
        onnx = require("onnx", "quantizing ONNX models")
        model = onnx.load(str(float_model))
        inputs = _graph_inputs(model)
        if any(i.type.tensor_type.elem_type != onnx.TensorProto.FLOAT for i in inputs):
            raise NotApplicable("the model's input is not float32 (already quantized, or float64 tabular "
                                "inputs); quantization starts from a float32 model")
        if mode == "fp16":
            result = self._fp16(model, out)
        elif mode == "dynamic":
            result = self._dynamic(model, float_model, options, out)
        elif mode == "int8":
            result = self._static(model, float_model, calibration, options, out)
        else:
            raise QuantizationError(f"unknown ONNX quantization mode {mode!r}")
        _check_runs(out, mode)
        return result

    # -- fp16 --------------------------------------------------------------------------------
    def _fp16(self, model: Any, out: Path) -> QuantResult:
        onnx = require("onnx", "quantizing ONNX models")
        common = require("onnxconverter_common", "fp16 conversion of ONNX models")
        # keep_io_types: the runtime and the manifest keep float32 inputs/outputs; casts are inside.
        with quiet("onnxconverter-common"):
            converted = common.float16.convert_float_to_float16(model, keep_io_types=True)
        n16 = sum(1 for t in converted.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16)
        if n16 == 0:
            raise NotApplicable("no float weights to store as fp16 (the model's ops are not fp16-capable)")
        onnx.save(converted, str(out))
        return QuantResult(out, {"tool": "onnxconverter-common", "keep_io_types": True},
                           ["fp16 halves the file; onnxruntime's CPU provider computes most fp16 ops "
                            "through casts, so it is rarely faster on a CPU"])

    # -- dynamic -----------------------------------------------------------------------------
    def _dynamic(self, model: Any, float_model: Path, options: ConvertOptions, out: Path) -> QuantResult:
        require("onnxruntime", "quantizing ONNX models")
        from onnxruntime.quantization import QuantType, quantize_dynamic

        ops = {n.op_type for n in model.graph.node}
        chosen = [op for op in _DYNAMIC_OPS if op in ops]
        has_conv = bool(ops & set(_CONV_OPS))
        if not chosen:
            extra = (" (Conv is not quantized dynamically: it would become ConvInteger, which onnxruntime's CPU "
                     "provider cannot run; use int8)") if has_conv else ""
            raise NotApplicable(f"no op that dynamic quantization can run on a CPU (MatMul, Attention, LSTM){extra}")
        reduce_range = _reduce_range(options)
        try:
            quantize_dynamic(str(float_model), str(out), op_types_to_quantize=chosen, weight_type=QuantType.QInt8,
                             per_channel=bool(options.per_channel), reduce_range=reduce_range)
        except _errors(KeyError, TypeError) as exc:
            raise QuantizationError(f"dynamic ONNX quantization failed: {first_line(exc)}") from exc
        notes = [f"int8 weights for {', '.join(chosen)}; activations quantized at run time"]
        if has_conv:
            notes.append("Conv stays float: dynamic Conv becomes ConvInteger, which onnxruntime's CPU provider "
                         "cannot run")
        return QuantResult(out, {"tool": "onnxruntime.quantization", "ops": chosen, "weight_type": "int8",
                                 "reduce_range": reduce_range}, notes)

    # -- static int8 -------------------------------------------------------------------------
    def _static(self, model: Any, float_model: Path, calibration: Sequence[np.ndarray], options: ConvertOptions,
                out: Path) -> QuantResult:
        require("onnxruntime", "quantizing ONNX models")
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process

        ops = {n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")}
        if not ops & set(_STATIC_OPS):
            raise NotApplicable("no Conv, MatMul or Gemm to quantize (e.g. a tree ensemble or a linear model "
                                "exported as ai.onnx.ml ops, which stay exact in float)")
        if not calibration:
            raise CalibrationError("int8 quantization needs calibration data: pass --calibration DIR_OR_NPY")
        notes: list[str] = []
        pre = out.with_name(out.stem + ".pre.onnx")
        # Symbolic shape inference is for symbolic (dynamic) dimensions; static graphs skip it.
        dynamic_dims = any(d.dim_param or d.dim_value <= 0 for i in _graph_inputs(model)
                           for d in i.type.tensor_type.shape.dim[1:])
        try:
            quant_pre_process(str(float_model), str(pre), skip_symbolic_shape=not dynamic_dims)
            source = pre
        except Exception as exc:
            if "shape inference" not in str(exc) and not isinstance(exc, _errors(KeyError, TypeError)):
                raise
            # Quantizing without the pre-processing still works; the report says it was skipped.
            log.warning("quant_pre_process failed (%s); quantizing the model as it is", first_line(exc))
            notes.append(f"quant_pre_process failed ({first_line(exc, 120)}); quantized without it")
            source = float_model
        per_channel = options.per_channel if options.per_channel is not None else bool(ops & set(_CONV_OPS))
        reduce_range = _reduce_range(options)
        name = _graph_inputs(model)[0].name
        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile}[options.calibration_method]

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._it: Iterator[np.ndarray] = _progress(calibration, options.progress)

            def get_next(self) -> dict[str, np.ndarray] | None:
                x = next(self._it, None)
                return None if x is None else {name: x}

        exclude: list[str] = []
        if _is_detection_head(model):
            source, exclude = _name_decode_tail(source, pre)
            if exclude:
                notes.append(f"detection head: its decode tail ({len(exclude)} node(s) after the last "
                             "Conv/MatMul) stays float, so scores keep their precision next to pixel boxes")
        try:
            quantize_static(str(source), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=method,
                            nodes_to_exclude=exclude or None,
                            extra_options={"CalibMovingAverage": False})
        except _errors(KeyError, TypeError, IndexError) as exc:
            raise QuantizationError(f"static int8 ONNX quantization failed: {first_line(exc)}") from exc
        finally:
            pre.unlink(missing_ok=True)
        notes.append(f"QDQ U8S8, {'per-channel' if per_channel else 'per-tensor'} weights, "
                     f"{options.calibration_method} calibration on {len(calibration)} input(s)")
        if reduce_range:
            notes.append("reduce_range on: this x86 CPU has no VNNI, where U8S8 with full 8-bit weights saturates")
        return QuantResult(out, {"tool": "onnxruntime.quantization", "format": "QDQ", "activations": "uint8",
                                 "weights": "int8", "per_channel": per_channel, "reduce_range": reduce_range,
                                 "calibration": options.calibration_method,
                                 "calibration_inputs": len(calibration)}, notes)


def _is_detection_head(model: Any) -> bool:
    from edge_runtime import guess_head

    shapes = [[d.dim_value if d.dim_value > 0 else -1 for d in o.type.tensor_type.shape.dim]
              for o in model.graph.output]
    head = guess_head(shapes)
    return head in ("yolo", "yolov5")


def _name_decode_tail(source: Path, work: Path) -> tuple[Path, list[str]]:
    """The nodes between the last compute op and the outputs, named (written to ``work`` when some
    had no name) so that ``nodes_to_exclude`` can name them."""
    onnx = require("onnx", "quantizing ONNX models")
    model = onnx.load(str(source))
    renamed = False
    used = {n.name for n in model.graph.node if n.name}
    for i, n in enumerate(model.graph.node):
        if not n.name:
            name = f"edge_node_{i}"
            while name in used:
                name += "_"
            n.name = name
            used.add(name)
            renamed = True
    producer = {o: n for n in model.graph.node for o in n.output}
    tail: list[str] = []
    seen: set[str] = set()
    stack = [o.name for o in model.graph.output]
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in _STATIC_OPS:
            continue  # the network itself: quantized
        tail.append(node.name)
        stack.extend(node.input)
    if renamed:
        onnx.save(model, str(work))
        return work, tail
    return source, tail


def _errors(*extra: type[BaseException]) -> tuple[type[BaseException], ...]:
    return (*ort_errors(), *extra)


def _reduce_range(options: ConvertOptions) -> bool:
    if options.reduce_range is not None:
        return options.reduce_range
    return is_x86() and not has_vnni()


def _graph_inputs(model: Any) -> list[Any]:
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _progress(items: Sequence[np.ndarray], enabled: bool) -> Iterator[np.ndarray]:
    if not enabled:
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, desc="calibrating (onnx int8)", unit="input", leave=False)


def _check_runs(path: Path, mode: str) -> None:
    """Load and run the variant once: a model the runtime cannot run must not become a bundle."""
    try:
        sess = ort_session(path)
        feed = {}
        for i in sess.get_inputs():
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
            dtype = {"tensor(float)": np.float32, "tensor(double)": np.float64}.get(i.type, np.float32)
            feed[i.name] = np.zeros(shape, dtype=dtype)
        sess.run(None, feed)
    except ort_errors() as exc:
        raise QuantizationError(f"the {mode} ONNX model does not run on onnxruntime's CPU provider: "
                                f"{first_line(exc)}") from exc
