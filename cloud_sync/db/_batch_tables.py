"""The table ``edge batch`` writes: one row per input and model version (``cloud_sync.batch``).

The primary key ``(source_key, model_name, model_version)`` is what makes a batch run idempotent
and resumable: a re-run skips the keys already present and inserts with ``ON CONFLICT DO NOTHING``,
so no input is ever written twice for the same model version.
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, DateTime, Float, Index, Integer, String, Table, Text
from sqlalchemy.dialects.postgresql import JSONB

from ._tables import metadata

__all__ = ["batch_predictions"]

# A missing list (``detections`` of a classifier) is SQL NULL, not the JSON value null.
_Json = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")

#: One prediction (or one error) per input: the record's fields as columns, the whole record as JSON.
batch_predictions = Table(
    "batch_predictions",
    metadata,
    Column("source_key", Text, primary_key=True),
    Column("model_name", String(128), primary_key=True),
    Column("model_version", Integer, primary_key=True),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("backend", String(64), nullable=True),
    Column("top_label", Text, nullable=True),
    Column("top_score", Float, nullable=True),
    Column("detections", _Json, nullable=True),
    Column("values", _Json, nullable=True),
    Column("latency_ms", Float, nullable=True),
    Column("error", Text, nullable=True),
    Column("record", _Json, nullable=False),
    Index("ix_batch_predictions_model", "model_name", "model_version"),
)
