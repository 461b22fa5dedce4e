"""The agent's second MQTT connection: update notices in, Home Assistant discovery out.

The telemetry package owns the connection that publishes (outbox, status, last will) and offers
no way to subscribe to other topics, so commands use a small paho client of their own, built with
telemetry's ``create_client`` (same broker, credentials and TLS) under the client id
``edge-<device>-cmd``. It subscribes to ``edge/<device>/cmd/update`` only: the notice is a hint,
the registry is always asked and the bundle always verified.

Home Assistant discovery: retained config messages on
``<prefix>/sensor/<device>_<field>/config`` whose state topics are the device's own telemetry
(``edge/<device>/telemetry``, ``edge/<device>/metrics``) and whose availability is its status
topic, so no topic is added and nothing is published twice.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_runtime import __version__

from ..telemetry import MqttConfig, TelemetryError, create_client, topic_for
from ._errors import AgentError

if TYPE_CHECKING:
    from paho.mqtt.client import Client, MQTTMessage

__all__ = ["CommandClient", "UpdateNotice", "discovery_messages"]

log = logging.getLogger(__name__)

MAX_NOTICE_BYTES = 16 * 1024


class UpdateNotice(BaseModel):
    """What the cloud sends on ``edge/D/cmd/update`` (fields beyond these are ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: int = Field(ge=1, le=2**31 - 1)
    model: str | None = None
    schema_: int = Field(1, alias="schema")


class CommandClient:
    def __init__(self, mqtt: MqttConfig, device_id: str, *, on_update: Callable[[UpdateNotice], None],
                 retained: list[tuple[str, bytes]] | None = None) -> None:
        self.mqtt = mqtt
        self.device_id = device_id
        self.topic = topic_for(device_id, "cmd/update")
        self._on_update = on_update
        self._retained = list(retained or [])
        self._client: Client | None = None
        self.connected = threading.Event()
        self.notices = 0
        self.malformed = 0
        self.published = 0

    def start(self) -> None:
        try:
            client = create_client(self.mqtt, client_id=f"edge-{self.device_id}-cmd", clean_session=True)
        except TelemetryError as exc:
            raise AgentError(f"MQTT commands: {exc}") from exc
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=1, max_delay=60)
        try:
            client.connect_async(self.mqtt.host, self.mqtt.port, keepalive=self.mqtt.keepalive_s)
        except (OSError, ValueError) as exc:
            raise AgentError(f"MQTT commands: cannot connect to {self.mqtt.safe_url}: {exc}") from exc
        client.loop_start()
        self._client = client

    def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    # paho callbacks run on paho's network thread
    def _on_connect(self, client: Client, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("MQTT commands: %s refused the connection: %s", self.mqtt.safe_url, reason)
            return
        client.subscribe(self.topic, qos=1)
        for topic, payload in self._retained:
            client.publish(topic, payload, qos=1, retain=True)
            self.published += 1
        self.connected.set()
        log.info("MQTT commands: listening on %s", self.topic)

    def _on_disconnect(self, client: Client, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        self.connected.clear()

    def _on_message(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        if message.topic != self.topic:
            return
        if not message.payload:
            return  # a cleared retained notice
        try:
            if len(message.payload) > MAX_NOTICE_BYTES:
                raise ValueError(f"{len(message.payload)} bytes is too large for a notice")
            notice = UpdateNotice.model_validate_json(message.payload)
        except (ValidationError, ValueError) as exc:
            self.malformed += 1
            first = exc.errors()[0] if isinstance(exc, ValidationError) else None
            why = f"{'.'.join(str(x) for x in first['loc'])}: {first['msg']}" if first else str(exc)
            log.warning("MQTT commands: ignoring a malformed update notice on %s (%s)", message.topic, why)
            return
        self.notices += 1
        log.info("MQTT commands: update notice for version %d", notice.version)
        self._on_update(notice)


def discovery_messages(device_id: str, *, prefix: str, name: str | None, model_name: str) -> list[tuple[str, bytes]]:
    """Home Assistant MQTT discovery configs (retained) for one device's sensors."""
    tele = topic_for(device_id, "telemetry")
    metrics = topic_for(device_id, "metrics")
    last = "(value_json.records | last)"
    device = {"identifiers": [f"edge_{device_id}"], "name": name or device_id, "manufacturer": "edge-runtime",
              "model": model_name, "sw_version": __version__}
    availability = [{"topic": topic_for(device_id, "status"), "value_template": "{{ value_json.state }}",
                     "payload_available": "online", "payload_not_available": "offline"}]
    sensors: list[dict[str, Any]] = [
        {"field": "label", "name": "Label", "state_topic": tele, "icon": "mdi:tag",
         "value_template": f"{{% set r = {last} %}}{{{{ r.top_k[0].label if r.top_k else ('error' if r.error "
                           "else 'none') }}"},
        {"field": "score", "name": "Score", "state_topic": tele, "unit_of_measurement": "%",
         "state_class": "measurement",
         "value_template": f"{{% set r = {last} %}}{{{{ (r.top_k[0].score * 100) | round(1) if r.top_k else 0 }}}}"},
        {"field": "path", "name": "Answered by", "state_topic": tele, "icon": "mdi:cloud-outline",
         "value_template": f"{{% set r = {last} %}}{{{{ r.path }}}} ({{{{ r.route | default('') }}}})"},
        {"field": "model_version", "name": "Model version", "state_topic": metrics, "icon": "mdi:numeric",
         "value_template": f"{{% set r = {last} %}}{{{{ r.model.version if r.model else 'unknown' }}}}"},
        {"field": "fps", "name": "Frame rate", "state_topic": metrics, "unit_of_measurement": "fps",
         "state_class": "measurement", "value_template": f"{{{{ {last}.fps }}}}"},
    ]
    out = []
    for s in sensors:
        field = s.pop("field")
        uid = f"edge_{device_id}_{field}".replace(".", "_").replace("-", "_")
        config = {**s, "unique_id": uid, "object_id": uid, "device": device, "availability": availability,
                  "availability_mode": "latest"}
        out.append((f"{prefix}/sensor/{device_id}_{field}/config", json.dumps(config).encode()))
    return out
