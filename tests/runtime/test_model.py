"""Model loading, pre/postprocessing and backends, against real models and images."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_runtime import (
    BackendError,
    BackendUnavailableError,
    InputError,
    Model,
    ModelError,
    Preprocess,
    TensorSpec,
    describe_model,
    load_image,
    make_bundle,
)
from edge_runtime._imaging import ImagePreprocessor
from edge_runtime.backends import BACKENDS, backends_for
from tests.support.data import MOBILENET_REFERENCE
from tests.support.models import small_cnn_onnx, softmax_regression_onnx


def test_mobilenet_gives_every_reference_top1(mobilenet_bundle: Path, reference_images: dict[str, Path]) -> None:
    with Model.load(mobilenet_bundle, backend="litert", threads=2) as m:
        for name, path in reference_images.items():
            label, score = MOBILENET_REFERENCE[name]
            pred = m.predict_file(path)
            assert pred.label == label, name
            # the README allows a step or two of the output quantization (1/256)
            assert abs(pred.score - score) <= 2 / 256 + 0.005, (name, pred.score)


def test_quantized_output_is_dequantized_with_the_models_own_parameters(
        mobilenet_bundle: Path, reference_images: dict[str, Path]) -> None:
    from ai_edge_litert.interpreter import Interpreter

    with Model.load(mobilenet_bundle, backend="litert", threads=1) as m:
        img = load_image(reference_images["cat.png"])
        (x,) = m.preprocess(img)
        # Raw pixels, as Coral models expect: the quantized input equals the resized image.
        expected = np.asarray(Image.fromarray(img).resize((224, 224), Image.Resampling.BILINEAR))
        np.testing.assert_array_equal(x[0], expected)
        it = Interpreter(model_path=str(m.bundle.model_path), num_threads=1)
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        q = it.get_tensor(it.get_output_details()[0]["index"])[0]
        pred = m.postprocess(m.infer([x]))
        assert pred.scores is not None
        np.testing.assert_allclose(pred.scores, q.astype(np.float32) * 0.00390625, rtol=0, atol=1e-7)


@pytest.mark.parametrize("backend", ["onnxruntime", "opencv-dnn"])
def test_efficientnet_lite0_reference_top1_on_each_onnx_backend(
        efficientnet_bundle: Path, reference_images: dict[str, Path], backend: str) -> None:
    with Model.load(efficientnet_bundle, backend=backend, threads=2) as m:
        assert m.backend_name == backend
        for name, path in reference_images.items():
            assert m.predict_file(path).label == MOBILENET_REFERENCE[name][0], (backend, name)


def test_same_bundle_same_answer_on_every_onnx_backend(efficientnet_bundle: Path, shared_data: Path) -> None:
    leaves = sorted((shared_data / "images" / "leaves").iterdir())
    ort = Model.load(efficientnet_bundle, backend="onnxruntime", threads=2)
    cv = Model.load(efficientnet_bundle, backend="opencv-dnn", threads=2)
    for p in leaves:
        a, b = ort.predict_file(p), cv.predict_file(p)
        assert a.label == b.label, p.name
        assert a.scores is not None and b.scores is not None
        assert float(np.max(np.abs(a.scores - b.scores))) < 1e-3


def test_a_test_built_cnn_agrees_across_backends(tmp_path: Path, shared_data: Path) -> None:
    onnx_path = small_cnn_onnx(tmp_path / "cnn.onnx", classes=10, size=64)
    labels = [f"class_{i}" for i in range(10)]
    bundle = make_bundle(onnx_path, tmp_path / "cnn", labels=labels,
                         preprocess={"scale": 1 / 255, "mean": [0.5], "std": [0.25]})
    models = [Model.load(bundle, backend=b, threads=1) for b in ("onnxruntime", "opencv-dnn")]
    images = sorted((shared_data / "images" / "leaves").iterdir()) + sorted((shared_data / "images").glob("*.png"))
    tops = {m.backend_name: [m.predict_file(p).label for p in images] for m in models}
    assert tops["onnxruntime"] == tops["opencv-dnn"]
    assert len(set(tops["onnxruntime"])) > 1, "a degenerate model that always says the same proves nothing"


def test_tabular_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    w, b = rng.normal(size=(4, 3)), rng.normal(size=3)
    onnx_path = softmax_regression_onnx(tmp_path / "lr.onnx", w, b)
    bundle = make_bundle(onnx_path, tmp_path / "lr", task="tabular", labels=["setosa", "versicolor", "virginica"])
    with Model.load(bundle, backend="onnxruntime") as m:
        for _ in range(20):
            row = rng.normal(size=4).astype(np.float32)
            logits = row @ w.astype(np.float32) + b.astype(np.float32)
            expect = np.exp(logits - logits.max())
            expect /= expect.sum()
            pred = m.predict(row)
            assert pred.label == ["setosa", "versicolor", "virginica"][int(np.argmax(expect))]
            assert pred.scores is not None
            np.testing.assert_allclose(pred.scores, expect, atol=1e-5)
        with pytest.raises(InputError, match="row has 5 value"):
            m.predict(np.zeros(5))


def test_wrong_tensor_shape_is_an_input_error(mobilenet_bundle: Path) -> None:
    with Model.load(mobilenet_bundle, backend="litert") as m:
        with pytest.raises(InputError):
            m.infer([np.zeros((1, 100, 100, 3), np.uint8)])
        with pytest.raises(InputError, match="1, 3 or 4 channels"):
            m.predict(np.zeros((50, 50, 2), np.uint8))
        with pytest.raises(InputError, match="HxW or HxWxC"):
            m.predict(np.zeros((2, 50, 50, 3), np.uint8))
        # grayscale and RGBA images are fine: converted to RGB
        assert m.predict(np.full((40, 60), 128, np.uint8)).label is not None
        assert m.predict(np.full((40, 60, 4), 128, np.uint8)).label is not None


@pytest.mark.parametrize("mode", ["squash", "letterbox", "center-crop"])
def test_resize_modes(mode: str) -> None:
    # A 200x100 image: left half red, right half blue.
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, :100, 0] = 255
    img[:, 100:, 2] = 255
    spec = TensorSpec(name="x", shape=[1, 50, 50, 3], dtype="uint8", layout="NHWC")
    x = ImagePreprocessor(Preprocess(resize_mode=mode, interpolation="nearest"), spec)(img)[0]
    assert x.shape == (50, 50, 3)
    if mode == "squash":
        assert x[25, 5, 0] == 255 and x[25, 45, 2] == 255
    elif mode == "letterbox":
        # fitted to 50x25 in the middle, black bars above and below
        assert x[5, 25].tolist() == [0, 0, 0] and x[45, 25].tolist() == [0, 0, 0]
        assert x[25, 5, 0] == 255 and x[25, 45, 2] == 255
    else:
        # height fills, the sides are cropped: the centre column splits red | blue
        assert x[25, 5, 0] == 255 and x[25, 45, 2] == 255
        assert x[0, 0].tolist() != [0, 0, 0]


def test_normalisation_layout_and_bgr() -> None:
    img = np.zeros((4, 4, 3), np.uint8)
    img[..., 0] = 200
    spec = TensorSpec(name="x", shape=[1, 3, 4, 4], dtype="float32", layout="NCHW")
    pre = Preprocess(mean=[100.0, 0.0, 0.0], std=[50.0, 1.0, 1.0], color="rgb")
    x = ImagePreprocessor(pre, spec)(img)
    assert x.shape == (1, 3, 4, 4) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, 0], 2.0)
    xb = ImagePreprocessor(Preprocess(color="bgr"), spec)(img)
    np.testing.assert_allclose(xb[0, 2], 200.0)
    np.testing.assert_allclose(xb[0, 0], 0.0)


def test_int8_input_is_quantized_with_its_scale_and_zero_point() -> None:
    from edge_runtime import Quantization

    spec = TensorSpec(name="x", shape=[1, 2, 2, 3], dtype="int8", layout="NHWC",
                      quantization=Quantization(scale=1 / 255, zero_point=-128))
    img = np.array([[[0, 128, 255]] * 2] * 2, np.uint8)
    x = ImagePreprocessor(Preprocess(scale=1 / 255), spec)(img)
    assert x.dtype == np.int8
    assert x[0, 0, 0].tolist() == [-128, 0, 127]


def test_registry_and_missing_libraries(monkeypatch: pytest.MonkeyPatch, efficientnet_bundle: Path) -> None:
    assert set(BACKENDS) == {"litert", "onnxruntime", "opencv-dnn"}
    assert [b.name for b in backends_for("onnx", ["opencv-dnn", "onnxruntime"])] == ["opencv-dnn", "onnxruntime"]
    assert [b.name for b in backends_for("tflite")] == ["litert"]
    with pytest.raises(BackendError, match="unknown backend 'tensorrt'"):
        Model.load(efficientnet_bundle, backend="tensorrt")
    with pytest.raises(BackendError, match="cannot run onnx"):
        Model.load(efficientnet_bundle, backend="litert")
    # Make both ONNX libraries unimportable, as on a device without them.
    for mod in ("onnxruntime", "cv2"):
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'edge-runtime\[onnx\]'"):
        Model.load(efficientnet_bundle, backend="onnxruntime")
    with pytest.raises(BackendUnavailableError) as info:
        Model.load(efficientnet_bundle)
    assert "onnxruntime" in str(info.value) and "opencv-dnn" in str(info.value)


def test_describe_refuses_garbage(tmp_path: Path, mobilenet_tflite: Path) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError, match="not a TFLite flatbuffer"):
        describe_model(bad)
    trunc = tmp_path / "trunc.tflite"
    trunc.write_bytes(mobilenet_tflite.read_bytes()[:5000])
    with pytest.raises(ModelError, match="trunc.tflite"):
        describe_model(trunc)
    onnx_bad = tmp_path / "bad.onnx"
    onnx_bad.write_bytes(b"this is not a protobuf at all")
    with pytest.raises(ModelError, match="bad.onnx"):
        describe_model(onnx_bad)
    with pytest.raises(ModelError, match="expected .tflite or .onnx"):
        describe_model(tmp_path / "model.pb")


def test_backend_order_and_threads_come_from_the_profile(efficientnet_bundle: Path) -> None:
    import os

    import device_profiles

    # 32-bit Raspberry Pi OS has no onnxruntime wheel: its profile prefers OpenCV for ONNX.
    armv7 = device_profiles.load_profile("rpi-4b-armv7")
    with Model.load(efficientnet_bundle, profile="rpi-4b-armv7") as m:
        assert m.backend_name == "opencv-dnn"
        assert m.settings is not None and m.settings.profile == "rpi-4b-armv7"
        assert m.settings.threads == min(armv7.threads, os.cpu_count() or 1)
    with Model.load(efficientnet_bundle, profile="generic-x86_64") as m:
        assert m.backend_name == "onnxruntime"
    # explicit choices win over the profile
    with Model.load(efficientnet_bundle, profile="rpi-4b-armv7", backend="onnxruntime", threads=1) as m:
        assert m.backend_name == "onnxruntime" and m.backend.threads == 1
    with pytest.raises(device_profiles.ProfileError, match="unknown device profile"):
        Model.load(efficientnet_bundle, profile="rpi-9")
