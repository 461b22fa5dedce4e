"""What the dashboard draws: the fleet (registry + latest telemetry), per-device latency and fps
series, prediction counts per label over time, detected objects per label over time
(``telemetry_detections``), and the version each channel serves.

Telemetry comes from the ingester's tables (``cloud_sync.db``); the device registry and the
heartbeats from the service's own. Everything is aggregated in SQL or capped, so the answer
stays small whatever the fleet sends.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from ..db import telemetry_detections, telemetry_devices, telemetry_metrics, telemetry_records
from ._errors import StorageError
from ._registry import Registry, _iso

__all__ = ["dashboard_data", "fleet", "objects_per_label"]

#: points per device series, newest kept
MAX_POINTS = 300
MAX_SERIES_ROWS = 50_000
MAX_LABELS = 12


def _utc(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _bucket(hours: float) -> tuple[str, timedelta]:
    if hours <= 3:
        return "minute", timedelta(minutes=1)
    if hours <= 72:
        return "hour", timedelta(hours=1)
    return "day", timedelta(days=1)


def _bucket_expr(dialect: str, unit: str, col: Any) -> Any:
    if dialect == "postgresql":
        return func.date_trunc(unit, col)
    fmt = {"minute": "%Y-%m-%dT%H:%M:00", "hour": "%Y-%m-%dT%H:00:00", "day": "%Y-%m-%dT00:00:00"}[unit]
    return func.strftime(fmt, col)


def _bucket_key(v: Any) -> str:
    if isinstance(v, datetime):
        return _utc(v).strftime("%Y-%m-%dT%H:%M:%SZ")  # type: ignore[union-attr]
    return f"{v}Z"


def fleet(engine: Engine, devices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Registered devices merged with their latest telemetry; devices that only sent telemetry
    are listed too (``registered: false``) so nothing in the field goes unseen."""
    try:
        with engine.connect() as conn:
            seen = {r.device_id: r for r in conn.execute(select(telemetry_devices)).all()}
            last_m = select(func.max(telemetry_metrics.c.id)).group_by(telemetry_metrics.c.device_id)
            metrics = {r.device_id: r for r in conn.execute(
                select(telemetry_metrics).where(telemetry_metrics.c.id.in_(last_m))).all()}
            last_r = select(func.max(telemetry_records.c.id)).group_by(telemetry_records.c.device_id)
            records = {r.device_id: r for r in conn.execute(
                select(telemetry_records.c.device_id, telemetry_records.c.model_name,
                       telemetry_records.c.model_version, telemetry_records.c.latency_ms)
                .where(telemetry_records.c.id.in_(last_r))).all()}
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot read telemetry: {exc.__class__.__name__}") from exc
    out: list[dict[str, Any]] = []
    ids = [d["id"] for d in devices] + sorted(set(seen) - {d["id"] for d in devices})
    by_id = {d["id"]: d for d in devices}
    for did in ids:
        d = dict(by_id.get(did) or {"id": did, "name": did, "model": None, "channel": None, "created_at": None,
                                    "revoked": False, "revoked_at": None, "last_seen": None, "model_version": None,
                                    "outbox_depth": None, "latency_ms": None, "fps": None})
        d["registered"] = did in by_id
        t, m, r = seen.get(did), metrics.get(did), records.get(did)
        d["status"] = t.status if t is not None else None
        candidates = [x for x in (d["last_seen"], _iso(_utc(t.last_seen)) if t is not None else None) if x]
        d["last_seen"] = max(candidates) if candidates else None
        if r is not None and r.model_version is not None:
            d["model_version"] = int(r.model_version)
        if m is not None:
            d["outbox_depth"] = m.outbox_rows if m.outbox_rows is not None else d["outbox_depth"]
            d["latency_ms"] = m.latency_p50_ms if m.latency_p50_ms is not None else d["latency_ms"]
            d["fps"] = m.fps if m.fps is not None else d["fps"]
        elif r is not None and r.latency_ms is not None:
            d["latency_ms"] = r.latency_ms
        out.append(d)
    return out


