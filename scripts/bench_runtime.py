#!/usr/bin/env python3
"""Runtime benchmarks of the spine, each against the raw library doing the same work in the same run.

1. Per-inference overhead: edge_runtime's Model.infer + postprocess vs LiteRT's own
   set_tensor/invoke/get_tensor on the shared MobileNet V2, same threads, interleaved.
2. Directory throughput: the `edge run` pipeline vs a plain sequential loop (Pillow decode,
   resize, invoke) over the same images.
3. `import edge_runtime` time (from -X importtime) and peak RSS of `edge run` on the bundle.

Prints a table, then one JSON object. Usage:
    python scripts/bench_runtime.py [--runs 2000] [--images 200] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"

from edge_runtime import (  # noqa: E402
    Model,
    Pipeline,
    bench_model,
    load_image,
    make_bundle,
)
from edge_runtime.sources import ImageFilesSource  # noqa: E402


class _Count:
    def __init__(self) -> None:
        self.n = 0

    def write(self, record: dict) -> None:
        self.n += 1

    def close(self) -> None:
        pass


def overhead(bundle: Path, runs: int, threads: int) -> dict:
    m = Model.load(bundle, backend="litert", threads=threads)
    res = bench_model(m, runs=runs, warmup=50, x=load_image(SHARED / "images" / "cat.png"))
    m.close()
    return res.as_dict()


def throughput(bundle: Path, n_images: int, threads: int | None, tmp: Path, repeats: int = 3) -> dict:
    """Pipeline vs plain loop at the same thread count; ``threads=None`` compares defaults with
    defaults: `edge run` as the device profile sets it up, the loop with LiteRT's own default."""
    from ai_edge_litert.interpreter import Interpreter

    src_images = sorted((SHARED / "images").glob("*.png")) + sorted((SHARED / "images" / "leaves").iterdir())
    d = tmp / "imgs"
    d.mkdir(exist_ok=True)
    for i in range(n_images):
        p = src_images[i % len(src_images)]
        target = d / f"{i:04d}{p.suffix.lower()}"
        if not target.exists():
            os.link(p, target)
    files = sorted(d.iterdir())

    def sequential() -> float:
        it = (Interpreter(model_path=str(bundle / "model.tflite"), num_threads=threads) if threads
              else Interpreter(model_path=str(bundle / "model.tflite")))
        it.allocate_tensors()
        inp, out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
        t0 = time.perf_counter()
        for f in files:
            with Image.open(f) as im:
                x = np.asarray(im.convert("RGB").resize((224, 224), Image.Resampling.BILINEAR))
            it.set_tensor(inp, x[None])
            it.invoke()
            it.get_tensor(out).argmax()
        return len(files) / (time.perf_counter() - t0)

    def pipeline() -> float:
        m = Model.load(bundle, backend="litert", threads=threads)
        used.append(m.backend.threads)
        sink = _Count()
        t0 = time.perf_counter()
        Pipeline(m, ImageFilesSource(d), [sink]).run()
        rate = sink.n / (time.perf_counter() - t0)
        assert sink.n == len(files)
        m.close()
        return rate

    seq, pipe = [], []
    used: list[int | None] = []
    for _ in range(repeats):  # alternate so both see the same machine state
        seq.append(sequential())
        pipe.append(pipeline())
    s, p = float(np.median(seq)), float(np.median(pipe))
    return {"images": len(files), "threads": threads if threads else f"defaults (edge run: {used[0]})",
            "sequential_per_s": round(s, 1),
            "pipeline_per_s": round(p, 1), "ratio": round(p / s, 3)}


def import_time() -> dict:
    samples = []
    for _ in range(5):
        out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import edge_runtime"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stderr
        total = 0
        for line in out.splitlines():
            m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
            if m and m.group(4) == "edge_runtime":
                total = int(m.group(2))
        samples.append(total / 1e6)
    return {"import_edge_runtime_s": round(float(np.median(samples)), 4)}


def run_rss(bundle: Path) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run([sys.executable, "-m", "edge_cli", "run", str(bundle), "--source",
                           str(SHARED / "images"), "--output", os.devnull, "--backend", "litert"],
                          cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"edge_run_peak_rss_mb": round(max(before, after) / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        labels = (SHARED / "labels" / "imagenet_labels.txt").read_text().splitlines()
        bundle = make_bundle(SHARED / "models" / "mobilenet_v2_1.0_224_quant.tflite", tmp / "mobilenet",
                             name="mobilenet_v2", labels=labels)
        rss = run_rss(bundle)
        imp = import_time()
        ov = {f"threads_{t}": overhead(bundle, args.runs, t) for t in sorted({1, args.threads})}
        tp = {f"threads_{t}": throughput(bundle, args.images, t, tmp) for t in sorted({1, args.threads})}
        tp["defaults"] = throughput(bundle, args.images, None, tmp)
    print("Per-inference overhead, MobileNet V2 quant (LiteRT), p50 ms")
    print(f"{'threads':<9}{'edge_runtime':>14}{'raw LiteRT':>12}{'ratio p50':>11}{'ratio mean':>12}")
    for r in ov.values():
        print(f"{r['threads']:<9}{r['runtime_infer']['p50_ms']:>14.3f}{r['raw_backend']['p50_ms']:>12.3f}"
              f"{r['ratio_p50']:>11.3f}{r['ratio_mean']:>12.3f}")
    print(f"\nDirectory throughput, {args.images} images (decode + resize + infer), images/s")
    print(f"{'threads':<26}{'pipeline':>10}{'sequential':>12}{'ratio':>8}")
    for r in tp.values():
        print(f"{r['threads']!s:<26}{r['pipeline_per_s']:>10.1f}{r['sequential_per_s']:>12.1f}{r['ratio']:>8.2f}")
    print(f"\nimport edge_runtime: {imp['import_edge_runtime_s']:.3f} s;  edge run peak RSS: "
          f"{rss['edge_run_peak_rss_mb']:.0f} MB")
    print(json.dumps({"overhead": ov, "throughput": tp, **imp, **rss, "cpu_count": os.cpu_count()}))


if __name__ == "__main__":
    main()
