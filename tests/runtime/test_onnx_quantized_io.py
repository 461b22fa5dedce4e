"""An ONNX model whose output a QuantizeLinear writes (or whose input a DequantizeLinear reads)
gets that quantization in its bundle, so its scores are probabilities, not raw integers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from edge_runtime import Model, make_bundle

SCALE, ZERO = 1 / 256, 0


def quantized_softmax(path: Path, *, constant_node: bool = False) -> Path:
    """float [1, 4] -> Softmax -> QuantizeLinear(1/256, 0) -> uint8 [1, 4]."""
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [SCALE])
    zero = helper.make_tensor("zero", TensorProto.UINT8, [], [ZERO])
    nodes = [helper.make_node("Softmax", ["x"], ["p"], axis=1)]
    inits = [scale, zero]
    if constant_node:  # the parameters as Constant nodes, as some exporters write them
        nodes = [helper.make_node("Constant", [], ["scale"], value=scale),
                 helper.make_node("Constant", [], ["zero"], value=zero), *nodes]
        inits = []
    nodes.append(helper.make_node("QuantizeLinear", ["p", "scale", "zero"], ["probs"]))
    graph = helper.make_graph(nodes, "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("probs", TensorProto.UINT8, [1, 4])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


@pytest.mark.parametrize("constant_node", [False, True])
def test_a_quantized_output_gets_its_scale_and_gives_probabilities(tmp_path: Path, constant_node: bool) -> None:
    model_file = quantized_softmax(tmp_path / "m.onnx", constant_node=constant_node)
    bundle = make_bundle(model_file, tmp_path / "b", name="q", task="tabular", labels=["a", "b", "c", "d"])
    with Model.load(bundle, backend="onnxruntime") as m:
        q = m.manifest.outputs[0].quantization
        assert q is not None and q.scale == pytest.approx(SCALE) and q.zero_point == ZERO
        row = np.array([2.0, 1.0, 0.5, -1.0], dtype=np.float32)
        pred = m.predict(row)
    raw = ort.InferenceSession(str(model_file)).run(None, {"x": row[None]})[0][0]
    want = (raw.astype(np.float32) - ZERO) * SCALE
    assert pred.top_k is not None and [lbl for lbl, _ in pred.top_k] == ["a", "b", "c", "d"]
    assert [s for _, s in pred.top_k] == pytest.approx(sorted(want.tolist(), reverse=True), abs=1e-6)
    assert pred.top_k[0][1] < 0.9  # not the 1.0 every score was before


def test_a_quantized_input_gets_its_scale(tmp_path: Path) -> None:
    """uint8 [1, 3] -> DequantizeLinear(0.5, 10) -> Identity: a row of real numbers is quantized on
    the way in, so the model sees what the real numbers mean."""
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.5])
    zero = helper.make_tensor("z", TensorProto.UINT8, [], [10])
    graph = helper.make_graph([helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"])], "dq",
                              [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], [scale, zero])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "dq.onnx")
    bundle = make_bundle(tmp_path / "dq.onnx", tmp_path / "b", name="dq", task="regression")
    with Model.load(bundle, backend="onnxruntime") as m:
        q = m.manifest.inputs[0].quantization
        assert q is not None and (q.scale, q.zero_point) == (0.5, 10)
        assert m.predict(np.array([1.0, -2.5, 20.0])).values == pytest.approx([1.0, -2.5, 20.0])


def test_per_axis_parameters_are_left_out(tmp_path: Path) -> None:
    from edge_runtime._onnx_graph import io_quantization

    scale = helper.make_tensor("s", TensorProto.FLOAT, [4], [0.1, 0.2, 0.3, 0.4])
    zero = helper.make_tensor("z", TensorProto.UINT8, [4], [0, 0, 0, 0])
    graph = helper.make_graph([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], axis=1)], "pa",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 4])], [scale, zero])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "pa.onnx")
    assert io_quantization(tmp_path / "pa.onnx") == {}
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07 not a model")
    assert io_quantization(tmp_path / "bad.onnx") == {}
