"""Fixtures for the agent tests: signed releases of the shared MobileNet V2 (good, expiring,
signed by another key, failing their health check), a model that passes its health check but fails
on real frames, a real Mosquitto, the real cloud service, agent configs."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import edge_runtime
from edge_runtime import generate_keypair, load_private_key
from tests._data import SHARED

from ._servers import ADMIN_TOKEN, CloudService, Mosquitto, toml_dumps

MODEL = SHARED / "models" / "mobilenet_v2_1.0_224_quant.tflite"
LABELS = SHARED / "labels" / "imagenet_labels.txt"
IMAGES = SHARED / "images"
NAME = "mobilenet_v2"
FAR_FUTURE = "2099-01-01T00:00:00Z"


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return generate_keypair(tmp_path_factory.mktemp("keys-release"))


@pytest.fixture(scope="session")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return generate_keypair(tmp_path_factory.mktemp("keys-other"))


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


@pytest.fixture(scope="session")
def release(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, Path],
            other_keys: tuple[Path, Path]) -> Callable[..., Path]:
    """``release(version, kind="good", key="release", expires=FAR_FUTURE)`` → a signed .tar.gz.

    kinds: ``good`` (MobileNet V2 with a cat sample whose top-1 is declared), ``bad-labels`` (its
    labels shifted by one: the declared sample top-1 no longer comes out), ``nan`` (the ONNX model
    above, named like the release), ``unsigned``, ``no-samples``.
    """
    out = tmp_path_factory.mktemp("releases")
    labels = LABELS.read_text().splitlines()
    cache: dict[tuple[Any, ...], Path] = {}
    black = out / "black.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(black)

    def make(version: int, kind: str = "good", key: str = "release", expires: str | None = FAR_FUTURE,
             pad_bytes: int = 0) -> Path:
        k = (version, kind, key, expires, pad_bytes)
        if k in cache:
            return cache[k]
        priv = load_private_key((keys if key == "release" else other_keys)[0])
        target = out / f"{NAME}-v{version}-{kind}-{key}-{len(cache)}.tar.gz"
        extra: dict[str, Any] = {"samples/cat.png": IMAGES / "cat.png"}
        if pad_bytes:
            extra["extra/pad.bin"] = np.random.default_rng(version).bytes(pad_bytes)  # incompressible
        metrics = {"sample_top1": {"samples/cat.png": "Egyptian cat"}}
        common: dict[str, Any] = dict(name=NAME, version=version, expires=expires, overwrite=True,
                                      sign_key=None if kind == "unsigned" else priv)
        if kind == "nan":
            onnx_path = nan_model_onnx(out / f"nan-{version}.onnx")
            edge_runtime.make_bundle(onnx_path, target, labels=["dark", "bright"],
                                     preprocess={"size": (8, 8), "mean": [0.0], "std": [255.0]},
                                     postprocess={"softmax": False, "top_k": 1},
                                     samples=["samples/black.png"], extra_files={"samples/black.png": black},
                                     layouts=["NHWC"], **common)
        else:
            lab = [*labels[1:], "(none)"] if kind == "bad-labels" else labels
            edge_runtime.make_bundle(MODEL, target, labels=lab, preprocess={"size": (224, 224)},
                                     samples=[] if kind == "no-samples" else ["samples/cat.png"],
                                     extra_files=extra, metrics=metrics, **common)
        cache[k] = target
        return target

    return make


def expiring(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="seconds").replace("+00:00", "Z")


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"), persistence=False).start()
    yield broker
    broker.stop()


@pytest.fixture()
def images_dir(tmp_path: Path) -> Path:
    """The four reference images and the eleven tomato leaves: fifteen real frames."""
    d = tmp_path / "frames"
    d.mkdir()
    for p in [*sorted(IMAGES.glob("*.png")), *sorted((IMAGES / "leaves").iterdir())]:
        (d / p.name).symlink_to(p)
    return d


def start_service(tmp_path: Path, trusted: list[Path], mqtt_port: int | None = None) -> CloudService:
    data = tmp_path / "cloud"
    data.mkdir(exist_ok=True)
    return CloudService(data, trusted, mqtt_port=mqtt_port).start()


def admin(service: CloudService) -> Any:
    from edge_device.client import CloudClient

    return CloudClient(service.url, ADMIN_TOKEN, timeout=120)


def register(service: CloudService, device_id: str, tmp_path: Path) -> Path:
    """Register the device for the model's stable channel; return its token file."""
    dev = admin(service).register_device(device_id, model=NAME, channel="stable")
    token_file = tmp_path / f"{device_id}.token"
    token_file.write_text(dev["token"] + "\n")
    return token_file


def agent_config(tmp_path: Path, *, device_id: str, bundle: Path, keys: tuple[Path, Path] | None,
                 source: str, **sections: Any) -> dict[str, Any]:
    """An agent.toml as a dict: offline, no telemetry, no updates unless ``sections`` say so."""
    cfg: dict[str, Any] = {
        "device_id": device_id,
        "state_dir": str(tmp_path / f"state-{device_id}"),
        "model": {"bundle": str(bundle), "trusted_keys": [str(keys[1])] if keys else [], "threads": 1},
        "source": {"spec": source},
        "updates": {"enabled": False},
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(name), dict):
            cfg[name] = {**cfg[name], **value}
        else:
            cfg[name] = value
    return cfg


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(toml_dumps(cfg))
    return path


class ListSink:
    """Collects records (the pipeline's sink thread writes, the test waits)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self._cond = threading.Condition()

    def write(self, record: dict[str, Any]) -> None:
        with self._cond:
            self.records.append(json.loads(json.dumps(record)))
            self._cond.notify_all()

    def close(self) -> None:
        pass

    def wait(self, n: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.records) >= n, timeout):
                raise TimeoutError(f"{len(self.records)} record(s) after {timeout} s, waiting for {n}")
            return list(self.records)

    def wait_for(self, pred: Callable[[list[dict[str, Any]]], bool], timeout: float, what: str) -> list[dict[str, Any]]:
        with self._cond:
            if not self._cond.wait_for(lambda: pred(self.records), timeout):
                raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
            return list(self.records)
