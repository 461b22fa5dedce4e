"""``telemetry_detections``: one row per object of a detection record (label, score, box), keyed by
its record's ``(device_id, seq, idx)`` and its position ``obj``, deleted with the record.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

Records ingested before this revision keep their detections in ``telemetry_records.record`` only.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "telemetry_detections",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("obj", sa.Integer(), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=True),
        sa.Column("model_name", sa.Text(), nullable=True),
        sa.Column("model_version", sa.BigInteger(), nullable=True),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("x1", sa.Float(), nullable=True),
        sa.Column("y1", sa.Float(), nullable=True),
        sa.Column("x2", sa.Float(), nullable=True),
        sa.Column("y2", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("device_id", "seq", "idx", "obj", name="pk_telemetry_detections"),
        sa.ForeignKeyConstraint(["device_id", "seq", "idx"],
                                ["telemetry_records.device_id", "telemetry_records.seq", "telemetry_records.idx"],
                                name="fk_telemetry_detections_record", ondelete="CASCADE"),
    )
    op.create_index("ix_telemetry_detections_label_ts", "telemetry_detections", ["label", "ts"], unique=False)
    op.create_index("ix_telemetry_detections_device_ts", "telemetry_detections", ["device_id", "ts"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_telemetry_detections_device_ts", table_name="telemetry_detections")
    op.drop_index("ix_telemetry_detections_label_ts", table_name="telemetry_detections")
    op.drop_table("telemetry_detections")
