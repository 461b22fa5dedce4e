"""Every cloud table (SQLAlchemy 2 Core) in one ``metadata``, engine setup, and the schema's
migrations (Alembic), shared by the ingester and the service: one database, one schema history.

Telemetry: one row per record, in one table per kind (and one row per detected object in
``telemetry_detections``), keyed by ``(device_id, seq, idx)`` (``idx``
is the record's position in its message); ``telemetry_messages`` holds one row per message and its
unique ``(device_id, seq)`` is what drops duplicates. Typed columns carry what dashboards filter and
chart on; ``record`` keeps the whole record as JSON (jsonb on PostgreSQL), so nothing a device sent
is lost to the column choice. The service's tables carry a ``registry_``/``fleet_`` prefix.

Schema changes are Alembic revisions in ``migrations/versions``; ``make_engine`` (and so the service
and the ingester at start-up) and ``edge cloud db upgrade`` bring a database to the newest one.

>>> from cloud_sync.db import make_engine, telemetry_records   # doctest: +SKIP
>>> engine = make_engine("postgresql://ingest@db/edge")          # doctest: +SKIP
"""

from ._batch_tables import batch_predictions
from ._engine import make_engine, normalize_url
from ._migrate import MIGRATIONS, alembic_config, current_revision, head_revision, upgrade
from ._service_tables import (
    fleet_devices,
    fleet_samples,
    registry_channel_events,
    registry_models,
    registry_versions,
    utcnow,
)
from ._tables import (
    metadata,
    telemetry_detections,
    telemetry_devices,
    telemetry_events,
    telemetry_messages,
    telemetry_metrics,
    telemetry_records,
    telemetry_rejects,
)

__all__ = [
    "MIGRATIONS",
    "alembic_config",
    "batch_predictions",
    "current_revision",
    "fleet_devices",
    "fleet_samples",
    "head_revision",
    "make_engine",
    "metadata",
    "normalize_url",
    "registry_channel_events",
    "registry_models",
    "registry_versions",
    "telemetry_detections",
    "telemetry_devices",
    "telemetry_events",
    "telemetry_messages",
    "telemetry_metrics",
    "telemetry_records",
    "telemetry_rejects",
    "upgrade",
    "utcnow",
]
