"""`edge run --save-annotated DIR`: frames written with their detections drawn on them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from edge_runtime import annotation_color, draw_detections, load_image, make_bundle
from tests.support.detection import detection_dir
from tests.support.paths import ROOT, env_with_project


def _edge_pixels(im: np.ndarray, box: list[float]) -> np.ndarray:
    """The pixels on the four edges of ``box`` (its middle halves, away from the label tag)."""
    x1, y1, x2, y2 = (round(v) for v in box)
    x1, y1 = max(x1, 0), max(y1, 0)
    x2, y2 = min(x2, im.shape[1] - 1), min(y2, im.shape[0] - 1)
    qy, qx = (y2 - y1) // 4, (x2 - x1) // 4
    return np.concatenate([im[y1 + qy:y2 - qy, x1], im[y1 + qy:y2 - qy, x2], im[y1, x1 + qx:x2 - qx],
                           im[y2, x1 + qx:x2 - qx]])


def test_draw_detections_outlines_the_box_in_the_label_colour() -> None:
    blank = np.full((200, 300, 3), 255, np.uint8)
    out = np.asarray(draw_detections(blank, [{"label": "cat", "score": 0.9, "box": [50.0, 60.0, 250.0, 180.0]}]))
    color = np.array(annotation_color("cat"))
    edge = _edge_pixels(out, [50.0, 60.0, 250.0, 180.0])
    assert (edge == color).all(axis=1).all()
    assert (out[100:140, 100:200] == 255).all()  # the inside is left alone
    assert (blank == 255).all()  # the frame given is not drawn on
    assert annotation_color("cat") == annotation_color("cat") != annotation_color("dog")


def test_edge_run_save_annotated_draws_each_detection(shared_data: Path, tmp_path: Path) -> None:
    model = detection_dir(shared_data) / "models" / "yolov8n_full_integer_quant.tflite"
    image = detection_dir(shared_data) / "images" / "grace_hopper.bmp"
    bundle = make_bundle(model, tmp_path / "bundle", task="detection")
    out_dir = tmp_path / "annotated"
    proc = subprocess.run([sys.executable, "-m", "edge_cli", "run", str(bundle), "--source", str(image),
                           "--threads", "1", "--save-annotated", str(out_dir)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env_with_project())
    assert proc.returncode == 0, proc.stderr
    rec = next(json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{"))
    dets = rec["detections"]
    assert dets
    written = out_dir / "grace_hopper.png"
    annotated = np.asarray(Image.open(written).convert("RGB"))
    original = load_image(image)
    assert annotated.shape == original.shape
    best = dets[0]
    color = np.array(annotation_color(best["label"]))
    on_edge = (_edge_pixels(annotated, best["box"]) == color).all(axis=1)
    before = (_edge_pixels(original, best["box"]) == color).all(axis=1)
    assert on_edge.mean() > 0.9 and before.mean() < 0.1
    x1, y1, x2, y2 = (round(v) for v in best["box"])
    middle = annotated[(y1 + y2) // 2 - 5:(y1 + y2) // 2 + 5, (x1 + x2) // 2 - 5:(x1 + x2) // 2 + 5]
    assert (middle == original[(y1 + y2) // 2 - 5:(y1 + y2) // 2 + 5, (x1 + x2) // 2 - 5:(x1 + x2) // 2 + 5]).all()
