"""A loaded bundle ready to predict: preprocess, backend, postprocess, all driven by the manifest."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _detection
from ._bundle import Bundle, open_bundle
from ._errors import BackendError, BundleError, InputError
from ._imaging import ImagePreprocessor
from ._manifest import Manifest, TensorSpec
from ._record import Detection
from .backends import Backend, BackendOptions, TensorInfo, load_backend

if TYPE_CHECKING:
    from ._signing import PublicKey

__all__ = ["Model", "Prediction", "RuntimeSettings", "resolve_settings"]

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """What one input gave. ``top_k`` for classifiers, ``values`` for regressors, ``detections``
    (best first, boxes in pixels of the original image) for detectors."""

    top_k: list[tuple[str, float]] | None = None
    values: list[float] | None = None
    scores: np.ndarray | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    detections: list[Detection] | None = None

    @property
    def label(self) -> str | None:
        if self.detections:
            return self.detections[0]["label"]
        return self.top_k[0][0] if self.top_k else None

    @property
    def score(self) -> float | None:
        if self.detections:
            return self.detections[0]["score"]
        return self.top_k[0][1] if self.top_k else None


@dataclass(frozen=True)
class RuntimeSettings:
    """Backend order and threads, as a device profile or the user chose them."""

    order: tuple[str, ...]
    threads: int
    profile: str | None
    #: the caller asked for ``threads``: the pipeline keeps them rather than splitting the cores
    #: between inference and decoding itself
    threads_fixed: bool = False


def resolve_settings(profile: Any = None, threads: int | None = None) -> RuntimeSettings:
    """Threads and backend order from the named (or detected) profile, overridden by ``threads``.

    A missing or unreadable profile is not fatal: the runtime falls back to every backend in
    registry order and one thread per core.
    """
    from .backends import BACKEND_NAMES, DEFAULT_ORDER

    prof = None
    try:
        import device_profiles
    except ImportError:
        log.debug("device_profiles is not importable; using defaults")
    else:
        try:
            prof = profile if isinstance(profile, device_profiles.Profile) else device_profiles.profile_for(profile)
        except device_profiles.ProfileError as exc:
            if profile is not None:
                raise  # the user named a profile: a typo must not pass silently
            # An unknown board must not stop a device from serving.
            log.warning("device profile detection failed (%s); using every backend, one thread per core", exc)
    cores = os.cpu_count() or 1
    if prof is None:
        return RuntimeSettings(DEFAULT_ORDER, threads or cores, None, threads is not None)
    for i, name in enumerate(prof.backends):
        if name not in BACKEND_NAMES:
            # Profiles sit below the runtime and cannot check names against its registry: here is where
            # a typo in a user's profile file is caught, before any model is loaded.
            raise BackendError(f"profile {prof.name}: backends[{i}]: unknown backend {name!r}; "
                               f"known: {', '.join(repr(n) for n in BACKEND_NAMES)}")
    # A profile describes the usual board; this one may have fewer cores (a container, a cgroup).
    return RuntimeSettings(tuple(prof.backends), threads or min(prof.threads, cores), prof.name,
                           threads is not None)


class Model:
    """A bundle loaded on a backend.

    >>> m = Model.load("mobilenet-bundle/")          # doctest: +SKIP
    >>> m.predict(load_image("cat.png")).label       # doctest: +SKIP
    'Egyptian cat'
    """

    def __init__(self, bundle: Bundle, backend: Backend, *, settings: RuntimeSettings | None = None) -> None:
        self.bundle = bundle
        self.manifest: Manifest = bundle.manifest
        self.backend = backend
        self.backend_name = type(backend).name
        self.settings = settings
        self.labels = bundle.labels()
        self._check_io()
        m = self.manifest
        self._pre: ImagePreprocessor | None = None
        if m.preprocess.kind == "image":
            self._pre = ImagePreprocessor(m.preprocess, self._input_spec(0))
        #: file sources may decode JPEGs at a reduced size (``load_image(reduce_for=...)``): the
        #: labels stay, the pixels move by resampling noise. Off for detection, whose boxes are
        #: mapped back onto the full image.
        self.reduced_decode = self._pre is not None and m.task != "detection"
        self._init_rows()
        self._score_idx = self._pick_scores_output()
        self._out_q = m.outputs[self._score_idx].quantization if self._score_idx < len(m.outputs) else None
        self.top_k = m.postprocess.top_k
        self._softmax = m.postprocess.softmax
        self._threshold = m.postprocess.threshold
        #: detection thresholds, from the manifest; `edge run --conf/--iou` overrides them
        self.score_threshold = m.postprocess.score_threshold
        self.iou_threshold = m.postprocess.iou_threshold
        self.max_detections = m.postprocess.max_detections

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        bundle: str | Path | Bundle,
        *,
        backend: str | None = None,
        threads: int | None = None,
        profile: Any = None,
        pubkey: PublicKey | list[PublicKey] | None = None,
    ) -> Model:
        """Open (and verify) a bundle and load it on ``backend`` or the profile's best one."""
        b = bundle if isinstance(bundle, Bundle) else open_bundle(bundle, pubkey=pubkey)
        settings = resolve_settings(profile, threads)
        opts = BackendOptions(
            threads=settings.threads, inputs=tuple(b.manifest.inputs), outputs=tuple(b.manifest.outputs)
        )
        be = load_backend(b.model_path, b.manifest.format, opts, backend=backend, order=settings.order)
        return cls(b, be, settings=settings)

    def set_threads(self, threads: int) -> None:
        """Reload the backend with ``threads`` inference threads (the pipeline gives cores to decoding
        this way); the same backend, the same model file, so the same answers."""
        if threads == self.backend.threads:
            return
        opts = BackendOptions(threads=threads, inputs=tuple(self.manifest.inputs),
                              outputs=tuple(self.manifest.outputs))
        new = load_backend(self.bundle.model_path, self.manifest.format, opts, backend=self.backend_name,
                           order=(self.backend_name,))
        old, self.backend = self.backend, new
        old.close()

    @property
    def image_preprocessor(self) -> ImagePreprocessor | None:
        """How images become the input tensor (None for tabular models)."""
        return self._pre

    def _check_io(self) -> None:
        """The manifest must describe the model it ships: a mismatch means a broken or tampered bundle."""
        for kind, declared, actual in (("input", self.manifest.inputs, self.backend.inputs),
                                       ("output", self.manifest.outputs, self.backend.outputs)):
            if not type(self.backend).reads_io:
                break  # it took its specs from the manifest: nothing to compare
            if len(declared) != len(actual):
                raise BundleError(f"{self.bundle.origin}: manifest lists {len(declared)} {kind}(s), "
                                  f"the model has {len(actual)}")
            for d, a in zip(declared, actual, strict=True):
                if d.dtype != a.dtype.name or not _shapes_agree(d.shape, a.shape):
                    raise BundleError(
                        f"{self.bundle.origin}: manifest says {kind} {d.name!r} is {d.dtype}{d.shape}, "
                        f"the model has {a.dtype.name}{list(a.shape)}")

    def _init_rows(self) -> None:
        """Precompute how a tabular row becomes the input tensor (done once: rows are hot)."""
        spec = self.manifest.inputs[0]
        self._row_model_dtype = np.dtype(spec.dtype)
        self._row_q = spec.quantization if self._row_model_dtype.kind in "iu" else None
        # Quantized inputs are given as real numbers; everything else in the model's own dtype.
        self._row_dtype = np.dtype(np.float32) if self._row_q is not None else self._row_model_dtype
        want = list(spec.shape[1:])
        self._row_size = int(np.prod(want)) if want and all(d > 0 for d in want) else None
        self._row_shape = tuple([1, *[d if d > 0 else -1 for d in want]]) if want else (1,)

    def _input_spec(self, i: int) -> TensorSpec:
        return self.manifest.inputs[i]

    def _pick_scores_output(self) -> int:
        outs = self.manifest.outputs
        wanted = self.manifest.postprocess.output
        if wanted is not None:
            for i, o in enumerate(outs):
                if o.name == wanted:
                    return i
            raise BundleError(f"{self.bundle.origin}: postprocess.output {wanted!r} is not an output of the model")
        for i, o in enumerate(outs):
            if "prob" in o.name.lower() and np.dtype(o.dtype).kind == "f":
                return i
        return 0

    # -- the three steps -------------------------------------------------------------------
    def preprocess(self, x: Any, *, reduced: bool = False) -> list[np.ndarray]:
        """An RGB image (HxWx3 uint8) or a tabular row (1-D numbers) to the model's input tensors.
        ``reduced``: see :class:`ImagePreprocessor` (large frames shrunk in two steps)."""
        if self._pre is not None:
            return [self._pre(x, reduced=reduced)]
        return [self._row(x)]

    def _row(self, x: Any) -> np.ndarray:
        try:
            arr = np.asarray(x, dtype=self._row_dtype)
        except (TypeError, ValueError) as exc:
            raise InputError(f"row cannot be read as numbers: {exc}") from exc
        if arr.ndim == 0 or (self._row_size is not None and arr.size != self._row_size):
            spec = self.manifest.inputs[0]
            raise InputError(f"row has {arr.size} value(s); input {spec.name!r} takes shape {spec.shape}")
        if self._row_q is not None:
            # An int8/uint8 model takes quantized values: real = scale * (q - zero_point).
            info = np.iinfo(self._row_model_dtype)
            q = np.rint(arr / self._row_q.scale + self._row_q.zero_point)
            arr = np.clip(q, info.min, info.max).astype(self._row_model_dtype)
        elif arr.dtype != self._row_model_dtype:
            arr = arr.astype(self._row_model_dtype)
        return arr.reshape(self._row_shape)

    def infer(self, tensors: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self.backend.run(tensors)

    def postprocess(self, outputs: Sequence[np.ndarray], *, image_size: tuple[int, int] | None = None) -> Prediction:
        """Output tensors to a Prediction. For detection, ``image_size`` (width, height of the image
        before preprocessing) maps boxes back to that image; without it boxes are in model-input pixels."""
        task = self.manifest.task
        if task == "detection":
            return self._detect(outputs, image_size)
        out = outputs[self._score_idx]
        if task in ("regression",) or (task == "tabular" and not self.labels):
            vals = _dequantize(np.asarray(out), self._out_q).reshape(-1)
            return Prediction(values=[float(v) for v in vals])
        scores = _dequantize(np.asarray(out), self._out_q).reshape(-1).astype(np.float32, copy=False)
        n = scores.size
        if 0 < n <= 64:
            fast = self._top_small(scores)
            if fast is not None:
                return fast
        if self._softmax is True or (self._softmax == "auto" and not _looks_like_probs(scores)):
            scores = _softmax(scores)
        k = min(self.top_k, n)
        if n <= 64:
            # Small outputs (tabular classifiers): one sort beats partition + sort.
            idx = np.argsort(-scores, kind="stable")[:k]
        else:
            idx = np.argpartition(-scores, k - 1)[:k]
            idx = idx[np.argsort(-scores[idx], kind="stable")]
        labels, n_labels, threshold = self.labels, len(self.labels), self._threshold
        top = [(labels[i] if i < n_labels else str(i), v)
               for i, v in zip(idx.tolist(), scores[idx].tolist(), strict=True) if v >= threshold]
        return Prediction(top_k=top, scores=scores)

    def _top_small(self, scores: np.ndarray) -> Prediction | None:
        """Top-k of a short score vector (tabular classifiers) in plain Python, which beats NumPy's
        per-call cost at this size; the same order as the stable argsort (ties: lower class first).
        None when a score is not finite (NaN does not sort): the NumPy path handles that."""
        v = scores.tolist()
        total = sum(v)
        if total != total or total in (math.inf, -math.inf):
            return None
        if self._softmax is True or (self._softmax == "auto" and not (
                min(v) >= -1e-6 and max(v) <= 1.0 + 1e-6 and 0.5 <= total <= 1.5)):
            scores = _softmax(scores)
            v = scores.tolist()
        order = sorted(range(len(v)), key=v.__getitem__, reverse=True)[:self.top_k]
        labels, n_labels, threshold = self.labels, len(self.labels), self._threshold
        top = [(labels[i] if i < n_labels else str(i), v[i]) for i in order if v[i] >= threshold]
        return Prediction(top_k=top, scores=scores)

    def _detect(self, outputs: Sequence[np.ndarray], image_size: tuple[int, int] | None) -> Prediction:
        post = self.manifest.postprocess
        if self._pre is None or post.head is None:
            raise BundleError(f"{self.bundle.origin}: detection needs image preprocessing and postprocess.head")
        floats = [_dequantize(np.asarray(o), spec.quantization)
                  for o, spec in zip(outputs, self.manifest.outputs, strict=False)]
        size = (self._pre.width, self._pre.height)
        try:
            cand = _detection.decode(post.head, floats, box_format=post.box_format or "xyxy",
                                     box_units=post.box_units or "pixels", input_size=size,
                                     score_threshold=self.score_threshold)
        except ValueError as exc:
            raise InputError(f"{self.bundle.origin}: cannot decode the {post.head} head: {exc}") from exc
        keep = _detection.nms(cand.boxes, cand.scores, cand.classes, iou_threshold=self.iou_threshold,
                              max_detections=self.max_detections)
        cand = cand.take(keep)
        geo = self._pre.geometry(*image_size) if image_size is not None else _detection.Geometry(*size, 1.0, 1.0)
        boxes = geo.to_source(cand.boxes)
        labels, n_labels = self.labels, len(self.labels)
        dets: list[Detection] = []
        for c, sc, box in zip(cand.classes.tolist(), cand.scores.tolist(), boxes.tolist(), strict=True):
            if box[2] <= box[0] or box[3] <= box[1]:
                continue  # nothing of it is inside the frame
            dets.append({"label": labels[c] if 0 <= c < n_labels else str(c), "score": round(float(sc), 6),
                         "box": [round(v, 2) for v in box]})
        return Prediction(detections=dets)

    def predict(self, x: Any) -> Prediction:
        t0 = time.perf_counter()
        tensors = [self._pre(x)] if self._pre is not None else [self._row(x)]
        t1 = time.perf_counter()
        outs = self.infer(tensors)
        t2 = time.perf_counter()
        pred = self.postprocess(outs, image_size=_image_size(x) if self._pre is not None else None)
        t3 = time.perf_counter()
        pred.latency_ms = _latency(t0, t1, t2, t3)
        return pred

    def predict_file(self, path: str | Path) -> Prediction:
        from ._imaging import load_image

        return self.predict(load_image(path))

    # -- info ------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def input_infos(self) -> list[TensorInfo]:
        return self.backend.inputs

    def close(self) -> None:
        self.backend.close()
        self.bundle.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Model {self.name} v{self.version} on {self.backend_name}>"


def _latency(t0: float, t1: float, t2: float, t3: float) -> dict[str, float]:
    """``latency_ms`` of one input from four ``perf_counter`` readings: before preprocessing,
    before inference, before postprocessing, at the end."""
    return {"preprocess": round((t1 - t0) * 1000, 3), "inference": round((t2 - t1) * 1000, 3),
            "postprocess": round((t3 - t2) * 1000, 3), "total": round((t3 - t0) * 1000, 3)}


def _image_size(x: Any) -> tuple[int, int] | None:
    """(width, height) of an HxW[xC] image array, or None for anything else."""
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) not in (2, 3):
        return None
    return int(shape[1]), int(shape[0])


