"""Fixtures shared by every test package: the real third-party data in ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests._data import MOBILENET_REFERENCE, SHARED


def _require(path: Path) -> Path:
    if not path.exists():
        # Fail, never skip: a missing data set must not turn into a green run.
        pytest.fail(f"test data {path} is missing; the shared data folder must sit beside the project")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _require(SHARED)


@pytest.fixture(scope="session")
def mobilenet_tflite(shared_data: Path) -> Path:
    return _require(shared_data / "models" / "mobilenet_v2_1.0_224_quant.tflite")


@pytest.fixture(scope="session")
def imagenet_labels(shared_data: Path) -> list[str]:
    return _require(shared_data / "labels" / "imagenet_labels.txt").read_text().splitlines()


@pytest.fixture(scope="session")
def reference_images(shared_data: Path) -> dict[str, Path]:
    return {name: _require(shared_data / "images" / name) for name in MOBILENET_REFERENCE}


@pytest.fixture(scope="session")
def mobilenet_bundle(tmp_path_factory: pytest.TempPathFactory, mobilenet_tflite: Path,
                     imagenet_labels: list[str]) -> Path:
    from edge_runtime import make_bundle

    out = tmp_path_factory.mktemp("bundles") / "mobilenet"
    return make_bundle(mobilenet_tflite, out, name="mobilenet_v2", version=1, labels=imagenet_labels)


@pytest.fixture(scope="session")
def efficientnet_bundle(tmp_path_factory: pytest.TempPathFactory, imagenet_labels: list[str]) -> Path:
    """EfficientNet-Lite0 (real pretrained weights) exported to ONNX by the test, then bundled."""
    from edge_runtime import make_bundle
    from tests._models import efficientnet_lite0_onnx

    d = tmp_path_factory.mktemp("efficientnet")
    onnx_path = efficientnet_lite0_onnx(d / "efficientnet_lite0.onnx")
    # The model has 1000 classes; the shared file has 1001 with "background" first.
    return make_bundle(onnx_path, d / "bundle", name="efficientnet_lite0", labels=imagenet_labels[1:],
                       preprocess={"mean": [127.0], "std": [128.0]})
