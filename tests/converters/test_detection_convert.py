"""`edge convert` of a float detection model: a tiny YOLO-style detector (tests/support/tiny_detector.py)
as an ONNX file and as a PyTorch factory, quantized int8 (calibration images) and dynamic; the report
measures each variant's boxes against the float model's (recall, precision, mean IoU of matched
boxes) and recommends by them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import Result
from PIL import Image

from converters import convert
from edge_runtime import Model, open_bundle
from tests.support.detection import detection_dir
from tests.support.tiny_detector import SIZE, tiny_detector

FACTORY = "tests.support.tiny_detector:tiny_detector"


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """The detection photos and the ImageNet reference photos: 7 images, unlabelled."""
    d = tmp_path_factory.mktemp("det-eval")
    for p in [*(detection_dir(shared_data) / "images").iterdir(), *(shared_data / "images").glob("*.png")]:
        (d / p.name).symlink_to(p)
    return d


@pytest.fixture(scope="module")
def onnx_detector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    path = tmp_path_factory.mktemp("det-onnx") / "tiny_det.onnx"
    torch.onnx.export(tiny_detector(), (torch.zeros(1, 3, SIZE, SIZE),), str(path), input_names=["images"],
                      output_names=["output0"], opset_version=17, dynamo=False)
    return path


def test_onnx_detector_converts_and_reports_box_agreement(onnx_detector: Path, eval_dir: Path, shared_data: Path,
                                                         tmp_path: Path) -> None:
    report = convert(onnx_detector, tmp_path / "out", to="onnx", quantize=["int8", "dynamic"],
                     calibration=[shared_data / "images" / "leaves"], eval=eval_dir, latency_runs=3, max_drop=100)
    assert report.task == "detection" and report.eval.kind == "agreement" and report.eval.inputs == 7
    f = report.variant("float")
    assert (f.recall, f.precision, f.mean_iou, f.accuracy_drop) == (100.0, 100.0, 1.0, 0.0)
    assert f.boxes is not None and f.boxes >= 7  # the float model finds boxes on every photo
    for name in ("int8", "dynamic"):
        v = report.variant(name)
        assert v.status == "ok", v.reason
        assert v.recall is not None and v.precision is not None and v.mean_iou is not None
        assert 0 <= v.recall <= 100 and 0 <= v.precision <= 100 and 0.5 <= v.mean_iou <= 1.0
        assert v.accuracy_drop == pytest.approx(100 - min(v.recall, v.precision), abs=1e-3)
        assert v.agreement is None and v.accuracy is None  # no classifier numbers for boxes
    # dynamic quantizes only the head's MatMul: nearly the float model
    assert report.variant("dynamic").recall >= 80
    # int8 keeps the decode tail float (boxes in pixels and 0-1 scores would share one uint8 scale and
    # lose the scores: measured here, that halved precision); calibrated on real photos it agrees
    q = report.variant("int8")
    assert any("decode tail" in n for n in q.notes)
    assert q.recall >= 90 and q.precision >= 80
    # the bundles are detection bundles the runtime runs, with the numbers in their manifests
    int8 = open_bundle(report.variant("int8").bundle)
    m = int8.manifest
    assert m.task == "detection" and m.postprocess.head == "yolo" and m.preprocess.resize_mode == "letterbox"
    assert m.metrics["recall"] == report.variant("int8").recall and "mean_iou" in m.metrics
    with Model.load(report.variant("int8").bundle) as model:
        pred = model.predict_file(eval_dir / "kite_and_cold.jpg")
    assert pred.detections and all(0 <= d["box"][0] <= 1352 and 0 <= d["box"][3] <= 900 for d in pred.detections)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| recall | precision | mean IoU |" in md and "box agreement drop" in md
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["task"] == "detection" and all("recall" in v for v in data["variants"])


def test_a_variant_that_loses_the_boxes_is_not_recommended(eval_dir: Path, tmp_path: Path) -> None:
    # int8 calibrated on black frames: the activation ranges fit nothing the eval photos hold
    black = tmp_path / "black"
    black.mkdir()
    for i in range(4):
        Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(black / f"{i}.png")
    report = convert(FACTORY, tmp_path / "out", to="onnx", quantize=["int8", "dynamic"], calibration=[black],
                     eval=eval_dir, latency_runs=3, max_drop=10)
    assert report.task == "detection" and report.source["framework"] == "pytorch"
    q, dyn = report.variant("int8"), report.variant("dynamic")
    assert q.status == "ok" and q.recall is not None and q.precision is not None
    assert min(q.recall, q.precision) < 50 and q.within_max_drop is False
    assert dyn.within_max_drop is True
    assert report.recommended in ("float", "dynamic")
    assert "int8" in report.recommendation and "excluded" in report.recommendation
    assert "recall" in report.recommendation


def test_edge_convert_cli_then_edge_run(onnx_detector: Path, eval_dir: Path, tmp_path: Path,
                                        edge_cli: Callable[..., Result]) -> None:
    res = edge_cli("convert", onnx_detector, "--to", "onnx", "--quantize", "dynamic", "--eval", eval_dir,
                   "--runs", "3", "--max-drop", "5", "-o", tmp_path / "out", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output[res.output.index("{"):])
    assert data["task"] == "detection" and data["recommended"] in ("float", "dynamic")
    assert {v["variant"]: v["recall"] for v in data["variants"]}["float"] == 100.0
    bundle = tmp_path / "out" / "tiny_det-onnx-dynamic"
    run = edge_cli("run", bundle, "--source", eval_dir / "cats.jpg", "--json", "--no-summary")
    assert run.exit_code == 0, run.output
    rec = json.loads(run.output.splitlines()[0])
    assert rec["detections"] and "top_k" not in rec
