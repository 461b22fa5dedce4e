#!/usr/bin/env python
"""Benchmark the converters' output against float and against the source library, side by side.

1. EfficientNet-Lite0 (real pretrained weights): int8 vs float, for ONNX (onnxruntime) and TFLite
   (LiteRT): file size, p50 latency measured interleaved in one run on the raw library, and the
   top-1 of every variant on the four reference images in ../shared/data/images.
2. scikit-learn on one row: the runtime (`Model.predict`, ONNX on onnxruntime) vs
   `estimator.predict_proba`, for a random forest and a logistic regression, labels compared on
   the whole held-out split.

Prints a table and, with --json, the numbers as JSON. No thresholds are asserted here: the ratios
are the result.

    python scripts/bench_converters.py [--runs 200] [--threads 2] [--json]
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
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
IMAGES = ("cat.png", "grace_hopper.png", "sunflower.png", "potato_chips.png")


def interleaved_p50(fns: list[Callable[[], object]], runs: int, warmup: int = 10) -> list[float]:
    for f in fns:
        for _ in range(warmup):
            f()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for i, f in enumerate(fns):
            t0 = time.perf_counter()
            f()
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) * 1000 for t in times]


def calibration_dirs() -> list[Path]:
    import skimage
    import sklearn

    return [SHARED / "images" / "leaves", Path(skimage.__file__).parent / "data",
            Path(sklearn.__file__).parent / "datasets" / "images"]


def raw_runner(model_file: Path, fmt: str, threads: int) -> Callable[[], object]:
    """The library itself on the model file, on a zero input of the model's own type."""
    if fmt == "onnx":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(model_file), so, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        x = np.zeros([d if isinstance(d, int) else 1 for d in inp.shape], dtype=np.float32)
        return lambda: sess.run(None, {inp.name: x})
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(model_file), num_threads=threads)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], np.zeros(d["shape"], dtype=d["dtype"]))
    return it.invoke


def bench_efficientnet(runs: int, threads: int, work: Path) -> list[dict[str, Any]]:
    from converters import export_efficientnet_lite0
    from edge_runtime import Model

    rows = []
    for fmt in ("onnx", "tflite"):
        report = export_efficientnet_lite0(
            work / fmt, to=fmt, quantize=["int8"], labels=SHARED / "labels" / "imagenet_labels.txt",
            calibration=calibration_dirs(), eval=SHARED / "images", latency_runs=5, threads=threads)
        f, q = report.variant("float"), report.variant("int8")
        top1 = {}
        for v in (f, q):
            with Model.load(v.bundle, threads=threads) as m:
                top1[v.variant] = [m.predict_file(SHARED / "images" / name).label for name in IMAGES]
        model_file = "model.onnx" if fmt == "onnx" else "model.tflite"
        p50 = interleaved_p50([raw_runner(Path(v.bundle) / model_file, fmt, threads) for v in (f, q)], runs)
        rows.append({
            "model": "EfficientNet-Lite0", "format": fmt, "backend": report.backend, "threads": threads,
            "float_bytes": f.size_bytes, "int8_bytes": q.size_bytes,
            "size_ratio": round((q.size_bytes or 0) / (f.size_bytes or 1), 3),
            "float_p50_ms": round(p50[0], 3), "int8_p50_ms": round(p50[1], 3),
            "latency_ratio": round(p50[1] / p50[0], 3),
            "float_top1": top1["float"], "int8_top1": top1["int8"],
            "top1_kept": top1["float"] == top1["int8"],
        })
    return rows


def bench_sklearn(runs: int, threads: int, work: Path) -> list[dict[str, Any]]:
    import joblib
    import onnxruntime as ort
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    from converters import convert
    from edge_runtime import Model

    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, _ = train_test_split(x, y, test_size=0.3, random_state=0)
    rows = []
    for name, est in (("random forest (100 trees)", RandomForestClassifier(n_estimators=100, random_state=0)),
                      ("logistic regression", LogisticRegression(max_iter=3000))):
        est.fit(xtr, ytr)
        path = work / f"{name.split()[0]}.joblib"
        joblib.dump(est, path)
        report = convert(path, work / f"{path.stem}-out", to="onnx", latency_runs=5, threads=1, trust_pickle=True)
        row = xte[:1]
        bundle = Path(report.variant("float").bundle)
        sess = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
        row32 = row.astype(np.float32)
        with Model.load(bundle, threads=1) as m:
            labels = [m.predict(r).label for r in xte]
            same = labels == [str(c) for c in est.predict(xte)]
            p50 = interleaved_p50([partial(m.predict, row[0]), partial(sess.run, None, {"input": row32}),
                                   partial(est.predict_proba, row)], runs)
        rows.append({"model": name, "data": "digits", "runtime_p50_ms": round(p50[0], 4),
                     "onnxruntime_p50_ms": round(p50[1], 4),
                     "sklearn_p50_ms": round(p50[2], 4), "speedup": round(p50[2] / p50[0], 1),
                     "speedup_raw_onnxruntime": round(p50[2] / p50[1], 1),
                     "labels_identical": same, "heldout_rows": len(xte)})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = ap.parse_args()
    from converters import cpu_name, has_vnni

    with tempfile.TemporaryDirectory(prefix="bench-converters-") as tmp:
        work = Path(tmp)
        eff = bench_efficientnet(args.runs, args.threads, work)
        skl = bench_sklearn(args.runs * 5, args.threads, work)
    print(f"# converters benchmark on {cpu_name()} ({'VNNI' if has_vnni() else 'no VNNI'}), "
          f"{args.threads} thread(s), {args.runs} interleaved runs\n")
    print("| model | format | float size | int8 size | × | float p50 ms | int8 p50 ms | × | top-1 kept |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for r in eff:
        print(f"| {r['model']} | {r['format']} ({r['backend']}) | {r['float_bytes'] / 2**20:.2f} MiB "
              f"| {r['int8_bytes'] / 2**20:.2f} MiB | {r['size_ratio']:.2f} | {r['float_p50_ms']:.2f} "
              f"| {r['int8_p50_ms']:.2f} | {r['latency_ratio']:.2f} | {'yes' if r['top1_kept'] else 'NO'} "
              f"({', '.join(r['int8_top1'])}) |")
    print("\n| scikit-learn model | runtime p50 ms (one row) | raw onnxruntime p50 ms | predict_proba p50 ms "
          "| speedup (runtime) | speedup (raw ort) | labels identical |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in skl:
        print(f"| {r['model']} | {r['runtime_p50_ms']:.4f} | {r['onnxruntime_p50_ms']:.4f} | {r['sklearn_p50_ms']:.4f} "
              f"| {r['speedup']:.1f}× | {r['speedup_raw_onnxruntime']:.1f}× "
              f"| {'yes' if r['labels_identical'] else 'NO'} ({r['heldout_rows']} rows) |")
    if args.json:
        print(json.dumps({"cpu": cpu_name(), "vnni": has_vnni(), "threads": args.threads, "runs": args.runs,
                          "efficientnet": eff, "sklearn": skl}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
