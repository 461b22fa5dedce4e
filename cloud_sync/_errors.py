"""The one exception tree of ``cloud_sync``.

Every error the cloud side raises on purpose is a :class:`CloudError`; the ``edge`` CLI prints it
as one line without a traceback. Third-party errors (SQLAlchemy, paho-mqtt, OS) are wrapped at the
boundary with ``raise ... from exc``::

    CloudError
    ├── DatabaseError        the database URL is invalid, its driver is missing, or it cannot be used
    ├── IngestError          the telemetry ingester cannot start or its settings are invalid
    ├── PayloadError         an MQTT payload is malformed, oversized or of an unknown schema
    │                        (the ingester logs, counts and stores it; it never stops for one)
    ├── BrokerConfigError    a devices file is invalid or the broker files cannot be written
    ├── ServiceError …       the HTTP service's errors (cloud_sync.service)
    └── ClientError …        the device-side HTTP client's errors (edge_device.client)
"""

from __future__ import annotations

__all__ = ["BrokerConfigError", "CloudError", "DatabaseError", "IngestError", "PayloadError"]


class CloudError(Exception):
    """Base of every error raised on purpose by cloud_sync."""


class DatabaseError(CloudError):
    """The database URL is invalid, its driver is not installed, or the database cannot be used."""


class IngestError(CloudError):
    """The telemetry ingester cannot start, or its settings are invalid."""


class PayloadError(CloudError):
    """An MQTT payload is malformed, too large, or of a schema this ingester does not read.

    ``category`` is one of ``topic``, ``oversized``, ``malformed``, ``schema``, ``mismatch``.
    """

    def __init__(self, message: str, category: str = "malformed") -> None:
        super().__init__(message)
        self.category = category


class BrokerConfigError(CloudError):
    """A devices file is invalid, or the Mosquitto files cannot be written."""
