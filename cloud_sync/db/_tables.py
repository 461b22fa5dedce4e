"""The one ``metadata`` of every cloud table, and the telemetry tables in it. Strings a device
controls are ``Text`` (no length to overflow)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB

__all__ = [
    "metadata",
    "telemetry_detections",
    "telemetry_devices",
    "telemetry_events",
    "telemetry_messages",
    "telemetry_metrics",
    "telemetry_records",
    "telemetry_rejects",
]

metadata = MetaData()

# SQLite only autoincrements an "INTEGER PRIMARY KEY"; elsewhere ids are 64-bit.
_Id = BigInteger().with_variant(Integer(), "sqlite")
_Json = JSON().with_variant(JSONB(), "postgresql")


def _id() -> Column[int]:
    return Column("id", _Id, primary_key=True, autoincrement=True)


def _key() -> list[Column[object]]:
    return [Column("device_id", String(64), nullable=False), Column("seq", BigInteger, nullable=False),
            Column("idx", Integer, nullable=False)]


#: What the broker told us about each device (status, last message); the service's fleet_devices
#: holds its registration.
telemetry_devices = Table(
    "telemetry_devices",
    metadata,
    Column("device_id", String(64), primary_key=True),
    Column("first_seen", DateTime(timezone=True), nullable=False),
    Column("last_seen", DateTime(timezone=True), nullable=False),
    Column("last_seq", BigInteger, nullable=True),
    Column("status", String(16), nullable=True),
    Column("status_at", DateTime(timezone=True), nullable=True),
    Column("runtime", Text, nullable=True),
)

telemetry_messages = Table(
    "telemetry_messages",
    metadata,
    _id(),
    Column("device_id", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("uuid", String(36), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("created", DateTime(timezone=True), nullable=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("n_records", Integer, nullable=False),
    UniqueConstraint("device_id", "seq", name="uq_telemetry_messages_device_seq"),
)

#: Pipeline results (DESIGN.md "Pipeline" records).
telemetry_records = Table(
    "telemetry_records",
    metadata,
    _id(),
    *_key(),
    Column("ts", DateTime(timezone=True), nullable=True),
    Column("source", Text, nullable=True),
    Column("frame", BigInteger, nullable=True),
    Column("model_name", Text, nullable=True),
    Column("model_version", BigInteger, nullable=True),
    Column("backend", Text, nullable=True),
    Column("path", Text, nullable=True),
    Column("top_label", Text, nullable=True),
    Column("top_score", Float, nullable=True),
    Column("latency_ms", Float, nullable=True),
    Column("error", Text, nullable=True),
    Column("record", _Json, nullable=False),
    UniqueConstraint("device_id", "seq", "idx", name="uq_telemetry_records_key"),
    Index("ix_telemetry_records_device_ts", "device_id", "ts"),
)

#: One row per object a detector found: the ``detections`` of a telemetry record, flattened so
#: objects can be counted per label and time in SQL. Keyed by the record's ``(device_id, seq, idx)``
#: and ``obj`` (the object's position in the record's ``detections``); written in the record's
#: transaction, and gone with it (``ON DELETE CASCADE``). ``ts`` and the model are the record's,
#: copied so a per-label count needs no join. Boxes are ``[x1, y1, x2, y2]`` in frame pixels.
telemetry_detections = Table(
    "telemetry_detections",
    metadata,
    Column("device_id", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("idx", Integer, nullable=False),
    Column("obj", Integer, nullable=False),
    Column("ts", DateTime(timezone=True), nullable=True),
    Column("model_name", Text, nullable=True),
    Column("model_version", BigInteger, nullable=True),
    Column("label", Text, nullable=False),
    Column("score", Float, nullable=True),
    Column("x1", Float, nullable=True),
    Column("y1", Float, nullable=True),
    Column("x2", Float, nullable=True),
    Column("y2", Float, nullable=True),
    PrimaryKeyConstraint("device_id", "seq", "idx", "obj", name="pk_telemetry_detections"),
    ForeignKeyConstraint(["device_id", "seq", "idx"],
                         ["telemetry_records.device_id", "telemetry_records.seq", "telemetry_records.idx"],
                         name="fk_telemetry_detections_record", ondelete="CASCADE"),
    Index("ix_telemetry_detections_label_ts", "label", "ts"),
    Index("ix_telemetry_detections_device_ts", "device_id", "ts"),
)

telemetry_metrics = Table(
    "telemetry_metrics",
    metadata,
    _id(),
    *_key(),
    Column("ts", DateTime(timezone=True), nullable=True),
    Column("fps", Float, nullable=True),
    Column("frames", BigInteger, nullable=True),
    Column("latency_p50_ms", Float, nullable=True),
    Column("latency_p99_ms", Float, nullable=True),
    Column("cpu_temp_c", Float, nullable=True),
    Column("memory_rss_mib", Float, nullable=True),
    Column("outbox_rows", BigInteger, nullable=True),
    Column("outbox_bytes", BigInteger, nullable=True),
    Column("dropped_total", BigInteger, nullable=True),
    Column("record", _Json, nullable=False),
    UniqueConstraint("device_id", "seq", "idx", name="uq_telemetry_metrics_key"),
    Index("ix_telemetry_metrics_device_ts", "device_id", "ts"),
)

telemetry_events = Table(
    "telemetry_events",
    metadata,
    _id(),
    *_key(),
    Column("ts", DateTime(timezone=True), nullable=True),
    Column("event", Text, nullable=True),
    Column("record", _Json, nullable=False),
    UniqueConstraint("device_id", "seq", "idx", name="uq_telemetry_events_key"),
    Index("ix_telemetry_events_device_ts", "device_id", "ts"),
)

#: Payloads the ingester could not use, kept (whole when not oversized) with the reason.
telemetry_rejects = Table(
    "telemetry_rejects",
    metadata,
    _id(),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("topic", Text, nullable=False),
    Column("device_id", Text, nullable=True),
    Column("seq", BigInteger, nullable=True),
    Column("reason", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("truncated", Integer, nullable=False, default=0),
)
