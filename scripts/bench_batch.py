#!/usr/bin/env python3
"""Batch throughput: `edge batch` (cloud_sync.batch.run_batch) with the local engine and with Ray
Data on 1 and 2 actors (1 inference thread each), MobileNet V2 on N copies of the shared images
(hard links), each run into a fresh SQLite database so nothing is skipped.

The three configurations run interleaved (round r runs them in a rotated order) so that a machine
whose load changes during the benchmark treats them alike. One Ray session serves every Ray run
(its start-up is not measured); each run's clock includes creating its actors and loading the
model in each, as `edge batch` pays them. Prints a table, then one JSON object. Example:

    python scripts/bench_batch.py --n 200 --rounds 2 --writes 20000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cloud_sync.batch import EngineOptions, run_batch  # noqa: E402
from edge_runtime import make_bundle  # noqa: E402
from tests.support.data import IMAGENET_LABELS, IMAGES_DIR, MOBILENET_MODEL  # noqa: E402

IMAGES = ("cat.png", "grace_hopper.png", "sunflower.png", "potato_chips.png")
CONFIGS = (("local", 1), ("ray", 1), ("ray", 2))


def make_inputs(directory: Path, n: int) -> None:
    directory.mkdir(parents=True)
    for i in range(n):
        name = IMAGES[i % len(IMAGES)]
        dst = directory / f"{Path(name).stem}-{i:06d}.png"
        try:
            os.link(IMAGES_DIR / name, dst)
        except OSError:
            shutil.copyfile(IMAGES_DIR / name, dst)


def one_run(bundle: Path, inputs: Path, tmp: Path, engine: str, workers: int, batch_size: int,
            tag: str) -> dict[str, Any]:
    db = tmp / f"{tag}.db"
    t0 = time.perf_counter()
    s = run_batch(bundle, str(inputs), f"sqlite:///{db}", engine=engine, threads=1,
                  options=EngineOptions(workers=workers, batch_size=batch_size))
    dt = time.perf_counter() - t0
    db.unlink(missing_ok=True)
    if s.processed != s.inputs or s.errors:
        raise SystemExit(f"{tag}: {s.processed} of {s.inputs} processed, {s.errors} error(s)")
    return {"engine": engine, "workers": workers, "images": s.inputs, "seconds": round(dt, 3),
            "images_per_s": round(s.inputs / dt, 2)}


def write_rates(n: int, tmp: Path) -> dict[str, float]:
    """Rows/s of the write path alone (256-row transactions, like run_batch's flushes) into SQLite,
    PostgreSQL (a throwaway server started here) and Parquet parts: the driver's ceiling."""
    from cloud_sync.batch import Row, open_output
    from tests.support.servers import Postgres

    record = {"ts": "2026-12-01T12:00:00.000Z", "source": "", "frame": 0,
              "top_k": [{"label": f"label {i}", "score": 0.1} for i in range(5)],
              "latency_ms": {"preprocess": 1.0, "inference": 20.0, "postprocess": 0.1, "total": 21.1},
              "model": {"name": "mobilenet_v2", "version": 1}, "backend": "litert", "path": "local"}

    def rows(tag: str) -> list[Row]:
        out: list[Row] = []
        for i in range(n):
            key = f"s3://bucket/{tag}/{i:09d}.jpg"
            out.append({"source_key": key, "model_name": "mobilenet_v2", "model_version": 1,
                        "ts": record["ts"], "backend": "litert", "top_label": "label 0", "top_score": 0.1,
                        "detections": None, "values": None, "latency_ms": 21.1, "error": None,
                        "record": json.dumps({**record, "source": key, "frame": i})})
        return out

    pg = Postgres().start()
    rates = {}
    try:
        for name, target in (("sqlite", f"sqlite:///{tmp / 'w.db'}"), ("postgresql", pg.new_database()),
                             ("parquet", str(tmp / "wparts") + "/")):
            out = open_output(target)
            data = rows(name)
            t0 = time.perf_counter()
            for i in range(0, n, 256):
                out.write(data[i:i + 256])
            out.close()
            rates[name] = round(n / (time.perf_counter() - t0), 1)
            print(f"  writes: {name:10s} {rates[name]:10.1f} rows/s", file=sys.stderr)
    finally:
        pg.stop()
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="images per run (default 2000)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--object-store-mb", type=int, default=200)
    ap.add_argument("--writes", type=int, default=0,
                    help="also time the write path alone with this many synthetic rows (SQLite, PostgreSQL, Parquet)")
    args = ap.parse_args()

    import ray

    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmpname:
        tmp = Path(tmpname)
        bundle = make_bundle(MOBILENET_MODEL, tmp / "bundle", name="mobilenet_v2", version=1,
                             labels=IMAGENET_LABELS.read_text().splitlines())
        inputs = tmp / "images"
        make_inputs(inputs, args.n)
        ray.init(address="local", num_cpus=2, include_dashboard=False,
                 object_store_memory=args.object_store_mb * 1024 * 1024, log_to_driver=False, logging_level="ERROR")
        runs: list[dict[str, Any]] = []
        writes = write_rates(args.writes, tmp) if args.writes else {}
        try:
            for r in range(args.rounds):
                order = CONFIGS[r % len(CONFIGS):] + CONFIGS[:r % len(CONFIGS)]
                for engine, workers in order:
                    res = one_run(bundle, inputs, tmp, engine, workers, args.batch_size, f"r{r}-{engine}{workers}")
                    res["round"] = r
                    runs.append(res)
                    print(f"  round {r}: {engine:5s} x{workers}  {res['images_per_s']:8.2f} images/s "
                          f"({res['seconds']} s)", file=sys.stderr)
        finally:
            ray.shutdown()

    def median(engine: str, workers: int) -> float:
        return statistics.median(x["images_per_s"] for x in runs if x["engine"] == engine and x["workers"] == workers)

    local, ray1, ray2 = (round(median(e, w), 2) for e, w in CONFIGS)
    ratios = {"ray2_over_ray1": round(ray2 / ray1, 3), "ray1_over_local": round(ray1 / local, 3),
              "ray2_over_local": round(ray2 / local, 3)}
    print(f"{'config':<14}{'images/s (median)':>20}")
    for name, v in (("local x1", local), ("ray x1", ray1), ("ray x2", ray2)):
        print(f"{name:<14}{v:>20.2f}")
    print("ratios: " + ", ".join(f"{k} {v}" for k, v in ratios.items()))
    for name, v in writes.items():
        print(f"write path, {name}: {v:.1f} rows/s")
    print(json.dumps({"n": args.n, "rounds": args.rounds, "batch_size": args.batch_size,
                      "cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
                      "median_images_per_s": {"local_x1": local, "ray_x1": ray1, "ray_x2": ray2},
                      "ratios": ratios, "write_rows_per_s": writes, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
