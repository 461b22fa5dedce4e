"""Dynamic batching across concurrent callers on a model with a dynamic batch dimension (a small
ONNX classifier built here): concurrent requests are joined into one backend call, and every
caller still gets exactly its own answer. Also: a signed bundle whose model is corrupt, and an
expired bundle, are refused with a 4xx while the service keeps serving."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edge_runtime
from cloud_sync.service import ServiceSettings
from edge_device.client import CloudClient, HTTPStatusError
from edge_runtime import load_private_key
from tests.support.errors import error_of
from tests.support.keys import Keys
from tests.support.paths import SHARED as DATA
from tests.support.service import ADMIN_TOKEN, Running, run_service

RNG = np.random.default_rng(7)
W = RNG.normal(size=(8, 5)).astype(np.float32)
B = RNG.normal(size=(5,)).astype(np.float32)


def _onnx_classifier(path: Path) -> Path:
    """probabilities = softmax(x @ W + b) with a dynamic batch dimension."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])
    y = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 5])
    nodes = [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "B"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    graph = helper.make_graph(nodes, "tiny", [x], [y], [numpy_helper.from_array(W, "W"),
                                                        numpy_helper.from_array(B, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _expected(x: np.ndarray) -> np.ndarray:
    logits = x @ W + B
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[Running]:
    d = tmp_path_factory.mktemp("svc-batch")
    onnx_path = _onnx_classifier(d / "tiny.onnx")
    bundle = d / "tiny.tar.gz"
    edge_runtime.make_bundle(onnx_path, bundle, name="tiny", task="tabular", labels=list("abcde"),
                             sign_key=load_private_key(keys.private))
    # a long wait bound so that concurrent callers reliably share batches; two backend instances
    settings = ServiceSettings(data_dir=d, admin_token=ADMIN_TOKEN, trusted_keys=[keys.public],
                               max_batch_wait_ms=50, max_batch_size=32, inference_workers=2, inference_threads=1)
    with run_service(settings) as running:
        CloudClient(running.url, ADMIN_TOKEN, timeout=60).publish(bundle, channel="stable")
        yield running


def _batch_stats(url: str) -> tuple[float, float]:
    lines = httpx.get(url + "/metrics").text.splitlines()

    def value(prefix: str) -> float:
        return sum(float(ln.split()[-1]) for ln in lines if ln.startswith(prefix) and 'model="tiny:1"' in ln)

    return value("edge_inference_batch_size_sum"), value("edge_inference_batch_size_count")


def test_concurrent_callers_share_batches_and_get_their_own_answers(service: Running) -> None:
    client = CloudClient(service.url, ADMIN_TOKEN, timeout=60)
    client.infer("tiny", {"x": np.zeros((1, 8), np.float32)})  # load the model first
    items_before, batches_before = _batch_stats(service.url)
    inputs = [RNG.normal(size=(1 + k % 3, 8)).astype(np.float32) for k in range(24)]
    with ThreadPoolExecutor(max_workers=24) as pool:
        answers = list(pool.map(lambda x: client.infer("tiny", {"x": x}), inputs))
    for x, res in zip(inputs, answers, strict=True):
        out = res["outputs"][0]
        assert out["name"] == "probabilities" and out["shape"] == [x.shape[0], 5]
        np.testing.assert_allclose(np.asarray(out["data"], np.float32).reshape(x.shape[0], 5), _expected(x),
                                   rtol=1e-5, atol=1e-6)
    items, batches = _batch_stats(service.url)
    assert items - items_before == len(inputs)  # every request went through the batcher once
    # ...in fewer backend calls than requests: callers were joined into shared batches
    assert batches - batches_before < len(inputs)


def test_batched_tabular_requests_reject_bad_rows_alone(service: Running) -> None:
    client = CloudClient(service.url, ADMIN_TOKEN, timeout=60)
    with pytest.raises(HTTPStatusError) as e:
        client.infer("tiny", {"x": np.zeros((1, 7), np.float32)})
    assert e.value.status == 400 and e.value.code == "bad_shape"
    with pytest.raises(HTTPStatusError) as e:
        client.infer("tiny", {"x": np.zeros((1, 8), np.float64)})
    assert e.value.status == 400 and e.value.code == "bad_datatype"
    res = client.infer("tiny", {"x": np.ones((2, 8), np.float32)})
    assert res["outputs"][0]["shape"] == [2, 5]
    # an image model endpoint on a tabular model is a clear 422
    r = httpx.post(service.url + "/v2/models/tiny/classify", content=(DATA / "images" / "cat.png").read_bytes(),
                   headers={"Content-Type": "image/png", "Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert r.status_code == 422 and error_of(r)["code"] == "not_an_image_model"


def test_signed_bundle_with_a_corrupt_model_is_refused_at_inference(service: Running, keys: Keys,
                                                                     tmp_path: Path) -> None:
    src = tmp_path / "broken.onnx"
    src.write_bytes(b"\x08\x07this is not a protobuf model at all" * 10)
    fields = {"name": "broken", "version": 1, "task": "tabular", "format": "onnx",
              "inputs": [{"name": "x", "shape": [-1, 8], "dtype": "float32"}],
              "outputs": [{"name": "y", "shape": [-1, 5], "dtype": "float32"}],
              "preprocess": {"kind": "none"}}
    bundle = edge_runtime.write_bundle(tmp_path / "broken.tar.gz", model_file=src, manifest_fields=fields,
                                       sign_key=load_private_key(keys.private))
    client = CloudClient(service.url, ADMIN_TOKEN, timeout=60)
    client.publish(bundle)  # signed and hashed correctly: the registry accepts it
    with pytest.raises(HTTPStatusError) as e:
        client.infer("broken", {"x": np.zeros((1, 8), np.float32)})
    assert e.value.status == 422 and e.value.code == "model_unloadable"
    assert client.infer("tiny", {"x": np.zeros((1, 8), np.float32)})["outputs"]


def test_expired_bundle_is_refused(service: Running, keys: Keys, tmp_path: Path) -> None:
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat(timespec="seconds")
    src = tmp_path / "tiny.onnx"
    _onnx_classifier(src)
    bundle = edge_runtime.make_bundle(src, tmp_path / "old.tar.gz", name="old", task="tabular", expires=past,
                                      sign_key=load_private_key(keys.private))
    r = httpx.post(service.url + "/api/v1/models", content=bundle.read_bytes(),
                   headers={"Content-Type": "application/gzip", "Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "expired"
    assert past in json.dumps(r.json())
