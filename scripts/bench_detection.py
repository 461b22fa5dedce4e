#!/usr/bin/env python3
"""Detection benchmarks: the runtime's whole predict against the raw library doing the same work,
same image, same run, interleaved (one call of each per round, so load from other processes on a
shared machine hits both alike).

1. YOLOv8n QDQ ONNX on onnxruntime: ``Model.predict`` (letterbox, inference, decode, per-class NMS,
   boxes back to the frame) vs onnxruntime's ``session.run`` with a straightforward NumPy
   letterbox, decode and NMS written here. Also: decode + NMS time as a fraction of inference.
2. SSD MobileNet v1 TFLite on LiteRT: ``Model.predict`` vs the raw interpreter (squash resize,
   ``set_tensor``, ``invoke``, reading its four outputs and keeping the boxes above the threshold).

Both paths must find the same objects (checked). Prints a table, then one JSON object. Usage:
    python scripts/bench_detection.py [--runs 100] [--threads 2] [--image kite_and_cold.jpg]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DET = ROOT.parent / "shared" / "data" / "detection"

from edge_runtime import Model, load_image, make_bundle  # noqa: E402

CONF, IOU, MAX_DET = 0.25, 0.45, 100


# -- the straightforward versions a user would write --------------------------------------------

def letterbox(image: np.ndarray, size: int = 640) -> tuple[np.ndarray, float, float, float]:
    h, w = image.shape[:2]
    r = min(size / w, size / h)
    nw, nh = round(w * r), round(h * r)
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR))
    canvas = np.full((size, size, 3), 114, np.uint8)
    px, py = (size - nw) // 2, (size - nh) // 2
    canvas[py:py + nh, px:px + nw] = resized
    x = canvas.astype(np.float32).transpose(2, 0, 1)[None] / 255.0
    return np.ascontiguousarray(x), r, px, py


def nms_numpy(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    order = scores.argsort()[::-1]
    keep: list[int] = []
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order.size:
        i = int(order[0])
        keep.append(i)
        xx1 = np.maximum(boxes[i, 0], boxes[order[1:], 0])
        yy1 = np.maximum(boxes[i, 1], boxes[order[1:], 1])
        xx2 = np.minimum(boxes[i, 2], boxes[order[1:], 2])
        yy2 = np.minimum(boxes[i, 3], boxes[order[1:], 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        ov = inter / (areas[i] + areas[order[1:]] - inter + 1e-9)
        order = order[1:][ov <= iou]
    return keep


Found = list[tuple[int, float, list[float]]]


def yolo_decode(out: np.ndarray, r: float, px: float, py: float, w: int, h: int) -> Found:
    a = out[0].T  # [8400, 84]
    cls_scores = a[:, 4:]
    cls = cls_scores.argmax(1)
    best = cls_scores[np.arange(len(a)), cls]
    m = best >= CONF
    a, cls, best = a[m], cls[m], best[m]
    xyxy = np.stack([a[:, 0] - a[:, 2] / 2, a[:, 1] - a[:, 3] / 2, a[:, 0] + a[:, 2] / 2, a[:, 1] + a[:, 3] / 2], 1)
    dets: list[tuple[int, float, list[float]]] = []
    for c in np.unique(cls):
        idx = np.flatnonzero(cls == c)
        for k in nms_numpy(xyxy[idx], best[idx], IOU):
            b = xyxy[idx[k]]
            box = [float(np.clip((b[0] - px) / r, 0, w)), float(np.clip((b[1] - py) / r, 0, h)),
                   float(np.clip((b[2] - px) / r, 0, w)), float(np.clip((b[3] - py) / r, 0, h))]
            dets.append((int(c), float(best[idx[k]]), box))
    dets.sort(key=lambda d: -d[1])
    return dets[:MAX_DET]


# -- measuring ------------------------------------------------------------------------------------

def interleaved(fns: dict[str, Callable[[], Any]], runs: int, warmup: int = 5) -> dict[str, list[float]]:
    for f in fns.values():
        for _ in range(warmup):
            f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for i in range(runs):
        for k in (names if i % 2 == 0 else names[::-1]):  # alternate who goes first
            t0 = time.perf_counter()
            fns[k]()
            times[k].append((time.perf_counter() - t0) * 1000)
    return times


def p50(v: list[float]) -> float:
    return statistics.median(v)


def yolo(image_path: Path, runs: int, threads: int, work: Path) -> dict[str, Any]:
    import onnxruntime as ort

    model_file = DET / "models" / "yolov8n_qdq.onnx"
    bundle = make_bundle(model_file, work / "yolo", task="detection")
    model = Model.load(bundle, backend="onnxruntime", threads=threads)
    image = load_image(image_path)
    h, w = image.shape[:2]
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model_file), so, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name

    def raw() -> Found:
        x, r, px, py = letterbox(image)
        out = sess.run(None, {in_name: x})[0]
        return yolo_decode(out, r, px, py, w, h)

    # same objects from both
    ours = model.predict(image).detections or []
    theirs = raw()
    labels = model.labels
    same = sorted(d["label"] for d in ours) == sorted(labels[c] for c, _, _ in theirs)

    # split of the runtime's own time: preprocess, inference, decode + NMS
    tensors = model.preprocess(image)
    outs = model.infer(tensors)
    raw_out = sess.run(None, {in_name: tensors[0]})[0]
    split = interleaved({
        "preprocess": lambda: model.preprocess(image),
        "raw_letterbox": lambda: letterbox(image),
        "inference": lambda: model.infer(tensors),
        "decode_nms": lambda: model.postprocess(outs, image_size=(w, h)),
        "raw_decode_nms": lambda: yolo_decode(raw_out, 1.0, 0, 0, w, h),
    }, max(10, runs // 2))
    t = interleaved({"runtime": lambda: model.predict(image), "raw": raw}, runs)
    model.close()
    res = {
        "model": "yolov8n_qdq.onnx", "backend": "onnxruntime", "threads": threads, "runs": runs,
        "image": image_path.name, "detections": len(ours), "same_objects": same,
        "runtime_p50_ms": round(p50(t["runtime"]), 3), "raw_p50_ms": round(p50(t["raw"]), 3),
        "ratio_p50": round(p50(t["runtime"]) / p50(t["raw"]), 3),
        "preprocess_p50_ms": round(p50(split["preprocess"]), 3),
        "inference_p50_ms": round(p50(split["inference"]), 3),
        "decode_nms_p50_ms": round(p50(split["decode_nms"]), 3),
        "raw_decode_nms_p50_ms": round(p50(split["raw_decode_nms"]), 3),
        "raw_letterbox_p50_ms": round(p50(split["raw_letterbox"]), 3),
    }
    res["decode_nms_fraction_of_inference"] = round(res["decode_nms_p50_ms"] / res["inference_p50_ms"], 4)
    return res


def ssd(image_path: Path, runs: int, threads: int, work: Path) -> dict[str, Any]:
    from ai_edge_litert.interpreter import Interpreter

    model_file = DET / "models" / "ssd_mobilenet_v1_coco.tflite"
    bundle = make_bundle(model_file, work / "ssd", task="detection",
                         labels=(DET / "labels" / "coco90_labelmap.txt").read_text().splitlines())
    model = Model.load(bundle, backend="litert", threads=threads)
    image = load_image(image_path)
    h, w = image.shape[:2]
    it = Interpreter(model_path=str(model_file), num_threads=threads)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    outs = it.get_output_details()
    size = (int(inp["shape"][2]), int(inp["shape"][1]))
    # TF's order: boxes, classes, scores, count (checked by shape: boxes [1,N,4], count [1])
    by_shape = sorted(outs, key=lambda o: (len(o["shape"]) != 3, o["index"]))
    boxes_i = by_shape[0]["index"]
    count_i = next(o["index"] for o in outs if int(np.prod(o["shape"])) == 1)
    rest = [o["index"] for o in outs if o["index"] not in (boxes_i, count_i)]

    def raw() -> Found:
        x = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR), dtype=np.uint8)[None]
        it.set_tensor(inp["index"], x)
        it.invoke()
        boxes = it.get_tensor(boxes_i)[0]
        a, b = it.get_tensor(rest[0])[0], it.get_tensor(rest[1])[0]
        classes, scores = (a, b) if np.all(a == np.rint(a)) else (b, a)
        n = int(it.get_tensor(count_i).reshape(-1)[0])
        return [(int(classes[i]), float(scores[i]),
                 [float(boxes[i, 1] * w), float(boxes[i, 0] * h), float(boxes[i, 3] * w), float(boxes[i, 2] * h)])
                for i in range(n) if scores[i] >= model.score_threshold]

    def invoke_only() -> None:
        it.invoke()

    ours = model.predict(image).detections or []
    theirs = raw()
    labels = model.labels
    same = sorted(d["label"] for d in ours) == sorted(labels[c] for c, _, _ in theirs)
    t = interleaved({"runtime": lambda: model.predict(image), "raw": raw, "invoke": invoke_only}, runs)
    model.close()
    return {"model": "ssd_mobilenet_v1_coco.tflite", "backend": "litert", "threads": threads, "runs": runs,
            "image": image_path.name, "detections": len(ours), "same_objects": same,
            "runtime_p50_ms": round(p50(t["runtime"]), 3), "raw_p50_ms": round(p50(t["raw"]), 3),
            "invoke_only_p50_ms": round(p50(t["invoke"]), 3),
            "ratio_p50": round(p50(t["runtime"]) / p50(t["raw"]), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--image", default="kite_and_cold.jpg", help="a photo in the shared detection images")
    args = ap.parse_args()
    image = DET / "images" / args.image
    with tempfile.TemporaryDirectory(prefix="bench-det-") as tmp:
        y = yolo(image, args.runs, args.threads, Path(tmp))
        s = ssd(image, args.runs, args.threads, Path(tmp))
    rows = [
        ("YOLOv8n QDQ ONNX, onnxruntime", y["runtime_p50_ms"], y["raw_p50_ms"], y["ratio_p50"], y["same_objects"]),
        ("SSD MobileNet v1 TFLite, LiteRT", s["runtime_p50_ms"], s["raw_p50_ms"], s["ratio_p50"], s["same_objects"]),
    ]
    print(f"{'model':34} {'runtime p50 ms':>15} {'raw p50 ms':>11} {'ratio':>7}  same objects")
    for name, rt, raw, ratio, same in rows:
        print(f"{name:34} {rt:15.2f} {raw:11.2f} {ratio:7.3f}  {same}")
    print(f"YOLOv8n split (runtime): preprocess {y['preprocess_p50_ms']:.2f} ms (the letterbox written here: "
          f"{y['raw_letterbox_p50_ms']:.2f} ms), inference {y['inference_p50_ms']:.2f} ms, "
          f"decode+NMS {y['decode_nms_p50_ms']:.3f} ms = {100 * y['decode_nms_fraction_of_inference']:.2f} % of "
          f"inference (the NumPy decode+NMS written here: {y['raw_decode_nms_p50_ms']:.3f} ms)")
    print(f"SSD: invoke alone p50 {s['invoke_only_p50_ms']:.2f} ms")
    print(json.dumps({"yolo_onnx": y, "ssd_tflite": s, "cpu_count": os.cpu_count()}))


if __name__ == "__main__":
    main()
