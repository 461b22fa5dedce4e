"""Telemetry ingestion: devices' MQTT messages into the database, exactly once, and the
Mosquitto configuration (users, passwords, ACL) that keeps each device to its own topics.

>>> from cloud_sync.ingest import IngestConfig, Ingester          # doctest: +SKIP
>>> from edge_device.telemetry import MqttConfig                 # doctest: +SKIP
>>> ing = Ingester(IngestConfig(mqtt=MqttConfig(url="mqtt://localhost:1883"),
...                             db_url="postgresql://ingest@db/edge"))   # doctest: +SKIP
>>> ing.start()                                                   # doctest: +SKIP
"""

from ._broker import (
    BrokerFiles,
    BrokerSpec,
    DeviceCredentials,
    HomeAssistantCredentials,
    ServiceCredentials,
    load_devices_file,
    mosquitto_password_hash,
    registry_fleet,
    reload_mosquitto,
    spec_with_registry,
    write_broker_config,
)
from ._ingester import ANNOUNCE_FILTER, SUBSCRIPTIONS, IngestConfig, Ingester, IngestStats, retire
from ._parse import Parsed, Rejected, parse_message

__all__ = [
    "ANNOUNCE_FILTER",
    "SUBSCRIPTIONS",
    "BrokerFiles",
    "BrokerSpec",
    "DeviceCredentials",
    "HomeAssistantCredentials",
    "IngestConfig",
    "IngestStats",
    "Ingester",
    "Parsed",
    "Rejected",
    "ServiceCredentials",
    "load_devices_file",
    "mosquitto_password_hash",
    "parse_message",
    "registry_fleet",
    "reload_mosquitto",
    "retire",
    "spec_with_registry",
    "write_broker_config",
]
