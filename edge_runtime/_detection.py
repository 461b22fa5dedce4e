"""Object detection: decode a detection head's outputs, per-class NMS, boxes back to the frame.

Pure NumPy, so that every backend (LiteRT, onnxruntime, OpenCV DNN) gives the same detections
from the same output tensors. Three head layouts are known:

- ``ssd``: TensorFlow's ``TFLite_Detection_PostProcess`` outputs: boxes ``[1, N, 4]``, classes
  ``[1, N]``, scores ``[1, N]`` and count ``[1]`` (boxes usually ``yxyx``, normalised);
- ``yolo``: the raw Ultralytics (v8 and later) head ``[1, 4 + nc, N]``: box then one score per
  class for each of N anchors, no objectness, no NMS (boxes ``cxcywh``);
- ``yolov5``: the raw YOLOv5-style head ``[1, N, 5 + nc]``: box, objectness, class scores.

Boxes are decoded to ``xyxy`` in pixels of the model input, suppressed per class (greedy NMS), then
mapped back through the preprocessing :class:`Geometry` to pixels of the original frame.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

__all__ = [
    "BOX_DEFAULTS",
    "HEADS",
    "BoxFormat",
    "BoxUnits",
    "Candidates",
    "Geometry",
    "Head",
    "box_iou",
    "decode",
    "guess_head",
    "head_problem",
    "nms",
    "shapes_text",
    "ssd_roles",
    "unknown_head_message",
]

log = logging.getLogger(__name__)

Head = Literal["ssd", "yolo", "yolov5"]
BoxFormat = Literal["xyxy", "yxyx", "cxcywh"]
BoxUnits = Literal["normalized", "pixels"]

HEADS: tuple[str, ...] = get_args(Head)

#: the box format and units each head usually has (Ultralytics TFLite exports are normalised)
BOX_DEFAULTS: dict[str, tuple[BoxFormat, BoxUnits]] = {
    "ssd": ("yxyx", "normalized"),
    "yolo": ("cxcywh", "pixels"),
    "yolov5": ("cxcywh", "pixels"),
}

#: candidates kept (best scores first) before NMS, as Ultralytics does, so a flood of low boxes
#: cannot make NMS quadratic
MAX_CANDIDATES = 30_000

_HEAD_HELP = ("ssd (4 outputs: boxes [1,N,4], classes [1,N], scores [1,N], count [1]), "
              "yolo (one output [1,4+classes,N]) or yolov5 (one output [1,N,5+classes])")


@dataclass(frozen=True)
class Geometry:
    """How a ``src_w`` x ``src_h`` frame became the model input: ``input = source * scale + pad``.

    The preprocessor reports it (:meth:`ImagePreprocessor.geometry`) so that boxes found in the
    model's input map back to the original frame: squash has no pad and two scales, letterbox one
    scale and a pad, center-crop one scale and a negative pad.
    """

    src_w: int
    src_h: int
    scale_x: float
    scale_y: float
    pad_x: float = 0.0
    pad_y: float = 0.0

    def to_source(self, boxes: np.ndarray) -> np.ndarray:
        """``[K, 4]`` xyxy boxes in input pixels to source pixels, clipped to the frame."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        out = np.empty_like(b)
        out[:, 0::2] = (b[:, 0::2] - self.pad_x) / self.scale_x
        out[:, 1::2] = (b[:, 1::2] - self.pad_y) / self.scale_y
        np.clip(out[:, 0::2], 0.0, float(self.src_w), out=out[:, 0::2])
        np.clip(out[:, 1::2], 0.0, float(self.src_h), out=out[:, 1::2])
        return out

    def to_input(self, boxes: np.ndarray) -> np.ndarray:
        """``[K, 4]`` xyxy boxes in source pixels to input pixels (not clipped)."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        out = np.empty_like(b)
        out[:, 0::2] = b[:, 0::2] * self.scale_x + self.pad_x
        out[:, 1::2] = b[:, 1::2] * self.scale_y + self.pad_y
        return out


@dataclass(frozen=True)
class Candidates:
    """Decoded detections: ``boxes`` ``[K, 4]`` xyxy (float64), ``scores`` ``[K]``, ``classes`` ``[K]`` int."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def take(self, idx: np.ndarray) -> Candidates:
        return Candidates(self.boxes[idx], self.scores[idx], self.classes[idx])


# -- which head a model has --------------------------------------------------------------------

def shapes_text(names: Sequence[str], shapes: Sequence[Sequence[int]]) -> str:
    """``name [1, 84, 8400], ...``: the outputs as error messages show them."""
    return ", ".join(f"{n} {list(s)}" for n, s in zip(names, shapes, strict=True)) or "(no outputs)"


