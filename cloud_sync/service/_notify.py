"""Update notices over MQTT (``edge/<device>/cmd/update``), when a broker is configured.

Notices are a hint: devices also poll ``/api/v1/device/update``, so a broker outage delays an
update but loses nothing. They are published retained with QoS 1, so a device that was offline
gets the latest notice for it when it reconnects.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from ._settings import ServiceSettings

__all__ = ["MqttNotifier", "Notifier", "NullNotifier", "make_notifier"]

log = logging.getLogger(__name__)


class Notifier:
    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop background work."""


class NullNotifier(Notifier):
    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        log.debug("no MQTT broker configured; notice for %s not sent", topic)


class MqttNotifier(Notifier):
    """One paho client per replica with its own network thread; publishing never blocks a request."""

    def __init__(self, host: str, port: int, username: str | None = None, password: str | None = None) -> None:
        import paho.mqtt.client as mqtt

        self._mqtt = mqtt
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="", clean_session=True)
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        # Queue notices while the broker is away instead of dropping them (bounded).
        self._client.max_queued_messages_set(10_000)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._connected = threading.Event()
        self._host, self._port = host, port
        self._client.connect_async(host, port, keepalive=30)
        self._client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("MQTT broker %s:%d refused the connection: %s", self._host, self._port, reason)
            return
        self._connected.set()
        log.info("connected to MQTT broker %s:%d for update notices", self._host, self._port)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any = None) -> None:
        self._connected.clear()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        info = self._client.publish(topic, json.dumps(payload, separators=(",", ":")), qos=1, retain=True)
        if info.rc not in (self._mqtt.MQTT_ERR_SUCCESS, self._mqtt.MQTT_ERR_NO_CONN):
            log.warning("update notice for %s not queued (paho rc %s)", topic, info.rc)
        else:
            log.info("update notice queued for %s: %s v%s", topic, payload.get("model"), payload.get("version"))

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def make_notifier(settings: ServiceSettings) -> Notifier:
    if not settings.mqtt_host:
        return NullNotifier()
    password = settings.mqtt_password.get_secret_value() if settings.mqtt_password else None
    return MqttNotifier(settings.mqtt_host, settings.mqtt_port, settings.mqtt_username, password)
