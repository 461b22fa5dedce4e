"""Errors of ``edge_device.telemetry``.

They sit under :class:`~edge_runtime.SinkError` because the telemetry outbox is a sink: code that
already handles sink failures handles these too::

    EdgeError
    └── SinkError
        └── TelemetryError              telemetry cannot be set up or used
            ├── TelemetryConfigError    a setting is invalid (URL, device id, limits, TLS/credential files)
            ├── OutboxError             the outbox database cannot be opened, read or written
            │   └── OutboxLockedError   another process is writing this outbox
            └── RecordError             one record cannot be queued (not a JSON object, too large,
                                        unknown kind); nothing else is affected

sqlite3 and paho-mqtt errors are wrapped at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations

from edge_runtime import SinkError

__all__ = [
    "OutboxError",
    "OutboxLockedError",
    "RecordError",
    "TelemetryConfigError",
    "TelemetryError",
]


class TelemetryError(SinkError):
    """Base of every error raised on purpose by edge_device.telemetry."""


class TelemetryConfigError(TelemetryError):
    """A telemetry setting is invalid: MQTT URL, device id, outbox limits, TLS or password files."""


class OutboxError(TelemetryError):
    """The SQLite outbox cannot be opened, read or written (the message names the file)."""


class OutboxLockedError(OutboxError):
    """Another process holds the outbox's writer lock (e.g. a running `edge run`)."""


class RecordError(TelemetryError):
    """One record cannot be queued: not a JSON object, too large for a message, or an unknown kind."""