def ssd_roles(shapes: Sequence[Sequence[int]]) -> tuple[int, int, int, int] | None:
    """Indices of (boxes, classes, scores, count) among SSD post-processed outputs, or None.

    Boxes are the ``[1, N, 4]`` output and count the one-element output; of the two ``[1, N]``
    outputs the first is taken as classes (TensorFlow's order); :func:`decode` swaps them at run
    time when the values say otherwise (scores are fractions, classes whole numbers).
    """
    if len(shapes) != 4:
        return None
    boxes = [i for i, s in enumerate(shapes) if len(s) == 3 and s[-1] == 4]
    count = [i for i, s in enumerate(shapes) if len(s) in (1, 2) and int(np.prod(s)) == 1]
    rest = [i for i in range(4) if i not in boxes[:1] + count[:1]]
    if len(boxes) < 1 or len(count) < 1 or len(rest) != 2:
        return None
    n = shapes[boxes[0]][1]
    for i in rest:
        s = shapes[i]
        if len(s) != 2 or (n > 0 and s[1] > 0 and s[1] != n):
            return None
    return boxes[0], rest[0], rest[1], count[0]


def _single_rank3(shapes: Sequence[Sequence[int]]) -> tuple[int, int] | None:
    if len(shapes) != 1 or len(shapes[0]) != 3 or shapes[0][0] not in (1, -1):
        return None
    return int(shapes[0][1]), int(shapes[0][2])


def head_problem(head: str, shapes: Sequence[Sequence[int]]) -> str | None:
    """Why outputs of these shapes cannot be read as ``head``; None when they can."""
    if head == "ssd":
        if ssd_roles(shapes) is None:
            return "ssd needs 4 outputs: boxes [1,N,4], classes [1,N], scores [1,N], count [1]"
        return None
    if head in ("yolo", "yolov5"):
        dims = _single_rank3(shapes)
        least = 5 if head == "yolo" else 6
        if dims is None or min(dims) < least:
            return (f"{head} needs one output [1,4+classes,N]" if head == "yolo"
                    else f"{head} needs one output [1,N,5+classes]")
        return None
    return f"unknown head {head!r}; known: {', '.join(HEADS)}"


def guess_head(shapes: Sequence[Sequence[int]], *, classes: int | None = None) -> Head | None:
    """The head layout that outputs of these shapes have, or None.

    ``classes`` (from the model's metadata or labels) settles ``[1, A, B]``: 4 + classes box and
    score channels is ``yolo``, 5 + classes is ``yolov5``. Without it, channels first (A < B) is
    ``yolo`` (Ultralytics v8+), channels last ``yolov5``.
    """
    if ssd_roles(shapes) is not None:
        return "ssd"
    dims = _single_rank3(shapes)
    if dims is None or min(dims) < 5:
        return None
    a, b = dims
    channels = min(a, b)
    if classes:
        if channels == 4 + classes:
            return "yolo"
        if channels == 5 + classes:
            return "yolov5"
    return "yolo" if a < b else "yolov5"


def unknown_head_message(names: Sequence[str], shapes: Sequence[Sequence[int]], head: str | None = None) -> str:
    seen = shapes_text(names, shapes)
    if head is not None:
        return (f"the model's outputs {seen} do not fit --head {head}: {head_problem(head, shapes)}; "
                f"known heads: {_HEAD_HELP}")
    return (f"the model's outputs {seen} match no detection head this runtime knows: {_HEAD_HELP}. "
            "If the model has one of these layouts, say which with --head ssd|yolo|yolov5 "
            "(and --box-format xyxy|yxyx|cxcywh --box-units normalized|pixels)")


# -- decoding -----------------------------------------------------------------------------------

def _to_xyxy(boxes: np.ndarray, box_format: str, box_units: str, input_size: tuple[int, int]) -> np.ndarray:
    b = boxes.astype(np.float64, copy=False)
    if box_format == "yxyx":
        b = b[:, [1, 0, 3, 2]]
    elif box_format == "cxcywh":
        half_w, half_h = b[:, 2] / 2, b[:, 3] / 2
        b = np.stack([b[:, 0] - half_w, b[:, 1] - half_h, b[:, 0] + half_w, b[:, 1] + half_h], axis=1)
    elif box_format != "xyxy":
        raise ValueError(f"unknown box format {box_format!r}")
    else:
        b = b.copy()
    if box_units == "normalized":
        w, h = input_size
        b[:, 0::2] *= w
        b[:, 1::2] *= h
    return b


