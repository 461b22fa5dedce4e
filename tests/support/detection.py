"""Detection test data: the shared models, expected.json and its rule (../shared/data/detection/README.md).

A runtime is right when every reference detection scoring >= 0.6 is matched by a detection of the
same label with IoU >= 0.5, and no detection scoring >= 0.7 matches no reference.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: the three shared models, with the backends that can run each
MODELS: dict[str, tuple[str, ...]] = {
    "ssd_mobilenet_v1_coco.tflite": ("litert",),
    "yolov8n_qdq.onnx": ("onnxruntime", "opencv-dnn"),
    "yolov8n_full_integer_quant.tflite": ("litert",),
}

MUST_FIND = 0.6
MUST_BE_REAL = 0.7
MIN_IOU = 0.5


def detection_dir(shared_data: Path) -> Path:
    return shared_data / "detection"


def expected(shared_data: Path) -> dict[str, dict[str, list[list[Any]]]]:
    data: dict[str, dict[str, list[list[Any]]]] = json.loads((detection_dir(shared_data) / "expected.json").read_text())
    return data


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def rule_violations(got: Sequence[dict[str, Any]], reference: Sequence[Sequence[Any]]) -> list[str]:
    """What breaks the README's rule; an empty list when the detections are right."""
    problems = []
    for label, score, *box in reference:
        if score >= MUST_FIND and not any(d["label"] == label and iou(d["box"], box) >= MIN_IOU for d in got):
            problems.append(f"missed reference {label} {score} {box}")
    for d in got:
        if d["score"] >= MUST_BE_REAL and not any(
            d["label"] == label and iou(d["box"], box) >= MIN_IOU for label, _score, *box in reference
        ):
            problems.append(f"detection {d['label']} {d['score']} {d['box']} matches no reference")
    return problems
