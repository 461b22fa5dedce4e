"""Object detection through the Python API: real third-party models and photos (../shared/data/detection),
every backend that can run each model, and the pieces (decode, NMS, letterbox geometry) on their own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime import (
    Geometry,
    ImagePreprocessor,
    Manifest,
    ManifestError,
    Model,
    ModelError,
    Pipeline,
    Postprocess,
    Preprocess,
    Record,
    Sink,
    TensorSpec,
    load_image,
    make_bundle,
    nms,
    open_bundle,
)
from edge_runtime.sources import open_source
from tests.support.detection import MODELS, detection_dir, expected, rule_violations

BACKEND_CASES = [(m, b) for m, backends in MODELS.items() for b in backends]


@pytest.fixture(scope="module")
def det_bundles(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict[str, Path]:
    """Each shared model wrapped with nothing but task="detection": the rest is read from the model."""
    out = tmp_path_factory.mktemp("det-bundles")
    models = detection_dir(shared_data) / "models"
    return {m: make_bundle(models / m, out / m, task="detection") for m in MODELS}


# -- the shared models, end to end -------------------------------------------------------------

@pytest.mark.parametrize(("model_file", "backend"), BACKEND_CASES)
def test_reference_detections_on_every_backend(det_bundles: dict[str, Path], shared_data: Path,
                                               model_file: str, backend: str) -> None:
    images = detection_dir(shared_data) / "images"
    with Model.load(det_bundles[model_file], backend=backend, threads=1) as model:
        assert model.backend_name == backend
        for image, reference in expected(shared_data)[model_file].items():
            pred = model.predict_file(images / image)
            assert pred.detections is not None and pred.top_k is None
            assert rule_violations(pred.detections, reference) == [], (model_file, backend, image)
            scores = [d["score"] for d in pred.detections]
            assert scores == sorted(scores, reverse=True)
            frame = load_image(images / image)
            h, w = frame.shape[:2]
            for d in pred.detections:
                x1, y1, x2, y2 = d["box"]
                assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h


def test_what_the_bundle_read_from_each_model(det_bundles: dict[str, Path]) -> None:
    def manifest(m: str) -> Manifest:
        b = open_bundle(det_bundles[m])
        try:
            assert len(b.labels()) == (90 if m.startswith("ssd") else 80)
            return b.manifest
        finally:
            b.close()

    ssd = manifest("ssd_mobilenet_v1_coco.tflite")
    post = ssd.postprocess
    assert (post.head, post.box_format, post.box_units) == ("ssd", "yxyx", "normalized")
    assert ssd.preprocess.resize_mode == "squash"
    onnx = manifest("yolov8n_qdq.onnx")
    assert (onnx.postprocess.head, onnx.postprocess.box_format, onnx.postprocess.box_units) == ("yolo", "cxcywh",
                                                                                                  "pixels")
    assert (onnx.preprocess.resize_mode, onnx.preprocess.pad_value) == ("letterbox", 114)
    assert onnx.preprocess.scale == pytest.approx(1 / 255)
    tfl = manifest("yolov8n_full_integer_quant.tflite")
    assert (tfl.postprocess.head, tfl.postprocess.box_units) == ("yolo", "normalized")
    assert tfl.preprocess.resize_mode == "letterbox" and tfl.quantization == "int8"


def test_onnx_backends_agree(det_bundles: dict[str, Path], shared_data: Path) -> None:
    image = detection_dir(shared_data) / "images" / "kite_and_cold.jpg"
    results = []
    for backend in MODELS["yolov8n_qdq.onnx"]:
        with Model.load(det_bundles["yolov8n_qdq.onnx"], backend=backend, threads=1) as model:
            dets = model.predict_file(image).detections
            assert dets is not None
            results.append([d for d in dets if d["score"] >= 0.5])
    a, b = results
    assert [d["label"] for d in a] == [d["label"] for d in b]
    for da, db in zip(a, b, strict=True):
        assert da["score"] == pytest.approx(db["score"], abs=0.05)  # int8 kernels round differently
        assert np.allclose(da["box"], db["box"], atol=3.0)


def test_pipeline_maps_boxes_back_with_process_decoding(det_bundles: dict[str, Path], shared_data: Path) -> None:
    """Frames decoded in worker processes carry their size back, so their boxes land on the frame too."""
    images = detection_dir(shared_data) / "images"
    got: list[Record] = []

    class Collect(Sink):
        def write(self, record: Record) -> None:
            got.append(record)

        def close(self) -> None:
            pass

    reference = expected(shared_data)["yolov8n_full_integer_quant.tflite"]
    with Model.load(det_bundles["yolov8n_full_integer_quant.tflite"], threads=1) as model:
        src = open_source(str(images))
        Pipeline(model, src, [Collect()], decode="process", workers=1).run()
        src.close()
    by_name = {Path(r["source"]).name: r for r in got}
    assert set(by_name) == {p.name for p in images.iterdir()}
    for name, refs in reference.items():
        rec = by_name[name]
        assert "error" not in rec, rec
        assert rule_violations(rec["detections"], refs) == [], name


def test_run_thresholds_can_be_changed_on_a_loaded_model(det_bundles: dict[str, Path], shared_data: Path) -> None:
    image = detection_dir(shared_data) / "images" / "kite_and_cold.jpg"
    with Model.load(det_bundles["yolov8n_qdq.onnx"], threads=1) as model:
        every = model.predict_file(image).detections
        model.score_threshold = 0.8
        high = model.predict_file(image).detections
        model.score_threshold, model.max_detections = 0.25, 2
        two = model.predict_file(image).detections
    assert every is not None and high is not None and two is not None
    assert len(every) > len(high) > 0 and all(d["score"] >= 0.8 for d in high)
    assert two == every[:2]


# -- refusing what cannot work --------------------------------------------------------------------

def test_unknown_head_is_refused_with_the_shapes(mobilenet_tflite: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError) as err:
        make_bundle(mobilenet_tflite, tmp_path / "b", task="detection")
    msg = str(err.value)
    assert "[1, 1001]" in msg and "--head" in msg and "ssd" in msg and "yolo" in msg
    assert not (tmp_path / "b").exists()


def test_a_head_that_does_not_fit_is_refused(shared_data: Path, tmp_path: Path) -> None:
    model = detection_dir(shared_data) / "models" / "yolov8n_qdq.onnx"
    with pytest.raises(ModelError, match=r"\[1, 84, 8400\].*do not fit --head ssd"):
        make_bundle(model, tmp_path / "b", task="detection", postprocess={"head": "ssd"})


def test_manifest_validation_of_detection_fields(det_bundles: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="iou_threshold"):
        Postprocess(head="yolo", iou_threshold=1.5)
    with pytest.raises(ValueError, match="score_threshold"):
        Postprocess(head="yolo", score_threshold=-0.1)
    with pytest.raises(ValueError, match="box_format"):
        Postprocess(head="yolo", box_format="xywh")  # type: ignore[arg-type]
    path = det_bundles["yolov8n_qdq.onnx"] / "manifest.json"
    good = Manifest.from_json(path.read_bytes())
    data: dict[str, Any] = good.to_dict(json=True)
    data["postprocess"]["head"] = None
    with pytest.raises(ValueError, match="needs postprocess.head"):
        Manifest.from_dict(data)
    data["postprocess"]["head"] = "ssd"
    with pytest.raises(ValueError, match=r"output0 \[1, 84, 8400\]"):
        Manifest.from_dict(data)


def test_a_tampered_head_is_refused_when_the_bundle_opens(det_bundles: dict[str, Path], tmp_path: Path) -> None:
    import json
    import shutil

    b = tmp_path / "b"
    shutil.copytree(det_bundles["yolov8n_qdq.onnx"], b)
    data = json.loads((b / "manifest.json").read_text())
    data["postprocess"]["head"] = "ssd"
    (b / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="do not fit postprocess.head"):
        open_bundle(b)


# -- bad numbers never crash a frame ---------------------------------------------------------------

def _yolo_output(rows: list[tuple[float, float, float, float, int, float]], classes: int = 80) -> np.ndarray:
    out = np.zeros((1, 4 + classes, 8400), dtype=np.float32)
    for i, (cx, cy, w, h, c, s) in enumerate(rows):
        out[0, :4, i] = (cx, cy, w, h)
        out[0, 4 + c, i] = s
    return out


def test_nan_and_inf_are_dropped_and_nothing_is_an_empty_list(det_bundles: dict[str, Path]) -> None:
    with Model.load(det_bundles["yolov8n_qdq.onnx"], backend="onnxruntime", threads=1) as model:
        out = _yolo_output([(320, 320, 100, 100, 0, 0.9), (100, 100, 50, 50, 15, float("nan")),
                            (500, 500, 20, 20, 33, float("inf")), (200, 200, 40, 40, 2, 0.8)])
        out[0, 0, 3] = np.nan  # a box with a NaN corner
        dets = model.postprocess([out], image_size=(640, 640)).detections
        assert dets is not None
        assert [d["label"] for d in dets] == ["person"]
        assert dets[0]["box"] == [270.0, 270.0, 370.0, 370.0]
        assert model.postprocess([np.zeros((1, 84, 8400), np.float32)], image_size=(640, 480)).detections == []
        assert model.postprocess([np.full((1, 84, 8400), np.nan, np.float32)], image_size=(64, 48)).detections == []


def test_ssd_nan_scores_and_a_nan_count_do_not_crash(det_bundles: dict[str, Path]) -> None:
    with Model.load(det_bundles["ssd_mobilenet_v1_coco.tflite"], threads=1) as model:
        boxes = np.array([[[0.1, 0.1, 0.5, 0.5], [0.2, 0.6, 0.9, 0.9], [np.inf, 0, 1, 1]]], np.float32)
        classes = np.array([[16, 0, 2]], np.float32)
        scores = np.array([[np.nan, 0.8, 0.9]], np.float32)
        count = np.array([np.nan], np.float32)
        dets = model.postprocess([boxes, classes, scores, count], image_size=(1000, 500)).detections
    assert dets == [{"label": "person", "score": 0.8, "box": [600.0, 100.0, 900.0, 450.0]}]


# -- NMS and geometry on their own ----------------------------------------------------------------

def test_nms_suppresses_overlaps_of_one_class_and_keeps_two_classes() -> None:
    boxes = np.array([[0, 0, 100, 100], [5, 5, 105, 105], [0, 0, 100, 100], [300, 300, 400, 400]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    same = nms(boxes, scores, np.array([0, 0, 0, 0]), iou_threshold=0.45, max_detections=100)
    assert same.tolist() == [0, 3]
    two = nms(boxes, scores, np.array([0, 0, 1, 0]), iou_threshold=0.45, max_detections=100)
    assert two.tolist() == [0, 2, 3]
    loose = nms(boxes, scores, np.zeros(4, int), iou_threshold=0.99, max_detections=100)
    assert loose.tolist() == [0, 1, 3]  # 0 and 1 overlap with IoU 0.82 < 0.99; 2 is identical to 0
    assert nms(boxes, scores, np.zeros(4, int), iou_threshold=0.45, max_detections=1).tolist() == [0]
    assert nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), iou_threshold=0.5, max_detections=5).tolist() == []


def test_nms_is_best_first_whatever_the_input_order() -> None:
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 600, (200, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(10, 60, (200, 2))], axis=1)
    scores = rng.uniform(0, 1, 200)
    classes = rng.integers(0, 3, 200)
    keep = nms(boxes, scores, classes, iou_threshold=0.5, max_detections=1000)
    assert np.all(np.diff(scores[keep]) <= 0)
    for c in range(3):  # no two kept boxes of one class overlap beyond the threshold
        kept = boxes[keep][classes[keep] == c]
        for i in range(len(kept)):
            for j in range(i + 1, len(kept)):
                a, b = kept[i], kept[j]
                ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
                iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
                inter = ix * iy
                union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
                assert inter / union <= 0.5


def _spec(w: int, h: int) -> TensorSpec:
    return TensorSpec(name="x", shape=[1, h, w, 3], dtype="uint8", layout="NHWC")


def test_letterbox_inverse_maps_a_known_box_back_exactly() -> None:
    image = np.zeros((500, 1000, 3), np.uint8)
    image[200:400, 100:300] = 255  # the box [100, 200, 300, 400] in the 1000x500 frame
    nearest = Preprocess(resize_mode="letterbox", pad_value=114, interpolation="nearest")
    pre = ImagePreprocessor(nearest, _spec(200, 200))
    x = pre(image)[0]
    geo = pre.geometry(1000, 500)
    assert geo == Geometry(1000, 500, 0.2, 0.2, 0.0, 50.0)
    assert (x[:50] == 114).all() and (x[150:] == 114).all()  # centred, gray 114 above and below
    ys, xs = np.nonzero(x[..., 0] == 255)
    found = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], float)
    assert found.tolist() == [[20.0, 90.0, 60.0, 130.0]]
    assert geo.to_source(found).tolist() == [[100.0, 200.0, 300.0, 400.0]]
    round_trip = geo.to_source(geo.to_input(np.array([[1.5, 2.5, 999.0, 499.0]])))
    assert np.allclose(round_trip, [[1.5, 2.5, 999.0, 499.0]], rtol=0, atol=1e-9)


def test_geometry_of_squash_and_center_crop_and_clipping() -> None:
    squash = ImagePreprocessor(Preprocess(resize_mode="squash"), _spec(300, 300)).geometry(600, 150)
    assert squash.to_source(np.array([[30, 30, 150, 300]], float)).tolist() == [[60.0, 15.0, 300.0, 150.0]]
    crop = ImagePreprocessor(Preprocess(resize_mode="center-crop"), _spec(100, 100)).geometry(400, 200)
    # scaled to 200x100, 50 px cropped off the left
    assert crop == Geometry(400, 200, 0.5, 0.5, -50.0, 0.0)
    assert crop.to_source(np.array([[0, 0, 100, 100]], float)).tolist() == [[100.0, 0.0, 300.0, 200.0]]
    # boxes reaching outside the frame (into the letterbox border) are clipped to it
    lb = ImagePreprocessor(Preprocess(resize_mode="letterbox"), _spec(200, 200)).geometry(1000, 500)
    assert lb.to_source(np.array([[-10, 0, 210, 200]], float)).tolist() == [[0.0, 0.0, 1000.0, 500.0]]



def test_the_agent_health_check_passes_a_detector(shared_data: Path, tmp_path: Path) -> None:
    """A detection bundle with samples passes a device's health check, a sample with nothing in it too."""
    from PIL import Image

    from edge_device.agent import ModelOptions, health_check

    blank = tmp_path / "blank.png"
    Image.new("RGB", (320, 240), (90, 90, 90)).save(blank)
    model = detection_dir(shared_data) / "models" / "yolov8n_full_integer_quant.tflite"
    kite = detection_dir(shared_data) / "images" / "kite_and_cold.jpg"
    path = make_bundle(model, tmp_path / "b", task="detection", sample_files=[kite, blank])
    bundle = open_bundle(path)
    try:
        loaded = health_check(bundle, ModelOptions(threads=1))
        loaded.close()
    finally:
        bundle.close()