def _shapes_agree(declared: Sequence[int], actual: Sequence[int]) -> bool:
    if len(declared) != len(actual):
        return False
    return all(d == a or d == -1 or a == -1 for d, a in zip(declared, actual, strict=True))


def _dequantize(x: np.ndarray, q: Any) -> np.ndarray:
    if q is None or x.dtype.kind == "f":
        return x.astype(np.float32, copy=False) if x.dtype.kind == "f" else x.astype(np.float32)
    return (x.astype(np.float32) - np.float32(q.zero_point)) * np.float32(q.scale)


def _looks_like_probs(s: np.ndarray) -> bool:
    if s.size == 0:
        return True
    if s.size <= 64:
        # Python's min/max/sum over a short list is cheaper than three numpy reductions.
        v = s.tolist()
        return min(v) >= -1e-6 and max(v) <= 1.0 + 1e-6 and 0.5 <= sum(v) <= 1.5
    # Quantized probabilities do not sum to exactly 1 (each class is rounded to a 1/256 step),
    # so the sum is only checked loosely; logits practically never all fall inside [0, 1].
    return bool(s.min() >= -1e-6 and s.max() <= 1.0 + 1e-6 and 0.5 <= float(s.sum()) <= 1.5)


def _softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max())
    out: np.ndarray = e / e.sum()
    return out