def dashboard_data(engine: Engine, devices: list[dict[str, Any]], registry: Registry, *,
                   hours: float) -> dict[str, Any]:
    now = datetime.now(UTC)
    since = now - timedelta(hours=hours)
    unit, step = _bucket(hours)
    dialect = engine.dialect.name
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(telemetry_metrics.c.device_id, telemetry_metrics.c.ts, telemetry_metrics.c.fps,
                       telemetry_metrics.c.latency_p50_ms, telemetry_metrics.c.latency_p99_ms,
                       telemetry_metrics.c.outbox_rows)
                .where(telemetry_metrics.c.ts >= since)
                .order_by(telemetry_metrics.c.ts.desc()).limit(MAX_SERIES_ROWS)).all()
            b = _bucket_expr(dialect, unit, telemetry_records.c.ts).label("bucket")
            counts = conn.execute(
                select(b, telemetry_records.c.top_label, func.count())
                .where(telemetry_records.c.ts >= since, telemetry_records.c.top_label.is_not(None))
                .group_by(b, telemetry_records.c.top_label).order_by(b)).all()
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot read telemetry: {exc.__class__.__name__}") from exc
    series: dict[str, list[dict[str, Any]]] = {}
    for r in reversed(rows):
        series.setdefault(r.device_id, []).append({
            "ts": _iso(_utc(r.ts)), "fps": r.fps, "latency_ms": r.latency_p50_ms,
            "latency_p99_ms": r.latency_p99_ms, "outbox": r.outbox_rows})
    series = {k: v[-MAX_POINTS:] for k, v in series.items()}
    models = registry.list_models()
    return {
        "generated_at": _iso(now),
        "window_hours": hours,
        "bucket": unit,
        "bucket_seconds": int(step.total_seconds()),
        "devices": fleet(engine, devices),
        "series": series,
        "labels": _per_label(counts),
        "objects": objects_per_label(engine, hours=hours, now=now)["objects"],
        "models": models,
    }


def _per_label(counts: Sequence[Any]) -> dict[str, Any]:
    """(bucket, label, n) rows to ``{"totals": {label: n}, "buckets": [{"t", "counts"}]}``: the
    MAX_LABELS most frequent labels by name, the rest summed as ``other``."""
    totals: dict[str, int] = {}
    for _, label, n in counts:
        totals[label] = totals.get(label, 0) + int(n)
    top = sorted(totals, key=lambda k: (-totals[k], k))[:MAX_LABELS]
    buckets: dict[str, dict[str, int]] = {}
    for bucket, label, n in counts:
        key = _bucket_key(bucket)
        name = label if label in top else "other"
        slot = buckets.setdefault(key, {})
        slot[name] = slot.get(name, 0) + int(n)
    return {"totals": {k: totals[k] for k in top},
            "buckets": [{"t": k, "counts": v} for k, v in sorted(buckets.items())]}


def objects_per_label(engine: Engine, *, hours: float, labels: Sequence[str] = (), device_id: str | None = None,
                      min_score: float | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Objects detectors found, counted per label and time bucket (frame time) over the last
    ``hours``: all labels, or only ``labels``; of one device or the fleet; at or above ``min_score``."""
    now = now or datetime.now(UTC)
    unit, step = _bucket(hours)
    d = telemetry_detections.c
    b = _bucket_expr(engine.dialect.name, unit, d.ts).label("bucket")
    query = select(b, d.label, func.count()).where(d.ts >= now - timedelta(hours=hours))
    if labels:
        query = query.where(d.label.in_(list(labels)))
    if device_id is not None:
        query = query.where(d.device_id == device_id)
    if min_score is not None:
        query = query.where(d.score >= min_score)
    try:
        with engine.connect() as conn:
            counts = conn.execute(query.group_by(b, d.label).order_by(b)).all()
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot read telemetry: {exc.__class__.__name__}") from exc
    return {"generated_at": _iso(now), "window_hours": hours, "bucket": unit,
            "bucket_seconds": int(step.total_seconds()), "objects": _per_label(counts)}
