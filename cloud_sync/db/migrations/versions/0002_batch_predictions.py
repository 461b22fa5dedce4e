"""``batch_predictions``: the rows ``edge batch`` writes (one per input and model version).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "batch_predictions",
        sa.Column("source_key", sa.Text(), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("backend", sa.String(length=64), nullable=True),
        sa.Column("top_label", sa.Text(), nullable=True),
        sa.Column("top_score", sa.Float(), nullable=True),
        sa.Column("detections", _JSON, nullable=True),
        sa.Column("values", _JSON, nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("record", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("source_key", "model_name", "model_version"),
    )
    op.create_index("ix_batch_predictions_model", "batch_predictions", ["model_name", "model_version"])


def downgrade() -> None:
    op.drop_index("ix_batch_predictions_model", table_name="batch_predictions")
    op.drop_table("batch_predictions")
