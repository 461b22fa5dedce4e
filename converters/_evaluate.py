"""Run bundles through the runtime exactly as a device would, and time them side by side."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge_runtime import Detection, Model, TensorSpec, box_iou, load_image

from ._data import Sample, fit_tensor
from ._errors import DataError, ShapeError

__all__ = ["BoxAgreement", "Outputs", "box_agreement", "feed_for", "measure_latency", "quantize_input",
           "run_detector", "run_model"]


@dataclass
class Outputs:
    """What a variant gave on the eval inputs: class scores (N, C) or regression values (N, K)."""

    scores: np.ndarray
    classification: bool

    @property
    def top1(self) -> np.ndarray:
        return np.argmax(self.scores, axis=1)


def quantize_input(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """A float input tensor in the model's own input dtype, with its quantization parameters."""
    x = fit_tensor(x, spec, origin="input")
    dtype = np.dtype(spec.dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if spec.quantization is not None:
            q = np.rint(x / np.float32(spec.quantization.scale) + np.float32(spec.quantization.zero_point))
            return np.clip(q, info.min, info.max).astype(dtype)
        return np.clip(np.rint(x), info.min, info.max).astype(dtype)
    return x.astype(dtype, copy=False)


def feed_for(model: Model, sample: Sample, images: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The model's input tensors for one sample: images through the runtime's preprocessing."""
    if sample.path is not None:
        key = str(sample.path)
        if key not in images:
            images[key] = load_image(sample.path)
        return model.preprocess(images[key])
    assert sample.tensor is not None
    try:
        return [quantize_input(np.asarray(sample.tensor, dtype=np.float32), model.manifest.inputs[0])]
    except ShapeError as exc:
        raise DataError(f"{exc}") from exc


def run_model(model: Model, samples: Sequence[Sample], images: dict[str, np.ndarray], *, progress: bool,
              desc: str) -> Outputs:
    rows: list[np.ndarray] = []
    classification = True
    it: Sequence[Sample] = samples
    if progress:
        from tqdm import tqdm

        it = tqdm(samples, desc=desc, unit="input", leave=False)
    for s in it:
        pred = model.postprocess(model.infer(feed_for(model, s, images)))
        if pred.scores is not None:
            rows.append(np.asarray(pred.scores, dtype=np.float64).reshape(-1))
        else:
            classification = False
            rows.append(np.asarray(pred.values or [], dtype=np.float64).reshape(-1))
    return Outputs(np.stack(rows) if rows else np.zeros((0, 0)), classification)


def run_detector(model: Model, samples: Sequence[Sample], images: dict[str, np.ndarray], *, progress: bool,
                 desc: str) -> list[list[Detection]]:
    """Each sample's detections (after the bundle's own thresholds and NMS), boxes in pixels of the
    image when the sample is one, else of the model input."""
    out: list[list[Detection]] = []
    it: Sequence[Sample] = samples
    if progress:
        from tqdm import tqdm

        it = tqdm(samples, desc=desc, unit="input", leave=False)
    for s in it:
        feed = feed_for(model, s, images)
        size = None
        if s.path is not None:
            h, w = images[str(s.path)].shape[:2]
            size = (int(w), int(h))
        pred = model.postprocess(model.infer(feed), image_size=size)
        out.append(list(pred.detections or []))
    return out


@dataclass
class BoxAgreement:
    """How a variant's detections agree with the reference's (the float model's) on the same inputs.

    A detection matches a reference one of the same label with IoU >= the threshold, each
    reference matched at most once, best scores first (the way COCO's evaluation pairs boxes).
    """

    reference: int
    found: int
    matched: int
    mean_iou: float | None

    @property
    def recall(self) -> float:
        """Percent of the reference's boxes found again (100 when there were none to find)."""
        return 100.0 * self.matched / self.reference if self.reference else 100.0 if not self.found else 0.0

    @property
    def precision(self) -> float:
        """Percent of the variant's boxes that the reference also has."""
        return 100.0 * self.matched / self.found if self.found else 100.0 if not self.reference else 0.0


def box_agreement(reference: Sequence[Sequence[Detection]], found: Sequence[Sequence[Detection]],
                  iou_threshold: float = 0.5) -> BoxAgreement:
    """Matched-box agreement over a set of inputs (``reference[i]`` and ``found[i]`` per input)."""
    n_ref = n_found = n_matched = 0
    ious: list[float] = []
    for ref, got in zip(reference, found, strict=True):
        n_ref += len(ref)
        n_found += len(got)
        used = np.zeros(len(ref), dtype=bool)
        ref_boxes = np.asarray([r["box"] for r in ref], dtype=np.float64).reshape(-1, 4)
        ref_labels = [r["label"] for r in ref]
        for d in sorted(got, key=lambda d: -d["score"]):
            if not len(ref):
                break
            iou = box_iou(np.asarray(d["box"], dtype=np.float64), ref_boxes)
            same = np.asarray([lbl == d["label"] for lbl in ref_labels]) & ~used
            iou = np.where(same, iou, -1.0)
            j = int(np.argmax(iou))
            if iou[j] >= iou_threshold:
                used[j] = True
                n_matched += 1
                ious.append(float(iou[j]))
    return BoxAgreement(n_ref, n_found, n_matched, float(np.mean(ious)) if ious else None)


def measure_latency(models: Sequence[Model], feeds: Sequence[list[np.ndarray]], runs: int,
                    warmup: int = 3) -> list[float]:
    """p50 inference latency (ms) of each model, measured interleaved.

    One run of each model per round, rounds repeated: a burst of load from another process on
    this shared machine then hits every variant alike instead of whichever ran at that moment.
    """
    for m, f in zip(models, feeds, strict=True):
        for _ in range(warmup):
            m.infer(f)
    times: list[list[float]] = [[] for _ in models]
    for _ in range(runs):
        for i, (m, f) in enumerate(zip(models, feeds, strict=True)):
            t0 = time.perf_counter()
            m.infer(f)
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) * 1000.0 for t in times]
