"""The service's tables: the model registry (``registry_*``) and the fleet (``fleet_*``).

They share ``metadata`` with the telemetry tables: one database, one schema, one migration history.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
)

from ._tables import metadata

__all__ = [
    "fleet_devices",
    "fleet_samples",
    "registry_channel_events",
    "registry_models",
    "registry_versions",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


registry_models = Table(
    "registry_models",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
)

registry_versions = Table(
    "registry_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_name", String(128), ForeignKey("registry_models.name"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("storage_key", String(512), nullable=False),
    Column("manifest", JSON, nullable=False),
    Column("signed_by", String(64), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
    UniqueConstraint("model_name", "version", name="uq_registry_versions_model_version"),
)

# A channel's history as a stack: promoting pushes a row, rolling back marks the top row undone.
# The channel points at the newest row that is not undone; keeping the rows gives an audit trail.
registry_channel_events = Table(
    "registry_channel_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_name", String(128), ForeignKey("registry_models.name"), nullable=False),
    Column("channel", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("undone", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
    Column("undone_at", DateTime(timezone=True), nullable=True),
    Index("ix_registry_channel_events_lookup", "model_name", "channel", "undone", "id"),
)

fleet_devices = Table(
    "fleet_devices",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("model", String(128), nullable=True),
    Column("channel", String(64), nullable=False),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    # What the device reported itself over HTTP (heartbeat); MQTT telemetry adds to it.
    Column("last_seen", DateTime(timezone=True), nullable=True),
    Column("model_version", Integer, nullable=True),
    Column("outbox_depth", Integer, nullable=True),
    Column("latency_ms", Float, nullable=True),
    Column("fps", Float, nullable=True),
)

#: Images a device was unsure about (``POST /api/v1/device/samples``); the bytes are in the object store.
fleet_samples = Table(
    "fleet_samples",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", String(64), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("content_type", String(32), nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("storage_key", String(512), nullable=False),
    Column("meta", JSON, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, default=utcnow),
    # One row per device and content: a resent sample (lost acknowledgement) is the same sample.
    UniqueConstraint("device_id", "sha256", name="uq_fleet_samples_device_sha256"),
)
