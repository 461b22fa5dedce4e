"""The shared third-party test data (../shared/data) and what it must give (its README's table)."""

from __future__ import annotations

from tests.support.paths import ROOT, SHARED

__all__ = ["IMAGENET_LABELS", "IMAGES_DIR", "MOBILENET_MODEL", "MOBILENET_REFERENCE", "MOBILENET_TOP1",
           "REFERENCE_IMAGES", "ROOT", "SHARED"]

MOBILENET_MODEL = SHARED / "models" / "mobilenet_v2_1.0_224_quant.tflite"
IMAGENET_LABELS = SHARED / "labels" / "imagenet_labels.txt"
IMAGES_DIR = SHARED / "images"

#: the reference table of ../shared/data/README.md: image -> (top-1 label, score)
MOBILENET_REFERENCE = {
    "cat.png": ("Egyptian cat", 0.79),
    "grace_hopper.png": ("military uniform", 0.92),
    "sunflower.png": ("daisy", 0.99),
    "potato_chips.png": ("packet", 0.86),
}
#: the same table without the scores: image -> top-1 label
MOBILENET_TOP1 = {name: label for name, (label, _) in MOBILENET_REFERENCE.items()}
REFERENCE_IMAGES = tuple(MOBILENET_REFERENCE)
