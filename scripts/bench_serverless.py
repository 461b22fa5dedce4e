#!/usr/bin/env python3
"""Serverless cold start and warm overhead, MobileNet V2 (quantized TFLite) from the shared data.

Cold start: a fresh Python process (as a new Lambda instance) imports ``cloud_sync.serverless``,
loads the bundle (from a directory, then from a .tar.gz in S3 served by moto on loopback, signature
checked) and answers its first API Gateway v2 event; each step is timed inside the process, and the
whole process from exec to first answer outside it. Warm: the same event through the handler again
and again, against ``BundleHost.answer`` on the same bytes and against ``Model.predict`` on the
already decoded image, in the same process. Prints a table, then one JSON object. Example:

    python scripts/bench_serverless.py --cold 3 --warm 50
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_runtime import load_image, load_private_key, make_bundle, pack_bundle, sign_bundle  # noqa: E402
from tests.support.data import IMAGENET_LABELS, IMAGES_DIR, MOBILENET_MODEL  # noqa: E402
from tests.support.keys import make_keys  # noqa: E402
from tests.support.servers import start_moto_s3  # noqa: E402

IMAGE = IMAGES_DIR / "cat.png"

# What one cold instance does, timed from inside; run with `python -c`.
COLD = r"""
import time, json, base64, sys
t0 = time.perf_counter()
import cloud_sync.serverless as sls
t1 = time.perf_counter()
sls.get_host()
t2 = time.perf_counter()
body = base64.b64encode(open(sys.argv[1], "rb").read()).decode()
ev = {"version": "2.0", "routeKey": "$default", "rawPath": "/", "headers": {"content-type": "image/png"},
      "requestContext": {"http": {"method": "POST", "path": "/"}, "requestId": "cold"},
      "body": body, "isBase64Encoded": True}
r = sls.lambda_handler(ev, None)
t3 = time.perf_counter()
assert r["statusCode"] == 200, r
print(json.dumps({"import_s": t1 - t0, "bundle_s": t2 - t1, "first_request_s": t3 - t2, "in_process_s": t3 - t0,
                  "label": json.loads(r["body"])["top_k"][0]["label"], **sls.load_stats}))
"""


def event(body: bytes) -> dict[str, Any]:
    return {"version": "2.0", "routeKey": "$default", "rawPath": "/", "headers": {"content-type": "image/png"},
            "requestContext": {"http": {"method": "POST", "path": "/"}, "requestId": "warm"},
            "body": base64.b64encode(body).decode(), "isBase64Encoded": True}


def cold(env: dict[str, str], n: int) -> dict[str, Any]:
    runs = []
    for _ in range(n):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", COLD, str(IMAGE)], env=env, cwd=ROOT, capture_output=True,
                             text=True, check=False)
        wall = time.perf_counter() - t0
        if out.returncode != 0:
            raise SystemExit(out.stderr[-3000:])
        runs.append({**json.loads(out.stdout.strip().splitlines()[-1]), "process_s": wall})
    keys = ("import_s", "fetch_s", "load_s", "bundle_s", "first_request_s", "in_process_s", "process_s")
    return {k: round(statistics.median(r[k] for r in runs), 3) for k in keys} | {"runs": n,
                                                                                   "label": runs[0]["label"]}


def warm(bundle: Path, n: int) -> dict[str, float]:
    from cloud_sync import serverless
    from edge_runtime import Model

    os.environ["EDGE_BUNDLE"] = str(bundle)
    os.environ.pop("EDGE_BUNDLE_PUBKEY", None)
    serverless.unload()
    data = IMAGE.read_bytes()
    ev = event(data)
    host = serverless.get_host()
    image = load_image(IMAGE)
    model: Model = host.model

    variants = {"predict": lambda: model.predict(image),
                "answer": lambda: host.answer(data, content_type="image/png"),
                "handler": lambda: serverless.lambda_handler(ev, None)}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for f in variants.values():
        f()  # warm-up
    for _ in range(n):  # interleaved, so that a busy moment of the machine hits every variant alike
        for k, f in variants.items():
            t0 = time.perf_counter()
            f()
            times[k].append((time.perf_counter() - t0) * 1000)
    predict, answer, handler = (round(statistics.median(times[k]), 2) for k in ("predict", "answer", "handler"))
    serverless.unload()
    return {"predict_ms": predict, "host_answer_ms": answer, "lambda_handler_ms": handler,
            "overhead_ms": round(handler - predict, 2), "envelope_ms": round(handler - answer, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cold", type=int, default=3, help="cold starts per bundle source (median reported)")
    ap.add_argument("--warm", type=int, default=50, help="warm requests per variant (median reported)")
    args = ap.parse_args()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_", "LAMBDA_"))}
    base_env["PYTHONPATH"] = str(ROOT)
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        bundle = make_bundle(MOBILENET_MODEL, tmp / "mobilenet", name="mobilenet_v2", version=1,
                             labels=IMAGENET_LABELS.read_text().splitlines())
        keys = make_keys(tmp / "keys")
        sign_bundle(bundle, load_private_key(keys.private))
        archive = pack_bundle(bundle, tmp / "mobilenet.tar.gz")
        results: dict[str, Any] = {"cold_directory": cold({**base_env, "EDGE_BUNDLE": str(bundle)}, args.cold)}
        with start_moto_s3() as url:
            import boto3

            aws = {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                   "AWS_DEFAULT_REGION": "us-east-1"}
            s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="bench",
                              aws_secret_access_key="bench")
            s3.create_bucket(Bucket="models")
            s3.upload_file(str(archive), "models", "mobilenet.tar.gz")
            results["cold_s3_signed"] = cold({**base_env, **aws, "EDGE_BUNDLE": "s3://models/mobilenet.tar.gz",
                                              "EDGE_BUNDLE_PUBKEY": str(keys.public)}, args.cold)
        results["warm"] = warm(bundle, args.warm)
    print(f"{'cold start (median of ' + str(args.cold) + ')':<30} {'directory':>10} {'S3+signed':>10}")
    for k, label in (("import_s", "import cloud_sync.serverless"), ("fetch_s", "  fetch bundle"),
                     ("load_s", "  verify + load model"), ("first_request_s", "first request"),
                     ("in_process_s", "total in process"), ("process_s", "process exec to answer")):
        print(f"{label:<30} {results['cold_directory'][k]:>9}s {results['cold_s3_signed'][k]:>9}s")
    w = results["warm"]
    print(f"\n{'warm, per request (median of ' + str(args.warm) + ')':<38} {'ms':>8}")
    for k, label in (("predict_ms", "Model.predict (decoded image)"),
                     ("host_answer_ms", "BundleHost.answer (PNG bytes)"),
                     ("lambda_handler_ms", "lambda_handler (API GW v2 event)"),
                     ("overhead_ms", "handler overhead vs predict"),
                     ("envelope_ms", "  of which event + base64 + JSON")):
        print(f"{label:<38} {w[k]:>8}")
    print(json.dumps({"benchmark": "serverless", "model": "mobilenet_v2_1.0_224_quant", "cpus": os.cpu_count(),
                      "load_avg": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
                      **results}))


if __name__ == "__main__":
    main()