def _finite_rows(boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    return np.isfinite(scores) & np.isfinite(boxes).all(axis=1)


def decode(
    head: str,
    outputs: Sequence[np.ndarray],
    *,
    box_format: str,
    box_units: str,
    input_size: tuple[int, int],
    score_threshold: float,
) -> Candidates:
    """Outputs (dequantized, in manifest order) to candidates scoring at least ``score_threshold``.

    Boxes come out ``xyxy`` in pixels of the model input (``input_size`` is width, height). Rows
    with a NaN or infinite score or box coordinate are dropped, never raised on.
    """
    if head == "ssd":
        roles = ssd_roles([o.shape for o in outputs])
        if roles is None:
            raise ValueError(head_problem("ssd", [o.shape for o in outputs]))
        ib, ic, isc, ict = roles
        boxes = np.asarray(outputs[ib], dtype=np.float64).reshape(-1, 4)
        classes = np.asarray(outputs[ic], dtype=np.float64).reshape(-1)
        scores = np.asarray(outputs[isc], dtype=np.float64).reshape(-1)
        if _looks_swapped(classes, scores):
            classes, scores = scores, classes
        count = float(np.asarray(outputs[ict]).reshape(-1)[0])
        n = boxes.shape[0] if not np.isfinite(count) else int(np.clip(count, 0, boxes.shape[0]))
        boxes, classes, scores = boxes[:n], classes[:n], scores[:n]
        keep = _finite_rows(boxes, scores) & np.isfinite(classes) & (classes >= 0) & (scores >= score_threshold)
        boxes, classes, scores = boxes[keep], classes[keep], scores[keep]
        cls = np.rint(classes).astype(np.int64)
    elif head in ("yolo", "yolov5"):
        a = np.asarray(outputs[0])
        if a.ndim != 3 or a.shape[0] != 1:
            raise ValueError(head_problem(head, [a.shape]))
        a = a[0]
        if a.shape[0] < a.shape[1]:
            a = a.T  # channels first ([4+nc, N], Ultralytics): one row per anchor
        a = a.astype(np.float32, copy=False)
        # yolo: one score per class; yolov5: class probability times objectness
        cls_scores = a[:, 4:] if head == "yolo" else a[:, 5:] * a[:, 4:5]
        with np.errstate(invalid="ignore"):
            best = cls_scores.max(axis=1)
            keep = (best >= score_threshold) & np.isfinite(best) & np.isfinite(a[:, :4]).all(axis=1)
        rows = np.flatnonzero(keep)
        cls = np.argmax(cls_scores[rows], axis=1).astype(np.int64)
        scores = best[rows].astype(np.float64)
        boxes = a[rows, :4]
    else:
        raise ValueError(f"unknown detection head {head!r}; known: {', '.join(HEADS)}")
    xyxy = _to_xyxy(boxes, box_format, box_units, input_size)
    ok = np.isfinite(xyxy).all(axis=1)
    return Candidates(xyxy[ok], scores[ok], cls[ok])


def _looks_swapped(classes: np.ndarray, scores: np.ndarray) -> bool:
    """True when the tensor taken for classes holds fractions and the one for scores whole numbers."""
    c, s = classes[np.isfinite(classes)], scores[np.isfinite(scores)]
    if c.size == 0 or s.size == 0:
        return False
    c_whole = bool(np.all(c == np.rint(c)))
    s_whole = bool(np.all(s == np.rint(s)))
    return s_whole and not c_whole


# -- non-maximum suppression ---------------------------------------------------------------------

def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with each of ``boxes`` ``[K, 4]``."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = max(0.0, float(box[2] - box[0])) * max(0.0, float(box[3] - box[1]))
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    union = area + areas - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return np.asarray(iou)


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    *,
    iou_threshold: float,
    max_detections: int,
) -> np.ndarray:
    """Greedy per-class NMS: indices of the kept boxes, best score first.

    A box is suppressed by a better one of the same class overlapping it with IoU above
    ``iou_threshold``; boxes of different classes never suppress each other (each class is
    shifted to its own region of the plane, so one vectorised pass handles every class).
    """
    n = int(scores.shape[0])
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")[:MAX_CANDIDATES]
    b = np.asarray(boxes, dtype=np.float64)
    span = float(np.max(np.abs(b))) * 2 + 1.0 if b.size else 1.0
    shifted = b + (np.asarray(classes, dtype=np.float64) * span)[:, None]
    keep: list[int] = []
    while order.size and len(keep) < max_detections:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        if rest.size == 0:
            break
        order = rest[box_iou(shifted[i], shifted[rest]) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)
