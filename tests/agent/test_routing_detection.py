"""Hybrid routing of a detection model (the real YOLOv8n ONNX on the shared photos): the cascade asks
the cloud when the best local detection scores under the threshold or when nothing is found; the
cloud's detections become the record; an answer that is not a detector's is a cloud error and the
local detections stand. The cloud here is our own CloudAnswer interface, answering from a table."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from edge_device.agent import Router, RouterConfig
from edge_runtime import Model, Pipeline, Record, make_bundle
from edge_runtime.sources import open_source
from tests.support.detection import detection_dir

RECORD_KEYS = {"ts", "source", "frame", "detections", "latency_ms", "model", "backend", "path", "route"}
CLOUD_DETS = [{"label": "person", "score": 0.6, "box": [1.0, 2.0, 30.0, 40.0]},
              {"label": "kite", "score": 0.97, "box": [594.0, 81.0, 670.0, 151.0]}]


class TableCloud:
    """A cloud classifier (the router's CloudAnswer protocol) whose answer the test sets."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.calls: list[tuple[bytes, str]] = []
        self._lock = threading.Lock()

    def __call__(self, data: bytes, content_type: str, *, deadline: float) -> dict[str, Any]:
        assert deadline > 0
        with self._lock:
            self.calls.append((data, content_type))
        return self.answer


@pytest.fixture(scope="module")
def yolo(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    out = tmp_path_factory.mktemp("route-det") / "bundle"
    return make_bundle(detection_dir(shared_data) / "models" / "yolov8n_qdq.onnx", out, task="detection")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """kite_and_cold (best: kite 0.89), grace_hopper (person 0.92) and a plain grey frame (nothing)."""
    d = tmp_path_factory.mktemp("route-images")
    src = detection_dir(shared_data) / "images"
    (d / "1_kite.jpg").symlink_to(src / "kite_and_cold.jpg")
    (d / "2_grace.bmp").symlink_to(src / "grace_hopper.bmp")
    Image.fromarray(np.full((240, 320, 3), 128, np.uint8)).save(d / "3_grey.png")
    return d


def route(bundle: Path, images: Path, cloud: TableCloud, **config: Any) -> dict[str, Record]:
    router = Router(RouterConfig(**config), cloud)
    out: list[Record] = []
    try:
        with Model.load(bundle, threads=1) as model:
            Pipeline(model, open_source(str(images)), [], predictor=router, on_record=out.append).run()
    finally:
        router.close()
    return {Path(r["source"]).name: r for r in out}


def test_cascade_asks_the_cloud_below_the_threshold_and_when_nothing_is_found(yolo: Path, images: Path) -> None:
    cloud = TableCloud({"model": {"name": "yolo-big", "version": 7}, "detections": CLOUD_DETS})
    recs = route(yolo, images, cloud, mode="cascade", threshold=0.9)
    kite, grace, grey = recs["1_kite.jpg"], recs["2_grace.bmp"], recs["3_grey.png"]
    # grace_hopper's person (0.92) is sure enough: local, no cloud call for it
    assert (grace["path"], grace["route"]) == ("local", "confident")
    assert grace["detections"][0]["label"] == "person" and grace["detections"][0]["score"] >= 0.9
    # the kite (0.89) is under 0.9, the grey frame has nothing: both asked the cloud
    for rec, local_score in ((kite, pytest.approx(0.89, abs=0.01)), (grey, 0.0)):
        assert (rec["path"], rec["route"], rec["backend"]) == ("cloud", "below-threshold", "cloud")
        assert rec["model"] == {"name": "yolo-big", "version": 7}
        assert rec["local_score"] == local_score
        assert [d["label"] for d in rec["detections"]] == ["kite", "person"]  # best first
        assert rec["detections"][0]["box"] == [594.0, 81.0, 670.0, 151.0]
        assert "top_k" not in rec and set(rec) >= RECORD_KEYS
    assert set(grace) >= RECORD_KEYS and "top_k" not in grace
    # the cloud saw the frames asked about, the JPEG file as it is
    assert len(cloud.calls) == 2
    kite_file = (images / "1_kite.jpg").read_bytes()
    assert (kite_file, "image/jpeg") in cloud.calls


def test_a_low_threshold_keeps_every_frame_with_a_detection_local(yolo: Path, images: Path) -> None:
    cloud = TableCloud({"model": {"name": "yolo-big", "version": 7}, "detections": []})
    recs = route(yolo, images, cloud, mode="cascade", threshold=0.5)
    assert {n: r["route"] for n, r in recs.items()} == {
        "1_kite.jpg": "confident", "2_grace.bmp": "confident", "3_grey.png": "below-threshold"}
    assert recs["3_grey.png"]["detections"] == [] and recs["3_grey.png"]["path"] == "cloud"
    assert len(cloud.calls) == 1


@pytest.mark.parametrize("answer", [
    {"model": {"name": "clf", "version": 1}, "top_k": [{"label": "kite", "score": 0.99}]},  # a classifier
    {"model": {"name": "yolo-big", "version": 7}, "detections": [{"label": "kite", "score": 0.9, "box": [1, 2, 3]}]},
    {"model": {"name": "yolo-big", "version": 7}, "detections": [{"label": "kite", "score": "nan",
                                                                 "box": [1, 2, 3, 4]}]},
    {"model": {"name": "yolo-big", "version": 7}, "detections": "kite"},
])
def test_an_answer_that_is_not_a_detectors_keeps_the_local_detections(yolo: Path, images: Path,
                                                                     answer: dict[str, Any]) -> None:
    cloud = TableCloud(answer)
    recs = route(yolo, images, cloud, mode="cascade", threshold=0.9)
    kite = recs["1_kite.jpg"]
    assert (kite["path"], kite["route"]) == ("local", "cloud-error")
    assert kite["backend"] != "cloud" and kite["model"]["name"] != "yolo-big"
    labels = [d["label"] for d in kite["detections"]]
    assert labels[:2] == ["kite", "person"] and "top_k" not in kite


def test_online_mode_takes_the_clouds_detections(yolo: Path, images: Path) -> None:
    cloud = TableCloud({"model": {"name": "yolo-big", "version": 7}, "detections": CLOUD_DETS})
    recs = route(yolo, images, cloud, mode="online", deadline_ms=30_000)
    assert {r["route"] for r in recs.values()} == {"cloud-ok"}
    assert all(r["detections"][0]["score"] == 0.97 and set(r) >= RECORD_KEYS for r in recs.values())
    assert len(cloud.calls) == 3
