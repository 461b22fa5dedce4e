#!/usr/bin/env python3
"""Benchmark online inference: /v2/models/{name}/infer on the shared MobileNet V2 with N
concurrent clients on loopback, against the raw backend running the same inputs in-process.

Prints a table and a JSON document. Every configuration runs the service in its own process
(real uvicorn). The raw backend and the service are measured in alternating short rounds
(raw, service, raw, service, ...), so that both see the same machine load even on a shared
machine whose load drifts; the ratio is total service throughput over total raw throughput.

    python scripts/bench_cloud.py                      # 16 clients, 5 rounds of 3 s each
    python scripts/bench_cloud.py --rounds 10 --json-out bench.json
    python scripts/bench_cloud.py --encodings json --rounds 3 --seconds 2   # the JSON-tensor figure only
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import edge_runtime  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
MODEL = DATA / "models" / "mobilenet_v2_1.0_224_quant.tflite"
LABELS = DATA / "labels" / "imagenet_labels.txt"
IMAGES = ["cat.png", "grace_hopper.png", "sunflower.png", "potato_chips.png"]
TOKEN = "bench-admin-token-0123456789abcdef"
#: JSON tensors at 16 clients should reach at least this share of the in-process backend's throughput
JSON_TARGET = 0.6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raw_backend(backend: Any, tensors: list[np.ndarray], seconds: float) -> tuple[int, float, list[float]]:
    """The backend alone, in this process: the same model, inputs and threads, no HTTP."""
    n, lat = 0, []
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        backend.run([tensors[n % len(tensors)]])
        lat.append(time.perf_counter() - t0)
        n += 1
    return n, time.perf_counter() - start, lat


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values) * 1000.0, p))


class Service:
    def __init__(self, workdir: Path, pub: Path, env: dict[str, str], threads: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGE_CLOUD_ADMIN_TOKEN": TOKEN,
                    "EDGE_CLOUD_INFERENCE_THREADS": str(threads), **env}
        code = "from edge_cli.cloud._serve import serve_cmd; serve_cmd()"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, "--port", str(self.port), "--data-dir", str(workdir),
             "--trusted-key", str(pub), "--log-level", "warning"],
            env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + 60
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/v2/health/ready")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > end or self.proc.poll() is not None:
                raise RuntimeError("the service did not start")
            time.sleep(0.1)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def load(url: str, bodies: list[tuple[bytes, dict[str, str]]], clients: int, seconds: float,
         warmup: float) -> tuple[int, list[float], int]:
    """``clients`` threads, each with one keep-alive connection, sending pre-encoded requests
    back to back; only requests that start after the warm-up count."""
    host, port = url.split("//")[1].split(":")
    stop_at = [0.0]
    t_start = time.perf_counter() + warmup
    stop_at[0] = t_start + seconds
    lats: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients

    def run(k: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        i = k
        while True:
            now = time.perf_counter()
            if now >= stop_at[0]:
                break
            body, headers = bodies[i % len(bodies)]
            i += 1
            try:
                conn.request("POST", "/v2/models/mobilenet_v2/infer", body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException):
                errors[k] += 1
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=60)
                continue
            done = time.perf_counter()
            if resp.status != 200:
                errors[k] += 1
            elif now >= t_start and done <= stop_at[0]:
                lats[k].append(done - now)
            del data
        conn.close()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    all_lat = [x for xs in lats for x in xs]
    return len(all_lat), all_lat, sum(errors)


def encode(tensors: list[np.ndarray], binary: bool) -> list[tuple[bytes, dict[str, str]]]:
    out = []
    for t in tensors:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        if binary:
            head = json.dumps({"inputs": [{"name": "input", "shape": list(t.shape), "datatype": "UINT8",
                                           "parameters": {"binary_data_size": t.nbytes}}]}).encode()
            out.append((head + t.tobytes(), {**auth, "Content-Type": "application/octet-stream",
                                             "Inference-Header-Content-Length": str(len(head))}))
        else:
            body = json.dumps({"inputs": [{"name": "input", "shape": list(t.shape), "datatype": "UINT8",
                                           "data": t.reshape(-1).tolist()}]}).encode()
            out.append((body, {**auth, "Content-Type": "application/json"}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5, help="alternating raw/service rounds per configuration")
    ap.add_argument("--seconds", type=float, default=3.0, help="length of one round")
    ap.add_argument("--warmup", type=float, default=0.5, help="unmeasured start of each service round")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="backend threads (raw and service)")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=float, default=2.0)
    ap.add_argument("--encodings", default="json,binary", help="comma list of json, binary")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="edge-bench-cloud-"))
    priv, pub = edge_runtime.generate_keypair(work / "keys")
    bundle = work / "mobilenet_v2.tar.gz"
    edge_runtime.make_bundle(MODEL, bundle, name="mobilenet_v2", labels=LABELS.read_text().splitlines(),
                             preprocess={"size": (224, 224)}, sign_key=edge_runtime.load_private_key(priv))
    with edge_runtime.Model.load(bundle, threads=1) as m:
        tensors = [m.preprocess(edge_runtime.load_image(DATA / "images" / i))[0] for i in IMAGES]

    from edge_device.client import CloudClient

    raw_model = edge_runtime.Model.load(bundle, threads=args.threads)
    for tensor in tensors:
        raw_model.backend.run([tensor])
    results: list[dict[str, Any]] = []
    configs = [(enc, batching) for enc in args.encodings.split(",") for batching in (True, False)]
    for n, (enc, batching) in enumerate(configs):
        env = {"EDGE_CLOUD_BATCHING": "true" if batching else "false", "EDGE_CLOUD_MAX_BATCH_SIZE": str(args.max_batch),
               "EDGE_CLOUD_MAX_BATCH_WAIT_MS": str(args.max_wait_ms)}
        svc = Service(work / f"svc{n}", pub, env, args.threads)
        bodies = encode(tensors, enc == "binary")
        raw_n, raw_t, svc_n, errors = 0, 0.0, 0, 0
        raw_lat: list[float] = []
        svc_lat: list[float] = []
        try:
            CloudClient(svc.url, TOKEN, timeout=120).publish(bundle, channel="stable")
            load(svc.url, bodies, args.clients, 1.0, 1.0)  # loads the model, warms everything up
            for _ in range(args.rounds):
                k, spent, lat = raw_backend(raw_model.backend, tensors, args.seconds)
                raw_n, raw_t, raw_lat = raw_n + k, raw_t + spent, raw_lat + lat
                k, lat, err = load(svc.url, bodies, args.clients, args.seconds, args.warmup)
                svc_n, svc_lat, errors = svc_n + k, svc_lat + lat, errors + err
        finally:
            svc.close()
        svc_tp, raw_tp = svc_n / (args.seconds * args.rounds), raw_n / raw_t
        row = {"encoding": enc, "batching": batching, "service_throughput": svc_tp,
               "service_p50_ms": _pct(svc_lat, 50), "service_p99_ms": _pct(svc_lat, 99), "service_requests": svc_n,
               "service_errors": errors, "raw_throughput": raw_tp, "raw_p50_ms": _pct(raw_lat, 50),
               "ratio": svc_tp / raw_tp}
        results.append(row)
        print(f"  {enc:6} batching={'on ' if batching else 'off'} {svc_tp:7.1f} req/s "
              f"(raw {raw_tp:6.1f}/s, ratio {row['ratio']:.2f}), p99 {row['service_p99_ms']:.1f} ms",
              file=sys.stderr)
    raw_model.close()

    print()
    print(f"MobileNet V2 quant, /v2/models/mobilenet_v2/infer, {args.clients} concurrent clients on loopback, "
          f"{args.threads} backend thread(s), {os.cpu_count()} CPU(s)")
    hdr = (f"{'encoding':8} {'batching':8} {'req/s':>8} {'raw/s':>8} {'ratio':>6} {'p50 ms':>8} {'p99 ms':>8} "
           f"{'errors':>6}")
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        print(f"{r['encoding']:8} {'on' if r['batching'] else 'off':8} {r['service_throughput']:8.1f} "
              f"{r['raw_throughput']:8.1f} {r['ratio']:6.2f} {r['service_p50_ms']:8.1f} {r['service_p99_ms']:8.1f} "
              f"{r['service_errors']:6d}")
    # The figure the JSON-tensor work is held to: JSON tensors (KServe v2 "data" lists, what most
    # clients send) against the backend alone in this process, at this many clients.
    json_rows = [r for r in results if r["encoding"] == "json"]
    json_ratio = max((r["ratio"] for r in json_rows), default=None)
    if json_ratio is not None:
        print(f"\nJSON tensors at {args.clients} clients: {json_ratio:.2f}x the in-process backend "
              f"(best of batching on/off; target {JSON_TARGET}x)")
    doc = {"benchmark": "cloud_infer", "model": "mobilenet_v2_1.0_224_quant", "clients": args.clients,
           "json_ratio": json_ratio, "json_target": JSON_TARGET,
           "rounds": args.rounds, "round_seconds": args.seconds, "threads": args.threads, "cpus": os.cpu_count(),
           "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "results": results,
           "raw_mean_throughput": statistics.mean(r["raw_throughput"] for r in results)}
    print(json.dumps(doc, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
