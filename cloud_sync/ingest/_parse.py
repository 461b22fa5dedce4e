"""Turning one MQTT message into rows, or into a clear reason why not. Pure functions, no I/O."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from edge_device.telemetry import SCHEMA_VERSION, MessageEnvelope, StatusMessage

from .._errors import PayloadError

__all__ = ["MAX_OBJECTS_PER_RECORD", "Parsed", "Rejected", "detection_rows", "parse_message", "salvage_key"]

_TOPIC = re.compile(r"^edge/([^/]+)/(telemetry|metrics|events|status)$")
_INT64 = 2**63 - 1
#: objects of one record kept as rows (the runtime's max_detections defaults to 100; the whole
#: list stays in the record's JSON anyway)
MAX_OBJECTS_PER_RECORD = 1000


@dataclass(frozen=True, slots=True)
class Parsed:
    topic: str
    device_id: str
    kind: str  # telemetry, metrics, events or status
    envelope: MessageEnvelope | None = None
    status: StatusMessage | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    topic: str
    reason: str
    category: str  # topic, oversized, malformed, schema, mismatch, database
    device_id: str | None
    seq: int | None  # set when the payload names a seq we can confirm back to the device
    payload: bytes
    truncated: bool


def _reason(exc: ValidationError) -> tuple[str, str]:
    errors = exc.errors(include_url=False)
    for err in errors:
        if err["type"] == "json_invalid":
            return "malformed", f"not valid JSON ({err['msg']})"
        if err["type"] in ("model_type", "dict_type", "model_attributes_type") and not err["loc"]:
            return "malformed", "not a JSON object"
    for err in errors:
        if err["loc"] == ("schema",):
            got = err.get("input", "missing")
            return "schema", (f"unsupported schema {got!r} (this ingester reads schema {SCHEMA_VERSION})"
                              if err["type"] != "missing" else "no 'schema' field")
    parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:3]]
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return "schema", "does not follow schema 1: " + "; ".join(parts) + more


def parse_message(topic: str, payload: bytes, *, max_payload_bytes: int) -> Parsed:
    """Validate one message; raises :class:`PayloadError` whose ``category`` says why."""
    m = _TOPIC.match(topic)
    if m is None:
        raise _error("topic", f"unexpected topic {topic!r}")
    device_id, kind = m.group(1), m.group(2)
    if len(payload) > max_payload_bytes:
        raise _error("oversized", f"{len(payload)} bytes, over the {max_payload_bytes}-byte limit")
    try:
        if kind == "status":
            status = StatusMessage.model_validate_json(payload)
            if status.device_id != device_id:
                raise _error("mismatch", f"status for device {status.device_id!r} on {topic}")
            return Parsed(topic, device_id, kind, status=status)
        env = MessageEnvelope.model_validate_json(payload)
    except ValidationError as exc:
        category, reason = _reason(exc)
        raise _error(category, reason) from exc
    if env.device_id != device_id:
        raise _error("mismatch", f"device_id {env.device_id!r} in the payload but the topic is {topic}")
    if env.kind != kind:
        raise _error("mismatch", f"kind {env.kind!r} in the payload but the topic is {topic}")
    return Parsed(topic, device_id, kind, envelope=env)


def _error(category: str, reason: str) -> PayloadError:
    return PayloadError(reason, category)


def salvage_key(topic: str, payload: bytes) -> tuple[str | None, int | None]:
    """Best-effort (device_id, seq) of a rejected payload: confirming it stops the device resending
    something that will never be accepted (it is kept in telemetry_rejects instead)."""
    m = _TOPIC.match(topic)
    device_id = m.group(1) if m else None
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return device_id, None
    if not isinstance(obj, dict) or obj.get("device_id") != device_id:
        return device_id, None
    seq = obj.get("seq")
    if isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq <= _INT64:
        return device_id, seq
    return device_id, None


# ---------------------------------------------------------------------- field extraction
# Records are the device's own JSON: a wrong type in one field makes that column NULL, never a
# rejected message (the whole record is kept in the `record` column anyway).

def as_str(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    return None


def as_int(v: Any) -> int | None:
    if isinstance(v, int) and not isinstance(v, bool) and -_INT64 <= v <= _INT64:
        return v
    return None


def as_float(v: Any) -> float | None:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        f = float(v)
        return f if math.isfinite(f) else None
    return None


def as_time(v: Any) -> datetime | None:
    if not isinstance(v, str) or len(v) > 64:
        return None
    try:
        t = datetime.fromisoformat(v)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def as_dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def telemetry_row(rec: dict[str, Any]) -> dict[str, Any]:
    # Runs once per record on the ingester's hot path: plain lookups, no intermediate dicts.
    top_k = rec.get("top_k")
    top = top_k[0] if isinstance(top_k, list) and top_k and isinstance(top_k[0], dict) else None
    if top is None:  # a detector's record: its best object, as Prediction.label has it
        dets = rec.get("detections")
        top = dets[0] if isinstance(dets, list) and dets and isinstance(dets[0], dict) else None
    model = rec.get("model")
    if not isinstance(model, dict):
        model = None
    lat = rec.get("latency_ms")
    return {
        "ts": as_time(rec.get("ts")), "source": as_str(rec.get("source")), "frame": as_int(rec.get("frame")),
        "model_name": as_str(model.get("name")) if model else None,
        "model_version": as_int(model.get("version")) if model else None,
        "backend": as_str(rec.get("backend")), "path": as_str(rec.get("path")),
        "top_label": as_str(top.get("label")) if top else None,
        "top_score": as_float(top.get("score")) if top else None,
        "latency_ms": as_float(lat.get("total")) if isinstance(lat, dict) else None,
        "error": as_str(rec.get("error")),
    }


def detection_rows(rec: dict[str, Any]) -> list[tuple[int, str, float | None, float | None, float | None,
                                                      float | None, float | None]]:
    """``(obj, label, score, x1, y1, x2, y2)`` for each object of a record's ``detections``; ``obj``
    is its position in the list. An entry that is not an object with a label is skipped (its
    position stays unused); a box that is not four numbers gives NULL coordinates."""
    dets = rec.get("detections")
    if not isinstance(dets, list) or not dets:
        return []
    out = []
    for obj, d in enumerate(dets[:MAX_OBJECTS_PER_RECORD]):
        if not isinstance(d, dict):
            continue
        label = as_str(d.get("label"))
        if label is None:
            continue
        box = d.get("box")
        xs = [as_float(v) for v in box] if isinstance(box, list) and len(box) == 4 else [None] * 4
        out.append((obj, label, as_float(d.get("score")), xs[0], xs[1], xs[2], xs[3]))
    return out


def metrics_row(rec: dict[str, Any]) -> dict[str, Any]:
    lat = as_dict(rec.get("latency_ms"))
    outbox = as_dict(rec.get("outbox"))
    return {
        "ts": as_time(rec.get("ts")), "fps": as_float(rec.get("fps")), "frames": as_int(rec.get("frames")),
        "latency_p50_ms": as_float(lat.get("p50")), "latency_p99_ms": as_float(lat.get("p99")),
        "cpu_temp_c": as_float(rec.get("cpu_temp_c")),
        "memory_rss_mib": as_float(as_dict(rec.get("memory")).get("rss_mib")),
        "outbox_rows": as_int(outbox.get("rows")), "outbox_bytes": as_int(outbox.get("bytes")),
        "dropped_total": as_int(as_dict(rec.get("dropped")).get("total")),
    }


def events_row(rec: dict[str, Any]) -> dict[str, Any]:
    return {"ts": as_time(rec.get("ts")), "event": as_str(rec.get("event") or rec.get("name"))}


ROW_BUILDERS = {"telemetry": telemetry_row, "metrics": metrics_row, "events": events_row}
