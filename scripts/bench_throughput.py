#!/usr/bin/env python3
"""Throughput of `edge run` against the loop a user would write, and against what two cores allow.

For each input kind:
  mixed   the shared PNGs and leaf JPEGs, repeated to --images files (hard links in a temp dir)
  hd      1080p JPEGs made from the same pictures (Pillow, quality 90), repeated to --hd files
  video   a 1080p MPEG-4 file made from the same pictures (OpenCV VideoWriter), --frames frames
  rows    --rows rows of scikit-learn's digits as CSV, a logistic regression converted to ONNX
it runs, as subprocesses, interleaved, --reps times each:
  naive-1t / naive-2t  the loop a competent user writes (Pillow open, convert, resize 224 bilinear,
                       LiteRT invoke, argmax, one JSON line per input; OpenCV read + cv2.resize for
                       the video; onnxruntime one row at a time for rows), inference threads 1 / 2
  naive-2p             for the image directories: two naive-1t processes at once, each on half the
                       files: the work shared out by hand, what no single loop can beat on 2 cores
  edge-run             `edge run BUNDLE --source SRC --output out.jsonl` with defaults
and reports the median wall time, the median CPU time of the child (user + sys, getrusage, its
decode workers included), the inference latency inside `edge run` (median of the records'
latency_ms.inference) against the raw call at the same threads, and the two-core bound:
  start-up of `edge run` (its CPU time on one input) + N x max(decode + preprocess CPU, inference CPU
  at 1 thread)
per input, i.e. one core decoding while the other infers (for rows: the raw onnxruntime call alone),
and the all-cores bound: start-up + N x (decode + preprocess CPU + inference CPU at 1 thread) / cores,
every core decoding and inferring its own inputs (what `edge run`'s worker per core aims at; it can
beat the split bound, which leaves the decoding core idle while inference is the longer stage).

Every per-stage cost is CPU time measured in this process, so it is steadier than wall time on a
busy machine; the wall times are what they are. Prints a table, then one JSON object.

    python scripts/bench_throughput.py [--reps 3] [--images 600] [--hd 120] [--frames 240] [--rows 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
PY = sys.executable

# -- the loops a user writes (run as `python -c`, argv: model, source, out, threads) -----------------
NAIVE_IMAGES = r"""
import json, sys
from pathlib import Path
import numpy as np
from PIL import Image
from ai_edge_litert.interpreter import Interpreter
model, src, out, threads = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
labels = Path(sys.argv[5]).read_text().splitlines()
it = Interpreter(model_path=model, num_threads=threads)
it.allocate_tensors()
inp, outp = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
with open(out, "w") as f:
    for p in sorted(src.iterdir()):
        with Image.open(p) as im:
            x = np.asarray(im.convert("RGB").resize((224, 224), Image.Resampling.BILINEAR))
        it.set_tensor(inp, x[None])
        it.invoke()
        scores = it.get_tensor(outp)[0]
        i = int(scores.argmax())
        f.write(json.dumps({"source": str(p), "label": labels[i], "score": float(scores[i]) / 256}) + "\n")
"""

NAIVE_VIDEO = r"""
import json, sys
from pathlib import Path
import cv2
import numpy as np
from ai_edge_litert.interpreter import Interpreter
model, src, out, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
labels = Path(sys.argv[5]).read_text().splitlines()
it = Interpreter(model_path=model, num_threads=threads)
it.allocate_tensors()
inp, outp = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
cap = cv2.VideoCapture(src)
with open(out, "w") as f:
    n = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        x = cv2.cvtColor(cv2.resize(bgr, (224, 224), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        it.set_tensor(inp, x[None])
        it.invoke()
        scores = it.get_tensor(outp)[0]
        i = int(scores.argmax())
        f.write(json.dumps({"frame": n, "label": labels[i], "score": float(scores[i]) / 256}) + "\n")
        n += 1
"""

NAIVE_ROWS = r"""
import json, sys
import numpy as np
import onnxruntime as ort
model, src, out, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
so = ort.SessionOptions()
so.intra_op_num_threads = threads
sess = ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])
name = sess.get_inputs()[0].name
rows = np.loadtxt(src, delimiter=",", dtype=np.float32, ndmin=2)
with open(out, "w") as f:
    for n, row in enumerate(rows):
        label, probs = sess.run(None, {name: row[None]})
        f.write(json.dumps({"row": n, "label": int(label[0]), "score": float(probs[0].max())}) + "\n")
