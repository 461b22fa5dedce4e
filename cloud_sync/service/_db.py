"""The registry's and the fleet's tables (SQLAlchemy 2 Core) and engine setup.

Everything a replica knows lives here or in the object store, so any number of replicas can
serve behind a load balancer. Table names carry a ``registry_``/``fleet_`` prefix because the
same database also holds the telemetry ingester's tables.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.exc import SQLAlchemyError

from ._errors import StorageError

__all__ = ["channel_events", "devices", "make_engine", "metadata", "models", "utcnow", "versions"]

metadata = MetaData()


def utcnow() -> datetime:
    return datetime.now(UTC)


models = Table(
    "registry_models",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
)

versions = Table(
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
channel_events = Table(
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

devices = Table(
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


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with the telemetry tables (``cloud_sync.db``, whose engine setup this
    reuses: one database, one set of connection settings) and the registry/fleet tables created."""
    from ..db import make_engine as make_telemetry_engine

    engine = make_telemetry_engine(url)
    try:
        metadata.create_all(engine)
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot prepare the registry tables: {exc.__class__.__name__}: "
                           f"{str(exc).splitlines()[0]}") from exc
    return engine
