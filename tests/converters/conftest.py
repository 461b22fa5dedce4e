"""Fixtures of the converter tests: real data sets, real models, expensive exports made once."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

from tests.support.data import REFERENCE_IMAGES


@pytest.fixture(scope="session")
def images_dir(shared_data: Path) -> Path:
    return shared_data / "images"


@pytest.fixture(scope="session")
def calibration_dirs(shared_data: Path) -> list[Path]:
    """Calibration images that are not the evaluation images: the tomato leaves plus the photos
    that ship inside scikit-image and scikit-learn."""
    import skimage
    import sklearn

    dirs = [shared_data / "images" / "leaves", Path(skimage.__file__).parent / "data",
            Path(sklearn.__file__).parent / "datasets" / "images"]
    for d in dirs:
        assert d.is_dir(), d
    return dirs


@pytest.fixture(scope="session")
def edge_cli() -> Callable[..., Result]:
    from edge_cli import cli

    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)

    return invoke


@pytest.fixture(scope="session")
def torch_reference(images_dir: Path, imagenet_labels: list[str]) -> dict[str, str]:
    """Top-1 of the PyTorch EfficientNet-Lite0 itself on the four reference images."""
    import torch
    from PIL import Image

    from converters import efficientnet_lite0_weights
    from converters.zoo import efficientnet_lite0

    model = efficientnet_lite0()
    model.load_state_dict(torch.load(efficientnet_lite0_weights(), weights_only=True))
    model.eval()
    labels = imagenet_labels[1:]  # the shared file has a background line 0; the model does not
    out = {}
    for name in REFERENCE_IMAGES:
        img = Image.open(images_dir / name).convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)
        x = (np.asarray(img, dtype=np.float32) - 127.0) / 128.0
        with torch.no_grad():
            logits = model(torch.from_numpy(x).permute(2, 0, 1)[None])
        out[name] = labels[int(logits.argmax())]
    return out


def _export(tmp: Path, to: str, calibration_dirs: list[Path], images_dir: Path, shared_data: Path) -> Any:
    from converters import export_efficientnet_lite0

    return export_efficientnet_lite0(
        tmp, to=to, quantize=["int8"], labels=shared_data / "labels" / "imagenet_labels.txt",
        calibration=calibration_dirs, eval=images_dir, latency_runs=10, threads=os.cpu_count() or 1)


@pytest.fixture(scope="session")
def effnet_onnx(tmp_path_factory: pytest.TempPathFactory, calibration_dirs: list[Path], images_dir: Path,
                shared_data: Path) -> Any:
    return _export(tmp_path_factory.mktemp("effnet-onnx"), "onnx", calibration_dirs, images_dir, shared_data)


@pytest.fixture(scope="session")
def effnet_tflite(tmp_path_factory: pytest.TempPathFactory, calibration_dirs: list[Path], images_dir: Path,
                  shared_data: Path) -> Any:
    return _export(tmp_path_factory.mktemp("effnet-tflite"), "tflite", calibration_dirs, images_dir, shared_data)
