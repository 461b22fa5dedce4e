"""Object detection from the command line, as a user runs it: `edge bundle --task detection`,
`edge run`, `edge inspect` in subprocesses, on the shared third-party models and photos."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.detection import MODELS, detection_dir, expected, rule_violations
from tests.support.paths import ROOT, env_with_project

BACKEND_CASES = [(m, b) for m, backends in MODELS.items() for b in backends]


def edge(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "edge_cli", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=env_with_project())
    if check and proc.returncode != 0:
        raise AssertionError(f"edge {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def records(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def cli_bundles(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict[str, Path]:
    """`edge bundle MODEL --task detection -o DIR`, nothing else, for each shared model."""
    out = tmp_path_factory.mktemp("det-cli")
    bundles = {}
    for m in MODELS:
        bundles[m] = out / m
        edge("bundle", detection_dir(shared_data) / "models" / m, "--task", "detection", "-o", bundles[m])
    return bundles


@pytest.mark.parametrize(("model_file", "backend"), BACKEND_CASES)
def test_edge_run_finds_the_reference_detections(cli_bundles: dict[str, Path], shared_data: Path,
                                                 model_file: str, backend: str) -> None:
    images = detection_dir(shared_data) / "images"
    proc = edge("run", cli_bundles[model_file], "--source", images, "--backend", backend, "--threads", "1")
    recs = {Path(r["source"]).name: r for r in records(proc.stdout)}
    assert set(recs) == {p.name for p in images.iterdir()}
    for image, reference in expected(shared_data)[model_file].items():
        rec = recs[image]
        assert rec["backend"] == backend and "error" not in rec and "top_k" not in rec, rec
        dets = rec["detections"]
        assert all(set(d) == {"label", "score", "box"} and len(d["box"]) == 4 for d in dets)
        assert rule_violations(dets, reference) == [], (model_file, backend, image)


def test_run_conf_and_iou_override_the_manifest(cli_bundles: dict[str, Path], shared_data: Path) -> None:
    image = detection_dir(shared_data) / "images" / "kite_and_cold.jpg"
    bundle = cli_bundles["yolov8n_qdq.onnx"]
    default = records(edge("run", bundle, "--source", image, "--threads", "1").stdout)[0]["detections"]
    high = records(edge("run", bundle, "--source", image, "--threads", "1", "--conf", "0.8").stdout)[0]["detections"]
    assert any(d["score"] < 0.8 for d in default)
    assert high and all(d["score"] >= 0.8 for d in high)
    assert [d["label"] for d in high] == [d["label"] for d in default if d["score"] >= 0.8]
    # a lower IoU threshold can only suppress more
    strict = records(edge("run", bundle, "--source", image, "--threads", "1", "--iou", "0.05").stdout)[0]["detections"]
    assert len(strict) <= len(default)


def test_bundle_and_inspect_say_what_was_chosen(cli_bundles: dict[str, Path]) -> None:
    ssd = edge("inspect", cli_bundles["ssd_mobilenet_v1_coco.tflite"]).stdout
    assert "head ssd, boxes yxyx normalized" in ssd and "resize squash" in ssd and "90 labels" in ssd
    yolo = edge("inspect", cli_bundles["yolov8n_full_integer_quant.tflite"]).stdout
    assert "head yolo, boxes cxcywh normalized" in yolo and "letterbox pad 114" in yolo
    data = json.loads(edge("inspect", cli_bundles["yolov8n_qdq.onnx"], "--json").stdout)
    post = data["manifest"]["postprocess"]
    assert (post["head"], post["box_format"], post["box_units"]) == ("yolo", "cxcywh", "pixels")
    assert (post["score_threshold"], post["iou_threshold"], post["max_detections"]) == (0.25, 0.45, 100)


def test_inspect_a_bare_model_shows_the_head_it_fits(shared_data: Path) -> None:
    out = edge("inspect", detection_dir(shared_data) / "models" / "yolov8n_qdq.onnx").stdout
    assert "fit head yolo" in out and "80 labels in the model's metadata" in out


def test_flags_override_what_was_read(shared_data: Path, tmp_path: Path) -> None:
    model = detection_dir(shared_data) / "models" / "yolov8n_qdq.onnx"
    labels = detection_dir(shared_data) / "labels" / "coco80.txt"
    edge("bundle", model, "--task", "detection", "--labels", labels, "--box-units", "normalized", "--conf", "0.4",
         "--iou", "0.6", "--max-detections", "7", "--resize-mode", "squash", "-o", tmp_path / "b")
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    post, pre = m["postprocess"], m["preprocess"]
    assert (post["head"], post["box_units"], post["score_threshold"], post["iou_threshold"],
            post["max_detections"]) == ("yolo", "normalized", 0.4, 0.6, 7)
    assert pre["resize_mode"] == "squash" and pre["scale"] == pytest.approx(1 / 255)


def test_a_model_with_no_known_head_is_refused_with_its_shapes(mobilenet_tflite: Path, tmp_path: Path) -> None:
    proc = edge("bundle", mobilenet_tflite, "--task", "detection", "-o", tmp_path / "b", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "[1, 1001]" in proc.stderr and "--head ssd|yolo|yolov5" in proc.stderr
    assert not (tmp_path / "b").exists()


def test_a_head_flag_that_does_not_fit_is_refused(shared_data: Path, tmp_path: Path) -> None:
    model = detection_dir(shared_data) / "models" / "ssd_mobilenet_v1_coco.tflite"
    proc = edge("bundle", model, "--task", "detection", "--head", "yolo", "-o", tmp_path / "b", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "[1, 10, 4]" in proc.stderr and "--head yolo" in proc.stderr
