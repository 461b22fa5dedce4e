"""A small Keras CNN trained here on scikit-learn's digits: TFLite (TFLiteConverter) and ONNX (tf2onnx)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converters import convert
from edge_runtime import Model

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="module")
def digits_keras(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import keras
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = tmp_path_factory.mktemp("keras")
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 8, 8, 1)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(xtr, ytr, epochs=40, batch_size=32, verbose=0)
    model.save(d / "digits.keras")
    np.save(d / "calib.npy", xtr[:200])
    np.savez(d / "heldout.npz", x=xte, y=yte)
    (d / "labels.txt").write_text("".join(f"digit {i}\n" for i in range(10)))
    acc = 100.0 * float(np.mean(model.predict(xte, verbose=0).argmax(1) == yte))
    return {"dir": d, "acc": acc, "x": xte, "y": yte}


def _convert(k: dict[str, Any], to: str, out: str, **kw: Any) -> Any:
    d = k["dir"]
    return convert(d / "digits.keras", d / out, to=to, eval=d / "heldout.npz", calibration=[d / "calib.npy"],
                   labels=d / "labels.txt", preprocess={"kind": "none"}, latency_runs=5, **kw)


def test_keras_model_is_worth_converting(digits_keras: dict[str, Any]) -> None:
    assert digits_keras["acc"] > 85.0


def test_tflite_float_and_int8_within_one_point_of_keras(digits_keras: dict[str, Any]) -> None:
    report = _convert(digits_keras, "tflite", "tfl", quantize=["fp16", "dynamic", "int8"])
    acc = digits_keras["acc"]
    assert report.eval.kind == "accuracy" and report.eval.inputs == len(digits_keras["y"])
    for name in ("float", "int8"):
        v = report.variant(name)
        assert v.accuracy is not None and abs(v.accuracy - acc) <= 1.0, (name, v.accuracy, acc)
    q = report.variant("int8")
    assert q.settings["tool"] == "TFLiteConverter" and q.settings["io"] == "int8"
    with Model.load(q.bundle) as m:
        assert m.manifest.inputs[0].dtype == "int8" and m.manifest.outputs[0].dtype == "int8"
        assert m.manifest.source["framework"] == "keras"
        assert m.labels[3] == "digit 3"
    assert {v.variant for v in report.variants if v.status == "ok"} == {"float", "fp16", "dynamic", "int8"}
    # the recommendation follows the numbers: a variant within the drop, fastest among them
    fit = [v for v in report.variants if v.within_max_drop]
    assert report.recommended == min(fit, key=lambda v: (v.p50_ms, v.size_bytes)).variant


def test_tflite_int8_with_uint8_io(digits_keras: dict[str, Any]) -> None:
    report = _convert(digits_keras, "tflite", "tfl-u8", quantize=["int8"], io_dtype="uint8")
    q = report.variant("int8")
    with Model.load(q.bundle) as m:
        assert m.manifest.inputs[0].dtype == "uint8"
    assert q.accuracy is not None and abs(q.accuracy - digits_keras["acc"]) <= 1.0


def test_onnx_through_tf2onnx_matches_keras(digits_keras: dict[str, Any]) -> None:
    report = _convert(digits_keras, "onnx", "onnx", quantize=["dynamic", "int8"])
    f = report.variant("float")
    assert f.accuracy == pytest.approx(digits_keras["acc"], abs=0.2)
    dyn = report.variant("dynamic")
    assert dyn.status == "ok" and "MatMul" in dyn.settings["ops"]  # Dense → MatMul, quantized
    assert any("Conv stays float" in n for n in dyn.notes)
    q = report.variant("int8")
    assert q.accuracy is not None and abs(q.accuracy - digits_keras["acc"]) <= 1.0


def test_existing_onnx_file_is_quantized_and_evaluated(digits_keras: dict[str, Any]) -> None:
    float_onnx = Path(_convert(digits_keras, "onnx", "onnx-src").variant("float").bundle) / "model.onnx"
    d = digits_keras["dir"]
    report = convert(float_onnx, d / "from-file", to="onnx", quantize=["int8"], calibration=[d / "calib.npy"],
                     eval=d / "heldout.npz", labels=d / "labels.txt", preprocess={"kind": "none"}, latency_runs=3)
    assert report.source["framework"] == "onnx"
    assert abs((report.variant("int8").accuracy or 0) - digits_keras["acc"]) <= 1.0


def test_savedmodel_to_tflite(digits_keras: dict[str, Any]) -> None:
    import keras

    d = digits_keras["dir"]
    keras.models.load_model(d / "digits.keras").export(str(d / "saved"), verbose=False)
    report = convert(d / "saved", d / "sm", to="tflite", eval=d / "heldout.npz", preprocess={"kind": "none"},
                     latency_runs=3)
    assert report.source["framework"] == "tensorflow"
    assert report.variant("float").accuracy == pytest.approx(digits_keras["acc"], abs=0.2)


def test_int8_bundle_through_edge_run_quantizes_real_valued_rows(digits_keras: dict[str, Any]) -> None:
    """Rows arrive as real numbers; the runtime quantizes them with the input's own scale and zero
    point, so `edge run` on raw rows is as accurate as the converter's own evaluation."""
    import json
    import subprocess
    import sys

    report = _convert(digits_keras, "tflite", "tfl-run", quantize=["int8"])
    q = report.variant("int8")
    rows = digits_keras["dir"] / "heldout_rows.npy"
    np.save(rows, digits_keras["x"].reshape(len(digits_keras["x"]), -1))
    proc = subprocess.run([sys.executable, "-m", "edge_cli", "run", str(q.bundle), "--source", str(rows),
                           "--top-k", "1"], capture_output=True, text=True, check=True)
    labels = [int(json.loads(line)["top_k"][0]["label"].split()[1]) for line in proc.stdout.splitlines()]
    assert len(labels) == len(digits_keras["y"])
    acc = 100.0 * float(np.mean(np.asarray(labels) == digits_keras["y"]))
    assert abs(acc - digits_keras["acc"]) <= 1.0, (acc, digits_keras["acc"])
