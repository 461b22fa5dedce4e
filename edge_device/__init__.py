"""edge_device: the long-running services of a device, on top of the runtime (``edge_runtime``).

- ``edge_device.telemetry``: the durable SQLite outbox and its MQTT publisher;
- ``edge_device.agent``: the device agent (hybrid routing, signed updates with rollback, systemd);
- ``edge_device.client``: the device's HTTP client for the cloud service (registry, online inference).

The agent depends on the cloud only through the Protocols it declares (``CloudClassifier``, the
updater's download client); ``edge_device.client`` is the implementation that speaks HTTP. Nothing
here imports the cloud service itself (``cloud_sync``), and importing this package imports nothing.
"""

__all__: list[str] = []
