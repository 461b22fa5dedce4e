"""What onnxruntime does not report about an ONNX model's inputs and outputs.

A TFLite model carries each tensor's affine quantization (scale, zero point) in the tensor itself;
an ONNX model says it only in its graph: a uint8/int8 output is written by a ``QuantizeLinear``
node, a uint8/int8 input read by a ``DequantizeLinear`` node, each with its scale and zero point as
constants. onnxruntime's session lists names, shapes and types only, so a bundle made from such a
model would hold no quantization and its scores would be the raw integers (every score 1.0 after
the softmax of 0..255). This reads the graph with the ``onnx`` package, on the machine that makes
the bundle (the converters' extras install it; a device never needs it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ._manifest import Quantization

__all__ = ["io_quantization"]

log = logging.getLogger(__name__)


def io_quantization(path: str | Path) -> dict[str, Quantization] | None:
    """The per-tensor quantization of the model's inputs read by a ``DequantizeLinear`` and
    outputs written by a ``QuantizeLinear``, by tensor name; None when ``onnx`` is not installed.
    Per-axis (several scales) or non-constant parameters are left out: no single affine map."""
    try:
        import onnx
        from google.protobuf.message import DecodeError
        from onnx import numpy_helper
    except ImportError:
        return None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (OSError, ValueError, DecodeError) as exc:
        log.warning("%s: cannot read the ONNX graph for its quantization (%s)", path, exc)
        return {}
    graph = model.graph
    consts: dict[str, Any] = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.HasField("t"):
                    consts[node.output[0]] = attr.t

    def scalar(name: str) -> float | None:
        t = consts.get(name)
        if t is None:
            return None
        arr = numpy_helper.to_array(t)
        return float(arr.reshape(-1)[0]) if arr.size == 1 else None

    inputs = {i.name for i in graph.input} - set(consts)
    outputs = {o.name for o in graph.output}
    found: dict[str, Quantization] = {}
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and node.output and node.output[0] in outputs:
            tensor = node.output[0]
        elif node.op_type == "DequantizeLinear" and node.input and node.input[0] in inputs:
            tensor = node.input[0]
        else:
            continue
        scale = scalar(node.input[1]) if len(node.input) > 1 else None
        zero = scalar(node.input[2]) if len(node.input) > 2 and node.input[2] else 0.0
        if scale is None or zero is None or not scale > 0:
            continue
        found[tensor] = Quantization(scale=scale, zero_point=int(zero))
    return found
