"""The cloud side: the FastAPI service (``cloud_sync.service``), the telemetry ingester
(``cloud_sync.ingest``), their database tables (``cloud_sync.db``) and the device's HTTP client
(``edge_device.client``).

Importing ``cloud_sync`` itself imports only its errors, so ``edge`` can recognise them cheaply;
each subpackage imports its own dependencies (FastAPI, SQLAlchemy, paho-mqtt) when imported.
"""

from ._errors import BrokerConfigError, CloudError, DatabaseError, IngestError, PayloadError

__all__ = ["BrokerConfigError", "CloudError", "DatabaseError", "IngestError", "PayloadError"]
