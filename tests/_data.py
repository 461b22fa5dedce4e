"""Where the shared third-party test data lives, and what it must give (its README's table)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"

#: the reference table of ../shared/data/README.md: image -> (top-1 label, score)
MOBILENET_REFERENCE = {
    "cat.png": ("Egyptian cat", 0.79),
    "grace_hopper.png": ("military uniform", 0.92),
    "sunflower.png": ("daisy", 0.99),
    "potato_chips.png": ("packet", 0.86),
}
