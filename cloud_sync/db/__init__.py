"""Telemetry tables (SQLAlchemy 2 Core) and engine setup, shared by the ingester and the service.

One row per record, in one table per kind, keyed by ``(device_id, seq, idx)`` (``idx`` is the
record's position in its message); ``telemetry_messages`` holds one row per message and its unique
``(device_id, seq)`` is what drops duplicates. Typed columns carry what dashboards filter and chart
on; ``record`` keeps the whole record as JSON (jsonb on PostgreSQL), so nothing a device sent is lost
to the column choice. Table names carry a ``telemetry_`` prefix: the same database also holds the
service's ``registry_``/``fleet_`` tables.

>>> from cloud_sync.db import make_engine, telemetry_records   # doctest: +SKIP
>>> engine = make_engine("postgresql://ingest@db/edge")          # doctest: +SKIP
"""

from ._engine import make_engine, normalize_url
from ._tables import (
    metadata,
    telemetry_devices,
    telemetry_events,
    telemetry_messages,
    telemetry_metrics,
    telemetry_records,
    telemetry_rejects,
)

__all__ = [
    "make_engine",
    "metadata",
    "normalize_url",
    "telemetry_devices",
    "telemetry_events",
    "telemetry_messages",
    "telemetry_metrics",
    "telemetry_records",
    "telemetry_rejects",
]
