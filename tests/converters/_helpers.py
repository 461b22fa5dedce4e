"""Constants shared by the converter tests."""

from __future__ import annotations

REFERENCE_IMAGES = ("cat.png", "grace_hopper.png", "sunflower.png", "potato_chips.png")