"""


def run_child(argv: list[str], out: Path) -> dict[str, float]:
    """Wall time and the child's CPU time (user + sys, its waited-for children included)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed:\n{err.decode(errors='replace')[-2000:]}")
    lines = out.read_text().splitlines() if out.exists() else []
    res = {"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "lines": len(lines)}
    infs = [json.loads(x).get("latency_ms", {}).get("inference") for x in lines]
    infs = [v for v in infs if v is not None]
    if infs:
        res["inference_ms_p50"] = float(np.median(infs))
    return res


def run_pair(argvs: list[list[str]], outs: list[Path]) -> dict[str, float]:
    """Two children at once (the naive loop on each half of the files): wall time until both are
    done, CPU time of both."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(a, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for a in argvs]
    cpu = 0.0
    for proc in procs:
        assert proc.stderr is not None
        err = proc.stderr.read()
        _, status, ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"naive pair failed:\n{err.decode(errors='replace')[-2000:]}")
        cpu += ru.ru_utime + ru.ru_stime
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "cpu_s": cpu, "lines": sum(len(o.read_text().splitlines()) for o in outs)}


def halves(src: Path) -> list[Path]:
    """``src``'s files in two directories (hard links), first half and second half."""
    files = sorted(src.iterdir())
    out = []
    for k, part in enumerate((files[:len(files) // 2], files[len(files) // 2:])):
        d = src.parent / f"{src.name}-half{k}"
        d.mkdir()
        for f in part:
            os.link(f, d / f.name)
        out.append(d)
    return out


# -- data -----------------------------------------------------------------------------------------------
def pictures() -> list[Path]:
    return sorted((SHARED / "images").glob("*.png")) + sorted((SHARED / "images" / "leaves").iterdir())


def link_repeated(files: list[Path], d: Path, n: int) -> Path:
    d.mkdir(exist_ok=True)
    for i in range(n):
        p = files[i % len(files)]
        os.link(p, d / f"{i:05d}{p.suffix.lower()}")
    return d


def make_hd(tmp: Path, n: int) -> Path:
    from PIL import Image

    base = tmp / "hd-base"
    base.mkdir()
    made = []
    for i, p in enumerate(pictures()):
        with Image.open(p) as im:
            q = base / f"{i:02d}.jpg"
            im.convert("RGB").resize((1920, 1080), Image.Resampling.BICUBIC).save(q, quality=90)
            made.append(q)
    return link_repeated(made, tmp / "hd", n)


def make_video(tmp: Path, frames: int) -> Path:
    import cv2
    from PIL import Image

    path = tmp / "clip.mp4"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (1920, 1080))
    pics = [np.asarray(Image.open(p).convert("RGB").resize((1920, 1080), Image.Resampling.BICUBIC))[..., ::-1]
            for p in pictures()]
    for i in range(frames):
        # each picture for 8 frames, drifting a little so that the encoder has motion to code
        img = np.roll(pics[(i // 8) % len(pics)], 4 * (i % 8), axis=1)
        w.write(np.ascontiguousarray(img))
    w.release()
    return path


def make_rows(tmp: Path, n: int) -> tuple[Path, Path]:
    import joblib
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    from converters import convert

    x, y = load_digits(return_X_y=True)
    est = LogisticRegression(max_iter=3000).fit(x, y)
    joblib.dump(est, tmp / "lr.joblib")
    report = convert(tmp / "lr.joblib", tmp / "lr-out", to="onnx", latency_runs=5, threads=1, trust_pickle=True)
    bundle = Path(report.variant("float").bundle)
    csv = tmp / "rows.csv"
    reps = -(-n // len(x))
    np.savetxt(csv, np.tile(x, (reps, 1))[:n], delimiter=",", fmt="%g")
    return bundle, csv


# -- per-stage CPU costs, measured in this process -------------------------------------------------------
def cpu_per(fn: Any, items: list[Any], rounds: int = 3) -> float:
    """Median over rounds of CPU seconds per item."""
    per = []
    for _ in range(rounds):
        t0 = time.process_time()
        for it in items:
            fn(it)
        per.append((time.process_time() - t0) / len(items))
    return float(np.median(per))


def inference_cpu(bundle: Path, threads: int, runs: int = 200) -> dict[str, float]:
    """The raw LiteRT call (set/invoke/get): CPU per call, and the wall p50 (`edge bench`'s figure)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(bundle / "model.tflite"), num_threads=threads)
    it.allocate_tensors()
    inp, outp = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    x = np.zeros((1, 224, 224, 3), np.uint8)

    def call(_: Any) -> None:
        it.set_tensor(inp, x)
        it.invoke()
        it.get_tensor(outp)

    for _ in range(20):
        call(None)
    walls = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call(None)
        walls.append(time.perf_counter() - t0)
    return {"cpu_ms": cpu_per(call, [None] * runs) * 1000, "p50_ms": float(np.median(walls)) * 1000}


def decode_cpu_files(bundle: Path, files: list[Path]) -> float:
    from edge_runtime import Model, decode_image

    m = Model.load(bundle, backend="litert", threads=1)
    pre = m.image_preprocessor
    assert pre is not None
    reduce = pre if m.reduced_decode else None
    return cpu_per(lambda p: pre(decode_image(p, reduce_for=reduce)[0]), files) * 1000


def decode_cpu_video(bundle: Path, video: Path) -> float:
    import cv2

    from edge_runtime import Model

    m = Model.load(bundle, backend="litert", threads=1)
    per = []
    for _ in range(2):
        cap = cv2.VideoCapture(str(video))
        n = 0
        t0 = time.process_time()
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            m.preprocess(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), reduced=m.reduced_decode)  # as edge run does
            n += 1
        per.append((time.process_time() - t0) / max(1, n))
        cap.release()
    return float(np.median(per)) * 1000


def row_cpu(bundle: Path, csv: Path) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    rows = np.loadtxt(csv, delimiter=",", dtype=np.float32, ndmin=2)[:2000]
    return cpu_per(lambda r: sess.run(None, {"input": r[None]}), list(rows)) * 1000


def single_row(bundle: Path, csv: Path, rounds: int = 7, n: int = 2000) -> dict[str, float]:
    """One row at a time, interleaved rounds, CPU time: `Model.predict` (row check, onnxruntime,
    top-k with labels, latency split) against `InferenceSession.run` as a user calls it."""
    import onnxruntime as ort

    from edge_runtime import Model

    rows = np.loadtxt(csv, delimiter=",", dtype=np.float32, ndmin=2)[:n]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(bundle / "model.onnx"), sess_options=so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    m = Model.load(bundle, threads=1)
    raw, ours = [], []
    for _ in range(rounds):
        raw.append(cpu_per(lambda r: sess.run(None, {name: r[None]}), list(rows), rounds=1))
        ours.append(cpu_per(m.predict, list(rows), rounds=1))
    r, o = float(np.median(raw)) * 1e6, float(np.median(ours)) * 1e6
    return {"raw_onnxruntime_us": round(r, 2), "model_predict_us": round(o, 2), "speed_ratio": round(r / o, 3)}


# -- the benchmark --------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions of every variant")
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--hd", type=int, default=120, help="1080p JPEGs")
    ap.add_argument("--frames", type=int, default=240, help="frames of the 1080p video")
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--kinds", default="mixed,hd,video,rows")
    ap.add_argument("--with-threads-2", action="store_true",
                    help="also `edge run --threads 2` (threads fixed: no split of the cores, decoding in threads)")
    args = ap.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]

    from edge_runtime import make_bundle

    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        labels_file = SHARED / "labels" / "imagenet_labels.txt"
        mb = make_bundle(SHARED / "models" / "mobilenet_v2_1.0_224_quant.tflite", tmp / "mobilenet",
                         name="mobilenet_v2", labels=labels_file.read_text().splitlines())
        sources: dict[str, tuple[Path, Path, str, int]] = {}  # kind -> bundle, source, naive script, items
        if "mixed" in kinds:
            sources["mixed"] = (mb, link_repeated(pictures(), tmp / "mixed", args.images), NAIVE_IMAGES, args.images)
        if "hd" in kinds:
            sources["hd"] = (mb, make_hd(tmp, args.hd), NAIVE_IMAGES, args.hd)
        if "video" in kinds:
            sources["video"] = (mb, make_video(tmp, args.frames), NAIVE_VIDEO, args.frames)
        if "rows" in kinds:
            lr, csv = make_rows(tmp, args.rows)
            sources["rows"] = (lr, csv, NAIVE_ROWS, args.rows)

        # per-stage CPU costs and the start-up of `edge run`, for the bounds
        inf1 = inference_cpu(mb, 1)
        inf2 = inference_cpu(mb, 2)
        one = tmp / "one"
        one.mkdir()
        os.link(SHARED / "images" / "cat.png", one / "cat.png")
        # start-up as its CPU time: single-threaded, it is the wall time of a quiet machine
        startups = [run_child([PY, "-m", "edge_cli", "run", str(mb), "--source", str(one), "--output",
                               str(tmp / "s.jsonl")], tmp / "s.jsonl") for _ in range(3)]
        startup = float(np.median([r["cpu_s"] for r in startups]))
        startup_wall = float(np.median([r["wall_s"] for r in startups]))
        stage: dict[str, dict[str, float]] = {}
        for kind, (bundle, src, _, n) in sources.items():
            if kind in ("mixed", "hd"):
                files = sorted(src.iterdir())[:150]
                dec = decode_cpu_files(bundle, files)
            elif kind == "video":
                dec = decode_cpu_video(bundle, src)
            else:
                dec = 0.0
            inf = row_cpu(bundle, src) if kind == "rows" else inf1["cpu_ms"]
            per_item = max(dec, inf)
            cores = len(os.sched_getaffinity(0))
            stage[kind] = {"decode_preprocess_cpu_ms": round(dec, 3), "inference_cpu_ms": round(inf, 4),
                           "bound_s": round(startup + n * per_item / 1000, 3),
                           # every core decoding and inferring its own inputs: the work shared out
                           "all_cores_bound_s": round(startup + n * (dec + inf) / cores / 1000, 3)}
        one_row = single_row(*sources["rows"][:2]) if "rows" in sources else None

        variants: list[tuple[str, int | None]] = [("naive-1t", 1), ("naive-2t", 2), ("naive-2p", 0),
                                                  ("edge-run", None)]
        if args.with_threads_2:
            variants.append(("edge-run-t2", -2))
        split = {kind: halves(src) for kind, (_, src, _, _) in sources.items() if kind in ("mixed", "hd")}
        runs: dict[str, dict[str, list[dict[str, float]]]] = {k: {v: [] for v, _ in variants} for k in sources}
        for rep in range(args.reps):
            for kind, (bundle, src, script, _) in sources.items():
                order = variants if rep % 2 == 0 else variants[::-1]  # alternate who goes first
                for name, threads in order:
                    out = tmp / f"{kind}-{name}.jsonl"
                    out.unlink(missing_ok=True)
                    if threads == 0:
                        if kind not in split:
                            continue  # a video or a CSV does not split into two independent halves here
                        model = bundle / "model.tflite"
                        outs = [tmp / f"{kind}-{name}-{k}.jsonl" for k in (0, 1)]
                        runs[kind][name].append(run_pair(
                            [[PY, "-c", script, str(model), str(h), str(o), "1", str(labels_file)]
                             for h, o in zip(split[kind], outs, strict=True)], outs))
                        continue
                    if threads is None or threads < 0:
                        argv = [PY, "-m", "edge_cli", "run", str(bundle), "--source", str(src), "--output", str(out)]
                        if threads is not None:
                            argv += ["--threads", str(-threads)]  # fixed threads: no core split
                    else:
                        model = bundle / ("model.onnx" if kind == "rows" else "model.tflite")
                        argv = [PY, "-c", script, str(model), str(src), str(out), str(threads), str(labels_file)]
                    runs[kind][name].append(run_child(argv, out))
                    print(f"  rep {rep + 1} {kind:<6} {name:<9} {runs[kind][name][-1]['wall_s']:7.2f} s wall  "
                          f"{runs[kind][name][-1]['cpu_s']:7.2f} s cpu", file=sys.stderr, flush=True)

    results: dict[str, Any] = {}
    for kind, by in runs.items():
        med = {v: {"wall_s": round(statistics.median(r["wall_s"] for r in rs), 3),
                   "cpu_s": round(statistics.median(r["cpu_s"] for r in rs), 3),
                   "lines": rs[0]["lines"]} for v, rs in by.items() if rs}
        inf_in = [r["inference_ms_p50"] for r in by["edge-run"] if "inference_ms_p50" in r]
        best_naive = min(med["naive-1t"]["wall_s"], med["naive-2t"]["wall_s"])
        e = med["edge-run"]["wall_s"]
        res: dict[str, Any] = {"items": sources[kind][3], **{k: v for k, v in med.items()}, **stage[kind],
                               "speedup_vs_best_naive": round(best_naive / e, 3),
                               "edge_run_over_bound": round(e / stage[kind]["bound_s"], 3),
                               "edge_run_over_all_cores_bound": round(e / stage[kind]["all_cores_bound_s"], 3)}
        if "naive-2p" in med:
            res["edge_run_over_naive_2p"] = round(e / med["naive-2p"]["wall_s"], 3)
        if inf_in and kind != "rows":
            res["edge_run_inference_ms_p50"] = round(float(np.median(inf_in)), 3)
            # edge run splits 2 cores into 1 inference thread + decoding: compare with the 1-thread call
            res["inference_in_pipeline_over_raw_1t"] = round(float(np.median(inf_in)) / inf1["p50_ms"], 3)
        results[kind] = res

    print(f"\nbusy machine? load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
          f"edge run start-up {startup:.2f} s CPU ({startup_wall:.2f} s wall); "
          f"raw LiteRT call p50 {inf1['p50_ms']:.2f} ms (1 thread), "
          f"{inf2['p50_ms']:.2f} ms (2 threads)")
    print("\n| input | items | naive 1 thread | naive 2 threads | `edge run` defaults | speed-up vs best naive "
          "| two-core bound (split) | `edge run` / bound | all-cores bound | `edge run` / it "
          "| inference in `edge run` / raw call |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for kind, r in results.items():
        cell = {v: f"{r[v]['wall_s']:.2f} s ({r[v]['cpu_s']:.2f} s CPU)" for v in ("naive-1t", "naive-2t", "edge-run")}
        inf = (f"{r['edge_run_inference_ms_p50']:.2f} / {inf1['p50_ms']:.2f} ms = "
               f"{r['inference_in_pipeline_over_raw_1t']:.2f}" if "edge_run_inference_ms_p50" in r else "n/a")
        print(f"| {kind} | {r['items']} | {cell['naive-1t']} | {cell['naive-2t']} | {cell['edge-run']} | "
              f"**{r['speedup_vs_best_naive']:.2f}x** | {r['bound_s']:.2f} s | {r['edge_run_over_bound']:.2f} "
              f"| {r['all_cores_bound_s']:.2f} s | {r['edge_run_over_all_cores_bound']:.2f} | {inf} |")
    if one_row is not None:
        print(f"\none row at a time (CPU per row, 1 thread): Model.predict {one_row['model_predict_us']:.1f} us, "
              f"raw InferenceSession.run {one_row['raw_onnxruntime_us']:.1f} us: "
              f"{one_row['speed_ratio']:.2f}x of raw's speed")
    pairs = {k: r for k, r in results.items() if "naive-2p" in r}
    if pairs:
        print("\ntwo naive 1-thread processes at once, each on half the files (the work shared out by hand): "
              + ", ".join(f"{k} {r['naive-2p']['wall_s']:.2f} s ({r['naive-2p']['cpu_s']:.2f} s CPU); "
                          f"`edge run` takes {r['edge_run_over_naive_2p']:.2f}x that" for k, r in pairs.items()))
    if args.with_threads_2:
        print("\n`edge run --threads 2` (no core split): " + ", ".join(
            f"{k} {r['edge-run-t2']['wall_s']:.2f} s ({r['edge-run-t2']['cpu_s']:.2f} s CPU)"
            for k, r in results.items()))
    print(json.dumps({"results": results, "single_row": one_row, "raw_inference_1t": inf1, "raw_inference_2t": inf2,
                      "edge_run_startup_cpu_s": round(startup, 3),
                      "edge_run_startup_wall_s": round(startup_wall, 3), "reps": args.reps, "cpu_count": os.cpu_count(),
                      "loadavg": os.getloadavg()}))


if __name__ == "__main__":
    main()
