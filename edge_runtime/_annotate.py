"""Frames with their detections drawn on them (Pillow ImageDraw): `edge run --save-annotated DIR`."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ._errors import DecodeError, SinkError
from ._imaging import load_image
from ._record import Detection, Record

__all__ = ["AnnotatedImageSink", "annotation_color", "draw_detections"]

log = logging.getLogger(__name__)

#: distinct, saturated colours; a label always gets the same one
_PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 56, 56), (255, 157, 151), (255, 112, 31), (255, 178, 29), (207, 210, 49), (72, 249, 10),
    (146, 204, 23), (61, 219, 134), (26, 147, 52), (0, 212, 187), (44, 153, 168), (0, 194, 255),
    (52, 69, 147), (100, 115, 255), (0, 24, 236), (132, 56, 255), (82, 0, 133), (203, 56, 255),
    (255, 149, 200), (255, 55, 199),
)


def annotation_color(label: str) -> tuple[int, int, int]:
    """The RGB colour boxes of ``label`` are drawn in (stable across runs and processes)."""
    return _PALETTE[zlib.crc32(label.encode("utf-8")) % len(_PALETTE)]


def draw_detections(image: np.ndarray | Image.Image, detections: Sequence[Detection]) -> Image.Image:
    """A copy of ``image`` (RGB) with each detection's box and ``label score`` drawn on it."""
    im = image.convert("RGB") if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image)).convert("RGB")
    im = im.copy()
    draw = ImageDraw.Draw(im)
    width = max(2, round(min(im.size) / 300))
    for d in detections:
        color = annotation_color(d["label"])
        x1, y1, x2, y2 = (float(v) for v in d["box"])
        draw.rectangle((x1, y1, x2, y2), outline=color, width=width)
        text = f"{d['label']} {d['score']:.2f}"
        tx1, ty1, tx2, ty2 = draw.textbbox((0, 0), text)
        tw, th = tx2 - tx1 + 4, ty2 - ty1 + 4
        top = y1 - th if y1 - th >= 0 else y1  # above the box, or inside it at the top edge
        draw.rectangle((x1, top, x1 + tw, top + th), fill=color)
        luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
        draw.text((x1 + 2 - tx1, top + 2 - ty1), text, fill=(0, 0, 0) if luminance > 140 else (255, 255, 255))
    return im


class AnnotatedImageSink:
    """Writes each detection frame of an image-file source to ``out_dir`` as a PNG with its
    detections drawn (lossless, so box colours are exact). Frames that failed, frames without
    detections, and frames that are not files (cameras, streams) are skipped."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"{self.out_dir}: cannot create the annotated-frames directory ({exc.strerror})") from exc
        self.written = 0
        self._names: set[str] = set()
        self._warned = False

    def write(self, record: Record) -> None:
        dets = record.get("detections")
        if dets is None or "error" in record:
            return
        src = Path(record["source"])
        if not src.is_file():
            if not self._warned:
                log.warning("--save-annotated draws on image files only; %s is not one", record["source"])
                self._warned = True
            return
        try:
            image = load_image(src)
        except DecodeError as exc:
            log.warning("cannot annotate %s: %s", src, exc)
            return
        name = f"{src.stem}.png"
        if name in self._names:
            name = f"{src.stem}-{record['frame']}.png"
        self._names.add(name)
        path = self.out_dir / name
        try:
            draw_detections(image, dets).save(path, format="PNG")
        except OSError as exc:
            raise SinkError(f"{path}: cannot write the annotated frame ({exc})") from exc
        self.written += 1

    def close(self) -> None:
        log.info("%d annotated frame(s) in %s", self.written, self.out_dir)