def test_yolov5_head_multiplies_objectness_and_guessing_heads() -> None:
    from edge_runtime import guess_head
    from edge_runtime._detection import decode

    out = np.zeros((1, 100, 5 + 3), np.float32)
    out[0, 0] = [50, 40, 20, 10, 0.9, 0.1, 0.8, 0.1]  # objectness 0.9 x class 1 at 0.8 = 0.72
    out[0, 1] = [10, 10, 4, 4, 0.2, 0.0, 0.0, 0.9]  # 0.18: under the threshold
    cand = decode("yolov5", [out], box_format="cxcywh", box_units="pixels", input_size=(100, 100),
                  score_threshold=0.25)
    assert cand.classes.tolist() == [1]
    assert cand.scores.tolist() == pytest.approx([0.72])
    assert cand.boxes.tolist() == [[40.0, 35.0, 60.0, 45.0]]
    assert guess_head([[1, 84, 8400]]) == "yolo"
    assert guess_head([[1, 25200, 85]]) == "yolov5"
    assert guess_head([[1, 8400, 84]], classes=80) == "yolo"  # the metadata's class count settles it
    assert guess_head([[1, 10, 4], [1, 10], [1, 10], [1]]) == "ssd"
    assert guess_head([[1, 1001]]) is None


def test_ssd_outputs_in_another_order_are_recognised() -> None:
    """TF2 exports list scores before classes; the values tell them apart."""
    from edge_runtime._detection import decode

    boxes = np.array([[[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]], np.float32)
    scores = np.array([[0.9, 0.6]], np.float32)
    classes = np.array([[3.0, 7.0]], np.float32)
    count = np.array([2.0], np.float32)
    cand = decode("ssd", [scores, boxes, count, classes], box_format="yxyx", box_units="normalized",
                  input_size=(300, 300), score_threshold=0.5)
    assert cand.classes.tolist() == [3, 7] and cand.scores.tolist() == pytest.approx([0.9, 0.6])
    assert cand.boxes.tolist() == [[0.0, 0.0, 150.0, 150.0], [150.0, 150.0, 300.0, 300.0]]


def test_an_ssd_label_map_with_its_background_line(shared_data: Path, tmp_path: Path) -> None:
    """A TensorFlow label map given with --labels starts with "???": SSD class 0 is its second line."""
    labels = (detection_dir(shared_data) / "labels" / "coco90_labelmap.txt").read_text().splitlines()
    model = detection_dir(shared_data) / "models" / "ssd_mobilenet_v1_coco.tflite"
    b = open_bundle(make_bundle(model, tmp_path / "b", task="detection", labels=["???", *labels]))
    try:
        assert b.labels() == labels
    finally:
        b.close()
