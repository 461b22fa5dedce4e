"""Hybrid routing: which path answers each frame (local model or cloud), and why.

The router is the pipeline's ``predictor``: it gets the frame and its preprocessed tensors and
returns the record. Every record carries ``path`` (``local`` or ``cloud``) and ``route``, the
reason::

    offline-mode     offline: local only
    cloud-ok         online: the cloud answered within the deadline
    cloud-timeout    the cloud missed the deadline: the local answer
    cloud-error      the cloud failed (refused, reset, HTTP error): the local answer
    cloud-busy       every cloud slot is taken by slower calls: the local answer, at once
    breaker-open     the cloud failed recently; not asked until the breaker's next probe
    confident        cascade: the local top score reached the threshold
    below-threshold  cascade: the local top score was low, the cloud answered

For a detection model the cascade's local confidence is the best detection's score, and 0 when
the frame has no detection at all (nothing found is no reason to be sure), so the cloud is asked
for both. The cloud's answer must then carry ``detections`` (``[{label, score, box}]``, boxes in
pixels of the frame sent, which is the original frame); a cloud that answers a detector's frame
with labels only has not answered it (``cloud-error``), so a stream's records keep one kind.

Deadlines: a frame never waits on the network longer than ``deadline_ms``. In online mode the
local model runs while the cloud call is in flight, so a slow or dead cloud costs a frame at most
its deadline, and once the breaker opens it costs nothing at all; the local frame rate is the
same as offline.
"""

from __future__ import annotations

import io
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from edge_runtime import Detection, EdgeError, Model, ModelRef, Prediction, Record, error_record, make_record, utc_now
from edge_runtime.sources import Frame

from ._config import BreakerConfig, RouterConfig
from ._verify import prediction_ok

__all__ = ["CircuitBreaker", "CloudAnswer", "CloudClassifier", "Router"]

log = logging.getLogger(__name__)


State = Literal["closed", "open", "half-open"]
_ENCODED_AS_IS = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


