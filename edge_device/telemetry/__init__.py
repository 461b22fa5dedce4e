"""Telemetry that survives being offline: a durable SQLite outbox published over MQTT.

Records (pipeline results, metrics, events) are committed to a local outbox first, batched into
MQTT messages (QoS 1) with a per-device ``seq`` and a UUID, and leave the outbox once delivered: at
the cloud ingester's confirmation of its database commit when an ingester announces that it serves
the device (retained on ``edge/D/cmd/ingest``), at the broker's PUBACK otherwise (any consumer: Home
Assistant, Node-RED, Telegraf); see :class:`DeliveryConfig`. The outbox is bounded by rows, bytes
and age; what it drops is counted and reported on ``edge/D/metrics``.

    >>> from edge_device.telemetry import open_telemetry
    >>> tel = open_telemetry("mqtt://broker:1883", "greenhouse-1", "/var/lib/edge/outbox.db")
    >>> tel.write(record)          # a pipeline sink: never blocks on the network
    >>> tel.event("update_started", version=4)
    >>> tel.close()

Importing this package does not import paho-mqtt; connecting does.
"""

from ._config import (
    DEVICE_ID_PATTERN,
    KINDS,
    BatchConfig,
    DeliveryConfig,
    MqttConfig,
    OutboxConfig,
    TelemetryConfig,
    default_outbox_path,
    validate_device_id,
)
from ._errors import OutboxError, OutboxLockedError, RecordError, TelemetryConfigError, TelemetryError
from ._metrics import MetricsCollector, cpu_temperature_c, memory_info
from ._mqtt import backoff_delay, check_mqtt_files, create_client
from ._outbox import DROP_REASONS, Outbox, OutboxStats, PeekRow, SealedMessage
from ._publisher import Publisher, PublisherStats
from ._schema import (
    INGEST_ANNOUNCE_LEAF,
    SCHEMA_VERSION,
    ConfirmMessage,
    IngestAnnouncement,
    MessageEnvelope,
    StatusMessage,
    encode_record,
    topic_for,
)
from ._telemetry import Telemetry, open_telemetry

__all__ = [
    "DEVICE_ID_PATTERN",
    "DROP_REASONS",
    "INGEST_ANNOUNCE_LEAF",
    "KINDS",
    "SCHEMA_VERSION",
    "BatchConfig",
    "ConfirmMessage",
    "DeliveryConfig",
    "IngestAnnouncement",
    "MessageEnvelope",
    "MetricsCollector",
    "MqttConfig",
    "Outbox",
    "OutboxConfig",
    "OutboxError",
    "OutboxLockedError",
    "OutboxStats",
    "PeekRow",
    "Publisher",
    "PublisherStats",
    "RecordError",
    "SealedMessage",
    "StatusMessage",
    "Telemetry",
    "TelemetryConfig",
    "TelemetryConfigError",
    "TelemetryError",
    "backoff_delay",
    "check_mqtt_files",
    "cpu_temperature_c",
    "create_client",
    "default_outbox_path",
    "encode_record",
    "memory_info",
    "open_telemetry",
    "topic_for",
    "validate_device_id",
]
