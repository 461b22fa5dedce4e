#!/usr/bin/env python3
"""Queue worker throughput: requests per second answered through a real RabbitMQ (started here on
free ports) by 1 and 2 `edge worker` processes, against the same model answering the same request
bodies in-process (decode + preprocess + inference + record), in the same run.

Every request is the PNG bytes of a reference image with reply_to and a correlation id; the clock
runs from the first publish to the last reply. Prints a table, then one JSON object. Example:

    python scripts/bench_worker.py --requests 200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cloud_sync.worker import BundleHost  # noqa: E402
from edge_runtime import make_bundle  # noqa: E402
from tests.support.data import IMAGENET_LABELS, IMAGES_DIR, MOBILENET_MODEL  # noqa: E402
from tests.support.net import wait_for  # noqa: E402
from tests.support.rabbitmq import RabbitMQ, Requester, consumer_count, declare_queue  # noqa: E402

IMAGES = ("cat.png", "grace_hopper.png", "sunflower.png", "potato_chips.png")


def in_process(bundle: Path, bodies: list[bytes], n: int, threads: int) -> dict[str, Any]:
    host = BundleHost.open(bundle, threads=threads)
    host.answer(bodies[0])  # warm-up
    t0 = time.perf_counter()
    for i in range(n):
        host.answer(bodies[i % len(bodies)], source="bench", frame=i)
    dt = time.perf_counter() - t0
    host.close()
    return {"mode": "in-process", "workers": 0, "requests": n, "seconds": round(dt, 3), "rps": round(n / dt, 1)}


def through_rabbit(rabbit: RabbitMQ, bundle: Path, bodies: list[bytes], n: int, workers: int, prefetch: int,
                   threads: int, tmp: Path) -> dict[str, Any]:
    queue = f"bench{workers}"
    declare_queue(rabbit.url, queue)
    procs = []
    for k in range(workers):
        err = (tmp / f"{queue}-{k}.err").open("w")
        procs.append(subprocess.Popen([sys.executable, "-m", "edge_cli", "worker", str(bundle), "--broker", rabbit.url,
                                       "--queue", queue, "--prefetch", str(prefetch), "--threads", str(threads)],
                                      cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err))
        err.close()
    try:
        wait_for(lambda: consumer_count(rabbit.url, queue) >= workers, 180, f"{workers} worker(s)", interval=0.2)
        client = Requester(rabbit.url, queue)
        t0 = time.perf_counter()
        for i in range(n):
            client.send(bodies[i % len(bodies)], f"r{i}", content_type="image/png")
        replies = client.collect(n, timeout=600)
        dt = time.perf_counter() - t0
        client.close()
        if len(replies) != n:
            raise SystemExit(f"only {len(replies)} of {n} replies")
        per_worker: dict[str, int] = {}
        for r in replies:
            per_worker[r.headers["x-worker"]] = per_worker.get(r.headers["x-worker"], 0) + 1
        bad = [r for r in replies if "error" in r.json()]
        if bad:
            raise SystemExit(f"{len(bad)} error replies, e.g. {bad[0].json()}")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(60)
    return {"mode": "rabbitmq", "workers": workers, "requests": n, "seconds": round(dt, 3), "rps": round(n / dt, 1),
            "per_worker": sorted(per_worker.values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--prefetch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="backend threads, in-process and per worker")
    args = ap.parse_args()
    bodies = [(IMAGES_DIR / name).read_bytes() for name in IMAGES]
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        bundle = make_bundle(MOBILENET_MODEL, tmp / "mobilenet", name="mobilenet_v2", version=1,
                             labels=IMAGENET_LABELS.read_text().splitlines())
        rows = [in_process(bundle, bodies, args.requests, args.threads)]
        with RabbitMQ(tmp / "rabbitmq") as rabbit:
            for workers in (1, 2):
                rows.append(through_rabbit(rabbit, bundle, bodies, args.requests, workers, args.prefetch,
                                           args.threads, tmp))
    base = rows[0]["rps"]
    print(f"{'mode':<12} {'workers':>7} {'requests':>8} {'seconds':>8} {'req/s':>8} {'vs in-process':>13}")
    for r in rows:
        print(f"{r['mode']:<12} {r['workers']:>7} {r['requests']:>8} {r['seconds']:>8} {r['rps']:>8} "
              f"{r['rps'] / base:>12.2f}x")
    print(json.dumps({"benchmark": "worker", "model": "mobilenet_v2_1.0_224_quant", "prefetch": args.prefetch,
                      "threads": args.threads, "cpus": os.cpu_count(),
                      "load_avg": [round(x, 2) for x in os.getloadavg()],
                      "python": platform.python_version(), "results": rows}))


if __name__ == "__main__":
    main()