class CircuitBreaker:
    """closed → (``failures`` in a row) → open → (jittered backoff) → half-open: one probe →
    closed on success, open again with a doubled backoff on failure. Thread-safe."""

    def __init__(self, config: BreakerConfig, *, clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._state: State = "closed"
        self._failures = 0
        self._opened = 0  # consecutive openings, for the exponential backoff
        self._retry_at = 0.0
        self._probe_out = False
        self.transitions: list[tuple[State, State]] = []

    @property
    def state(self) -> State:
        with self._lock:
            return self._state

    def retry_in(self) -> float:
        """Seconds until the next probe is allowed (0 when calls are allowed now)."""
        with self._lock:
            return max(0.0, self._retry_at - self._clock()) if self._state == "open" else 0.0

    def allow(self) -> bool:
        """May a call go out now? In half-open, only one caller (the probe) gets True."""
        with self._lock:
            if self._state == "closed":
                return True
            if self._state == "open":
                if self._clock() < self._retry_at:
                    return False
                self._move("half-open")
            if self._probe_out:
                return False
            self._probe_out = True
            return True

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened = 0
            self._probe_out = False
            if self._state != "closed":
                self._move("closed")

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._state == "half-open" or (self._state == "closed" and self._failures >= self.config.failures):
                self._open()
            self._probe_out = False

    def release(self) -> None:
        """A call that was allowed but never made (nothing to judge): let another probe go."""
        with self._lock:
            self._probe_out = False

    def _open(self) -> None:
        c = self.config
        step = min(c.backoff_max_s, c.backoff_s * 2 ** min(self._opened, 30))
        delay = step * (1 - c.jitter) + self._rng.uniform(0, step * c.jitter)
        self._opened += 1
        self._retry_at = self._clock() + delay
        self._move("open")
        log.warning("cloud circuit breaker open: next probe in %.1f s", delay)

    def _move(self, new: State) -> None:
        self.transitions.append((self._state, new))
        if new == "closed":
            log.info("cloud circuit breaker closed: the cloud answers again")
        self._state = new


class CloudAnswer(Protocol):
    def __call__(self, data: bytes, content_type: str, *, deadline: float) -> dict[str, Any]: ...


class CloudClassifier:
    """The cloud path through ``edge_device.client.CloudClient.classify``; errors keep their class
    (TransportError, DeadlineExceeded, HTTPStatusError) for the router to tell them apart."""

    def __init__(self, base_url: str, token: str | None, model: str, top_k: int) -> None:
        from edge_device.client import CloudClient

        self._client = CloudClient(base_url, token)
        self.model = model
        self.top_k = top_k

    def __call__(self, data: bytes, content_type: str, *, deadline: float) -> dict[str, Any]:
        answer: dict[str, Any] = self._client.classify(data, self.model, top_k=self.top_k, deadline=deadline,
                                                       content_type=content_type)
        return answer


class Router:
    """A pipeline predictor that routes each frame by ``config.mode``; see the module docstring."""

    def __init__(self, config: RouterConfig, cloud: CloudAnswer | None, *,
                 on_local: Callable[[Model, bool], None] | None = None,
                 breaker: CircuitBreaker | None = None) -> None:
        self.config = config
        self.mode = config.mode
        self.cloud = cloud
        self.breaker = breaker or CircuitBreaker(config.breaker)
        self.deadline_s = config.deadline_ms / 1000.0
        self.on_local = on_local
        self._pool: ThreadPoolExecutor | None = None
        if cloud is not None and self.mode != "offline":
            self._pool = ThreadPoolExecutor(config.max_in_flight, thread_name_prefix="cloud")
        self._in_flight = threading.BoundedSemaphore(config.max_in_flight)
        self.counts: dict[str, int] = {}
        # Which exceptions mean "the cloud path failed": the client's own tree (transport, deadline,
        # HTTP status) and ours (an unreadable answer). Anything else is a bug and is not hidden.
        self._errors: tuple[type[BaseException], ...] = (_CloudPathError,)
        self._timeouts: tuple[type[BaseException], ...] = (TimeoutError,)
        if self._pool is not None:
            from edge_device.client import ClientError, DeadlineExceeded

            self._errors = (_CloudPathError, ClientError)
            self._timeouts = (DeadlineExceeded, TimeoutError)
        self._count_lock = threading.Lock()

    def close(self) -> None:
        if self._pool is not None:
            # Calls in flight end by their own deadline; nobody waits for them.
            self._pool.shutdown(wait=False, cancel_futures=True)

    # -- the predictor -----------------------------------------------------------------------
    def __call__(self, model: Model, frame: Frame, tensors: list[np.ndarray]) -> Record:
        if self.mode == "offline" or self._pool is None:
            return self._finish(self._local(model, frame, tensors), "offline-mode")
        if self.mode == "online":
            return self._online(model, frame, tensors)
        return self._cascade(model, frame, tensors)

    def _online(self, model: Model, frame: Frame, tensors: list[np.ndarray]) -> Record:
        t0 = time.perf_counter()
        allowed = self.breaker.allow()
        started = self._submit(frame, _is_detector(model)) if allowed else None
        local = self._local(model, frame, tensors)  # runs while the cloud call is in flight
        if not allowed:
            return self._finish(local, "breaker-open")
        if started is None:  # every cloud slot is taken by slower calls: answer locally, now
            return self._finish(local, "cloud-busy", cloud_wait_ms=0.0)
        fut, call = started
        rec, waited = self._await(fut, call, t0)
        if rec is not None:
            return self._finish(rec, "cloud-ok", cloud_wait_ms=waited)
        return self._finish(local, self._last_reason(fut), cloud_wait_ms=waited)

    def _cascade(self, model: Model, frame: Frame, tensors: list[np.ndarray]) -> Record:
        local = self._local(model, frame, tensors)
        score = _confidence(local)
        if score is not None and score >= self.config.threshold:
            return self._finish(local, "confident")
        if "values" in local and "error" not in local:
            return self._finish(local, "confident")  # a regressor has no confidence to judge
        if not self.breaker.allow():
            return self._finish(local, "breaker-open", local_score=score)
        t0 = time.perf_counter()
        started = self._submit(frame, _is_detector(model))
        if started is None:
            return self._finish(local, "cloud-busy", cloud_wait_ms=0.0, local_score=score)
        fut, call = started
        rec, waited = self._await(fut, call, t0)
        if rec is not None:
            return self._finish(rec, "below-threshold", cloud_wait_ms=waited, local_score=score)
        return self._finish(local, self._last_reason(fut), cloud_wait_ms=waited, local_score=score)

    # -- pieces --------------------------------------------------------------------------------
    def _local(self, model: Model, frame: Frame, tensors: list[np.ndarray]) -> Record:
        pre = float(frame.meta.get("preprocess_ms", 0.0))
        t0 = time.perf_counter()
        try:
            outs = model.infer(tensors)
            t1 = time.perf_counter()
            # the frame's size (the pipeline notes it when it decodes) maps detection boxes back onto it
            pred = model.postprocess(outs, image_size=frame.meta.get("image_size"))
        except EdgeError as exc:
            # The model failed on a frame it was given ready: the model's fault, not the source's.
            if self.on_local is not None:
                self.on_local(model, False)
            rec = error_record(model, frame, str(exc))
            rec["error_kind"] = "model"
            return rec
        t2 = time.perf_counter()
        pred.latency_ms = {"preprocess": round(pre, 3), "inference": round((t1 - t0) * 1000, 3),
                           "postprocess": round((t2 - t1) * 1000, 3), "total": round(pre + (t2 - t0) * 1000, 3)}
        ok = prediction_ok(pred)
        if self.on_local is not None:
            self.on_local(model, ok)
        rec = make_record(model, frame, pred)
        if not ok:
            rec["suspect"] = "non-finite or empty output"
        return rec

    def _submit(self, frame: Frame, detector: bool = False) -> tuple[Future[Record], _Call] | None:
        """Start a cloud call (the breaker already allowed it); None when every slot is busy."""
        if not self._in_flight.acquire(blocking=False):
            self.breaker.release()
            return None
        assert self._pool is not None
        call = _Call(self.breaker)
        try:
            fut = self._pool.submit(self._call_cloud, frame, call, detector)
        except RuntimeError:  # the pool is shut down: the agent is stopping
            self._in_flight.release()
            self.breaker.release()
            return None
        fut.add_done_callback(lambda f: self._call_done(f, call))
        return fut, call

    def _call_done(self, fut: Future[Record], call: _Call) -> None:
        self._in_flight.release()
        if fut.cancelled():
            call.abandon()

    def _call_cloud(self, frame: Frame, call: _Call, detector: bool = False) -> Record:
        """Runs on a cloud thread: encode, ask, read the answer."""
        assert self.cloud is not None
        t0 = time.perf_counter()
        try:
            data, ctype = self._encode(frame)
        except (OSError, ValueError) as exc:
            call.abandon()  # the frame's fault, not the cloud's
            raise _CloudPathError(f"frame cannot be encoded for the cloud: {exc}") from exc
        t_enc = time.perf_counter()
        try:
            answer = self.cloud(data, ctype, deadline=max(0.001, self.deadline_s - (t_enc - t0)))
            t1 = time.perf_counter()
            rec = self._cloud_record(frame, answer, (t_enc - t0) * 1000, (t1 - t_enc) * 1000, detector=detector)
        except self._errors:
            call.judge(False)
            raise
        call.judge(True)
        return rec

    def _await(self, fut: Future[Record], call: _Call, t0: float) -> tuple[Record | None, float]:
        """Wait for the cloud no longer than what is left of the deadline."""
        remaining = self.deadline_s - (time.perf_counter() - t0)
        w0 = time.perf_counter()
        try:
            rec: Record | None = fut.result(timeout=max(0.0, remaining))
        except FutureTimeout:
            # The deadline is the verdict: a cloud that answers later has still failed this frame.
            call.judge(False)
            fut.cancel()
            rec = None
        except self._errors:
            rec = None  # why is read from the future by _last_reason
        return rec, round((time.perf_counter() - w0) * 1000, 3)

    def _last_reason(self, fut: Future[Record]) -> str:
        if not fut.done() or fut.cancelled():
            return "cloud-timeout"
        exc = fut.exception()
        if exc is None:
            return "cloud-timeout"  # answered, but after the frame stopped waiting
        return "cloud-timeout" if isinstance(exc, self._timeouts) else "cloud-error"

    def _encode(self, frame: Frame) -> tuple[bytes, str]:
        # A JPEG/PNG file is sent as it is: no decode-encode round trip, no quality lost.
        src = Path(frame.source) if frame.source else None
        if src is not None and src.suffix.lower() in _ENCODED_AS_IS and src.is_file():
            return src.read_bytes(), _ENCODED_AS_IS[src.suffix.lower()]
        from PIL import Image

        arr = frame.data
        if not isinstance(arr, np.ndarray):
            raise ValueError("frame has no image to send")
        buf = io.BytesIO()
        im = Image.fromarray(arr if arr.dtype == np.uint8 else np.clip(arr, 0, 255).astype(np.uint8))
        if self.config.image_format == "png":
            im.save(buf, format="PNG")
            return buf.getvalue(), "image/png"
        im.convert("RGB").save(buf, format="JPEG", quality=self.config.jpeg_quality)
        return buf.getvalue(), "image/jpeg"

    @staticmethod
    def _cloud_record(frame: Frame, answer: dict[str, Any], encode_ms: float, rtt_ms: float, *,
                      detector: bool = False) -> Record:
        if not isinstance(answer, dict):
            raise _CloudPathError("the cloud's answer is not a JSON object")
        dets: list[Detection] | None = None
        top: Any = None
        if detector:
            dets = _cloud_detections(answer.get("detections"))
        else:
            top = answer.get("top_k")
            if not isinstance(top, list):
                raise _CloudPathError("the cloud's answer has no top_k list")
        declared = answer.get("model")
        model: dict[str, Any] = declared if isinstance(declared, dict) else {}
        try:
            pred = Prediction(top_k=[(str(t["label"]), float(t["score"])) for t in top or []])
        except (KeyError, TypeError, ValueError) as exc:
            raise _CloudPathError(f"the cloud's top_k is malformed ({exc!r})") from exc
        try:
            ref: ModelRef = {"name": str(model["name"]), "version": int(model["version"])}
        except (KeyError, TypeError, ValueError) as exc:
            raise _CloudPathError(f"the cloud's answer names no model ({exc!r})") from exc
        rec: Record = {"ts": "", "source": frame.source, "frame": frame.index,
                       "latency_ms": {"preprocess": round(encode_ms, 3), "inference": round(rtt_ms, 3),
                                      "postprocess": 0.0, "total": round(encode_ms + rtt_ms, 3)},
                       "model": ref,
                       "backend": "cloud", "path": "cloud", "cloud_latency_ms": round(rtt_ms, 3)}
        if dets is not None:
            rec["detections"] = dets
        else:
            rec["top_k"] = [{"label": lbl, "score": round(s, 6)} for lbl, s in pred.top_k or []]
        return rec

    def _finish(self, rec: Record, route: str, *, cloud_wait_ms: float | None = None,
                local_score: float | None = None) -> Record:
        if not rec["ts"]:
            rec["ts"] = utc_now()
        rec["route"] = route
        if cloud_wait_ms is not None:
            rec["cloud_wait_ms"] = cloud_wait_ms
        if local_score is not None and rec.get("path") == "cloud":
            rec["local_score"] = local_score
        with self._count_lock:
            self.counts[route] = self.counts.get(route, 0) + 1
        return rec


def _is_detector(model: Model) -> bool:
    return model.manifest.task == "detection"


def _confidence(rec: Record) -> float | None:
    """How sure the local answer is, for the cascade: the top label's score, or the best
    detection's (0 when nothing was found); 0 for a failed frame; None when there is no score
    (a regressor)."""
    if "error" in rec:
        return 0.0
    dets = rec.get("detections")
    if dets is not None:
        return max((float(d["score"]) for d in dets), default=0.0)
    top = rec.get("top_k")
    return top[0]["score"] if top else None


def _cloud_detections(raw: Any) -> list[Detection]:
    """The cloud's ``detections`` as the record holds them (best first), or a cloud-error."""
    if not isinstance(raw, list):
        raise _CloudPathError("the cloud's answer has no detections list (is the cloud model a detector?)")
    out: list[Detection] = []
    try:
        for d in raw:
            box = [float(v) for v in d["box"]]
            score = float(d["score"])
            if len(box) != 4 or not all(math.isfinite(v) for v in (*box, score)):
                raise ValueError(f"box {d['box']!r}, score {d['score']!r}")
            out.append({"label": str(d["label"]), "score": round(score, 6), "box": [round(v, 2) for v in box]})
    except (KeyError, TypeError, ValueError) as exc:
        raise _CloudPathError(f"the cloud's detections are malformed ({exc!r})") from exc
    out.sort(key=lambda d: -d["score"])
    return out


class _Call:
    """One cloud call, judged once for the breaker: by its frame giving up at the deadline, or by
    its own end, whichever comes first. So the breaker's state is settled when the record is."""

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker
        self._lock = threading.Lock()
        self._judged = False

    def _first(self) -> bool:
        with self._lock:
            first, self._judged = not self._judged, True
            return first

    def judge(self, ok: bool) -> None:
        if self._first():
            self._breaker.success() if ok else self._breaker.failure()

    def abandon(self) -> None:
        """Never ran or never reached the cloud: nothing to judge, let another probe go."""
        if self._first():
            self._breaker.release()


class _CloudPathError(EdgeError):
    """The frame could not be sent, or the cloud's answer could not be read (a cloud-error)."""

