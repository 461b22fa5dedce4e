"""The schema as of the last release without migrations (tables made by ``metadata.create_all``).

Revision ID: 0001
Revises:
Create Date: 2026-12-01

A database that release made already has some or all of these tables (an ingester-only database
has just the ``telemetry_*`` ones; a service made ``fleet_samples`` on first use): each table is
created only when missing and an existing one is kept as it is, since that release made it from
these same definitions. The definitions are frozen here on purpose: later schema changes are new
revisions, never edits of this one.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# SQLite only autoincrements an "INTEGER PRIMARY KEY"; elsewhere telemetry ids are 64-bit.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _telemetry_key() -> list[sa.Column[object]]:
    return [sa.Column("device_id", sa.String(length=64), nullable=False),
            sa.Column("seq", sa.BigInteger(), nullable=False),
            sa.Column("idx", sa.Integer(), nullable=False)]


def _registry_models() -> None:
    op.create_table(
        "registry_models",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def _registry_versions() -> None:
    op.create_table(
        "registry_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("storage_key", sa.String(length=512), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("signed_by", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["model_name"], ["registry_models.name"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model_name", "version", name="uq_registry_versions_model_version"),
    )


def _registry_channel_events() -> None:
    op.create_table(
        "registry_channel_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("undone", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("undone_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["model_name"], ["registry_models.name"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_registry_channel_events_lookup", "registry_channel_events",
                    ["model_name", "channel", "undone", "id"], unique=False)


def _fleet_devices() -> None:
    op.create_table(
        "fleet_devices",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=True),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("model_version", sa.Integer(), nullable=True),
        sa.Column("outbox_depth", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("fps", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_sha256"),
    )


def _fleet_samples() -> None:
    op.create_table(
        "fleet_samples",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("content_type", sa.String(length=32), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("storage_key", sa.String(length=512), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("device_id", "sha256", name="uq_fleet_samples_device_sha256"),
    )


def _telemetry_devices() -> None:
    op.create_table(
        "telemetry_devices",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("status_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("runtime", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("device_id"),
    )


def _telemetry_messages() -> None:
    op.create_table(
        "telemetry_messages",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("n_records", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("device_id", "seq", name="uq_telemetry_messages_device_seq"),
    )


def _telemetry_records() -> None:
    op.create_table(
        "telemetry_records",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        *_telemetry_key(),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=True),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("frame", sa.BigInteger(), nullable=True),
        sa.Column("model_name", sa.Text(), nullable=True),
        sa.Column("model_version", sa.BigInteger(), nullable=True),
        sa.Column("backend", sa.Text(), nullable=True),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("top_label", sa.Text(), nullable=True),
        sa.Column("top_score", sa.Float(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("record", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("device_id", "seq", "idx", name="uq_telemetry_records_key"),
    )
    op.create_index("ix_telemetry_records_device_ts", "telemetry_records", ["device_id", "ts"], unique=False)


def _telemetry_metrics() -> None:
    op.create_table(
        "telemetry_metrics",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        *_telemetry_key(),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fps", sa.Float(), nullable=True),
        sa.Column("frames", sa.BigInteger(), nullable=True),
        sa.Column("latency_p50_ms", sa.Float(), nullable=True),
        sa.Column("latency_p99_ms", sa.Float(), nullable=True),
        sa.Column("cpu_temp_c", sa.Float(), nullable=True),
        sa.Column("memory_rss_mib", sa.Float(), nullable=True),
        sa.Column("outbox_rows", sa.BigInteger(), nullable=True),
        sa.Column("outbox_bytes", sa.BigInteger(), nullable=True),
        sa.Column("dropped_total", sa.BigInteger(), nullable=True),
        sa.Column("record", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("device_id", "seq", "idx", name="uq_telemetry_metrics_key"),
    )
    op.create_index("ix_telemetry_metrics_device_ts", "telemetry_metrics", ["device_id", "ts"], unique=False)


def _telemetry_events() -> None:
    op.create_table(
        "telemetry_events",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        *_telemetry_key(),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=True),
        sa.Column("event", sa.Text(), nullable=True),
        sa.Column("record", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("device_id", "seq", "idx", name="uq_telemetry_events_key"),
    )
    op.create_index("ix_telemetry_events_device_ts", "telemetry_events", ["device_id", "ts"], unique=False)


def _telemetry_rejects() -> None:
    op.create_table(
        "telemetry_rejects",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("device_id", sa.Text(), nullable=True),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("truncated", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


# In creation order: a table before the tables whose foreign keys point at it.
_TABLES: dict[str, Callable[[], None]] = {
    "registry_models": _registry_models,
    "registry_versions": _registry_versions,
    "registry_channel_events": _registry_channel_events,
    "fleet_devices": _fleet_devices,
    "fleet_samples": _fleet_samples,
    "telemetry_devices": _telemetry_devices,
    "telemetry_messages": _telemetry_messages,
    "telemetry_records": _telemetry_records,
    "telemetry_metrics": _telemetry_metrics,
    "telemetry_events": _telemetry_events,
    "telemetry_rejects": _telemetry_rejects,
}


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    for name, create in _TABLES.items():
        if name not in existing:
            create()


def downgrade() -> None:
    for name in reversed(_TABLES):
        op.drop_table(name)
