"""The record: what one frame gave, the second contract after the bundle.

Every producer (the pipeline, the hybrid router, the cloud's image endpoint, batch and worker
hosts) builds records with :func:`make_record` / :func:`error_record`, and every consumer (sinks,
the telemetry outbox, the ingester, the dashboard) reads this type, so mypy checks the contract from
end to end. On the wire it is a JSON object with exactly these keys (DESIGN.md, "Pipeline").
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, NotRequired, TypedDict, cast

if TYPE_CHECKING:
    from ._model import Model, Prediction
    from .sources import Frame

__all__ = [
    "Detection",
    "Latency",
    "ModelRef",
    "Record",
    "ScoredLabel",
    "error_record",
    "make_record",
    "utc_now",
]

Path = Literal["local", "cloud"]


class ScoredLabel(TypedDict):
    label: str
    score: float


class Detection(TypedDict):
    """One object: its label, score and box ``[x1, y1, x2, y2]`` in pixels of the original frame."""

    label: str
    score: float
    box: list[float]


class Latency(TypedDict, total=False):
    """Milliseconds per step of one frame; the cloud path adds its encode and round-trip times."""

    preprocess: float
    inference: float
    postprocess: float
    total: float
    encode: float
    rtt: float


class ModelRef(TypedDict):
    name: str
    version: int


class Record(TypedDict):
    """One frame's result. ``top_k`` (classification), ``detections`` or ``values`` (regression),
    or ``error`` instead of results when that frame failed."""

    ts: str
    source: str
    frame: int
    top_k: NotRequired[list[ScoredLabel]]
    detections: NotRequired[list[Detection]]
    values: NotRequired[list[float]]
    latency_ms: NotRequired[Latency]
    model: NotRequired[ModelRef]
    backend: NotRequired[str]
    path: NotRequired[Path]
    route: NotRequired[str]
    error: NotRequired[str]
    # Set by the hybrid router (edge_device.agent): why a frame is suspect or failed, and what the
    # cloud path cost or the local model said when the cloud answered.
    error_kind: NotRequired[Literal["model", "source"]]
    suspect: NotRequired[str]
    cloud_latency_ms: NotRequired[float]
    cloud_wait_ms: NotRequired[float]
    local_score: NotRequired[float]


def utc_now() -> str:
    """ISO 8601 UTC with milliseconds and a ``Z``, the records' and messages' timestamp."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_record(model: Model, frame: Frame, pred: Prediction, *, path: Path = "local") -> Record:
    rec: Record = {"ts": utc_now(), "source": frame.source, "frame": frame.index}
    if pred.top_k is not None:
        rec["top_k"] = [{"label": lbl, "score": round(s, 6)} for lbl, s in pred.top_k]
    if pred.values is not None:
        rec["values"] = pred.values
    if pred.detections is not None:
        rec["detections"] = [{"label": d["label"], "score": d["score"], "box": list(d["box"])}
                             for d in pred.detections]
    rec["latency_ms"] = cast("Latency", pred.latency_ms)
    rec["model"] = {"name": model.name, "version": model.version}
    rec["backend"] = model.backend_name
    rec["path"] = path
    return rec


def error_record(model: Model, frame: Frame, error: str) -> Record:
    return {"ts": utc_now(), "source": frame.source, "frame": frame.index, "error": error,
            "model": {"name": model.name, "version": model.version}, "backend": model.backend_name,
            "path": "local"}
