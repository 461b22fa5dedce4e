"""The agent's second MQTT connection: update notices in, Home Assistant discovery out.

The telemetry package owns the connection that publishes (outbox, status, last will) and offers
no way to subscribe to other topics, so commands use a small paho client of their own, built with
telemetry's ``create_client`` (same broker, credentials and TLS) under the client id
``edge-<device>-cmd``. It subscribes to ``edge/<device>/cmd/update`` only: the notice is a hint,
the registry is always asked and the bundle always verified.

Home Assistant discovery: retained config messages on
``<prefix>/sensor/<node_id>/<field>/config`` (see :func:`discovery_messages`) whose state topics are
the device's own telemetry (``edge/<device>/telemetry``, ``edge/<device>/metrics``) and whose
availability is its status topic, so no topic is added and nothing is published twice.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import re
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_runtime import __version__

from ..telemetry import MqttConfig, TelemetryError, create_client, topic_for
from ._errors import AgentError

if TYPE_CHECKING:
    from paho.mqtt.client import Client, MQTTMessage

__all__ = ["CommandClient", "UpdateNotice", "discovery_messages", "ha_node_id"]

log = logging.getLogger(__name__)

MAX_NOTICE_BYTES = 16 * 1024


class UpdateNotice(BaseModel):
    """What the cloud sends on ``edge/D/cmd/update`` (fields beyond these are ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: int = Field(ge=1, le=2**31 - 1)
    model: str | None = None
    schema_: int = Field(1, alias="schema")


class Listener(Protocol):
    """An MQTT connection the device already holds that can read one more topic and keep retained
    messages published (edge_device.telemetry.Telemetry)."""

    def listen(self, topic: str, handler: Callable[[str, bytes], None],
               retained: Sequence[tuple[str, bytes]] = (), on_ready: Callable[[], None] | None = None) -> None: ...


class CommandClient:
    """Update notices on ``edge/D/cmd/update`` and Home Assistant discovery.

    With ``via`` (the device's telemetry), both travel on telemetry's connection: a broker that binds
    client ids to user names (the generated Mosquitto config does) lets each device hold one
    connection, and a second one would knock the first off. Without it, a connection of its own.
    """

    def __init__(self, mqtt: MqttConfig, device_id: str, *, on_update: Callable[[UpdateNotice], None],
                 retained: list[tuple[str, bytes]] | None = None, via: Listener | None = None) -> None:
        self.mqtt = mqtt
        self.via = via
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
        if self.via is not None:
            self.via.listen(self.topic, self._handle, self._retained, on_ready=self.connected.set)
            self.published += len(self._retained)
            log.info("MQTT commands: listening on %s (on the telemetry connection)", self.topic)
            return
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
        self._handle(message.topic, bytes(message.payload))

    def _handle(self, topic: str, payload: bytes) -> None:
        if topic != self.topic:
            return
        if not payload:
            return  # a cleared retained notice
        try:
            if len(payload) > MAX_NOTICE_BYTES:
                raise ValueError(f"{len(payload)} bytes is too large for a notice")
            notice = UpdateNotice.model_validate_json(payload)
        except (ValidationError, ValueError) as exc:
            self.malformed += 1
            first = exc.errors()[0] if isinstance(exc, ValidationError) else None
            why = f"{'.'.join(str(x) for x in first['loc'])}: {first['msg']}" if first else str(exc)
            log.warning("MQTT commands: ignoring a malformed update notice on %s (%s)", topic, why)
            return
        self.notices += 1
        log.info("MQTT commands: update notice for version %d", notice.version)
        self._on_update(notice)


#: what Home Assistant accepts as a discovery topic's node_id and object_id
_HA_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
#: the software named in every discovery config's ``origin`` (Home Assistant logs it with the config)
ORIGIN_NAME = "edge-runtime"


def ha_node_id(device_id: str) -> str:
    """The device's part of its discovery topics and ids: the id itself when Home Assistant accepts
    it, else the id with every other character turned into ``_`` plus a short hash of the real id,
    so ``greenhouse.1`` and ``greenhouse_1`` stay two devices."""
    if _HA_ID.match(device_id):
        return device_id
    digest = hashlib.sha256(device_id.encode()).hexdigest()[:8]
    return f"{re.sub(r'[^a-zA-Z0-9_-]', '_', device_id)}_{digest}"


def _entity_slug(text: str) -> str:
    # Home Assistant's entity ids: lower case letters, digits and single underscores inside
    return re.sub(r"_+", "_", re.sub(r"[^a-z0-9]", "_", text.lower())).strip("_")


def _support_url() -> str | None:
    """The project URL from the installed distribution's metadata, if it declares one."""
    try:
        meta = importlib.metadata.metadata(ORIGIN_NAME)
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in meta.get_all("Project-URL") or []:
        url = entry.split(",", 1)[-1].strip()
        if url.startswith(("https://", "http://")):
            return url
    homes = [h for h in meta.get_all("Home-page") or [] if h.startswith(("https://", "http://"))]
    return homes[0] if homes else None


def discovery_messages(device_id: str, *, prefix: str, name: str | None, model_name: str,
                       support_url: str | None = None, task: str | None = None,
                       count_labels: Sequence[str] = ()) -> list[tuple[str, bytes]]:
    """Home Assistant MQTT discovery configs (retained) for one device's sensors.

    Follows Home Assistant's current discovery schema: topics ``<prefix>/sensor/<object_id>/config``
    whose object_id (``<node>_<field>``, see :func:`ha_node_id`) matches ``[a-zA-Z0-9_-]+``, a
    ``unique_id`` per sensor, ``default_entity_id`` (``sensor.<slug>``; it replaced the deprecated
    ``object_id`` option), ``origin`` (this software, its version, and its support URL when the
    distribution declares one), the device block with ``identifiers``, and ``availability`` from
    the retained ``edge/D/status`` (``online``/``offline``, the last will included).

    For a detector (``task="detection"``), one count sensor per label of ``count_labels``
    (``<node>_count_<label>``): how many objects of that label the device's latest frame holds, read
    from the ``detections`` of the records it already publishes on ``edge/D/telemetry``. The label
    and score sensors read a detector's best object when a record has no ``top_k``.
    """
    tele = topic_for(device_id, "telemetry")
    metrics = topic_for(device_id, "metrics")
    node = ha_node_id(device_id)
    last = "(value_json.records | last)"
    device = {"identifiers": [f"edge_{device_id}"], "name": name or device_id, "manufacturer": "edge-runtime",
              "model": model_name, "sw_version": __version__}
    origin = {"name": ORIGIN_NAME, "sw_version": __version__}
    url = support_url or _support_url()
    if url:
        origin["support_url"] = url
    availability = [{"topic": topic_for(device_id, "status"), "value_template": "{{ value_json.state }}",
                     "payload_available": "online", "payload_not_available": "offline"}]
    sensors: list[dict[str, Any]] = [
        {"field": "label", "name": "Label", "state_topic": tele, "icon": "mdi:tag",
         "value_template": f"{{% set r = {last} %}}{{{{ r.top_k[0].label if r.top_k else (r.detections[0].label "
                           "if r.detections else ('error' if r.error else 'none')) }}"},
        {"field": "score", "name": "Score", "state_topic": tele, "unit_of_measurement": "%",
         "state_class": "measurement",
         "value_template": f"{{% set r = {last} %}}{{{{ (r.top_k[0].score * 100) | round(1) if r.top_k else "
                           "((r.detections[0].score * 100) | round(1) if r.detections else 0) }}"},
        {"field": "path", "name": "Answered by", "state_topic": tele, "icon": "mdi:cloud-outline",
         "value_template": f"{{% set r = {last} %}}{{{{ r.path }}}} ({{{{ r.route | default('') }}}})"},
        {"field": "model_version", "name": "Model version", "state_topic": metrics, "icon": "mdi:numeric",
         "value_template": f"{{% set r = {last} %}}{{{{ r.model.version if r.model else 'unknown' }}}}"},
        {"field": "fps", "name": "Frame rate", "state_topic": metrics, "unit_of_measurement": "fps",
         "state_class": "measurement", "value_template": f"{{{{ {last}.fps }}}}"},
    ]
    if task == "detection":
        slugs: set[str] = set()
        for label in dict.fromkeys(count_labels):
            slug = _entity_slug(label)
            if not slug or slug in slugs:  # "Car" after "car", or no ASCII at all: told apart by a hash
                slug = f"{slug}_{hashlib.sha256(label.encode()).hexdigest()[:8]}".lstrip("_")
            slugs.add(slug)
            # the label as a Jinja string literal (JSON's escapes are Jinja's too)
            literal = json.dumps(label, ensure_ascii=False)
            sensors.append({
                "field": f"count_{slug}", "name": f"{label} count", "state_topic": tele, "icon": "mdi:counter",
                "state_class": "measurement",
                "value_template": f"{{% set r = {last} %}}{{{{ (r.detections | default([], true)) | "
                                  f"selectattr('label', 'equalto', {literal}) | list | length }}}}"})
    elif count_labels:
        log.warning("home_assistant.count_labels: %s is a %s model, not a detector; no count sensors",
                    model_name, task or "non-detection")
    clears: list[tuple[str, bytes]] = []
    out: list[tuple[str, bytes]] = []
    for s in sensors:
        field = s.pop("field")
        object_id = f"{node}_{field}"
        # Ids as earlier versions made them for ids Home Assistant accepted, so an upgrade updates
        # those entities in place instead of adding new ones.
        uid = f"edge_{object_id}".replace("-", "_")
        config = {**s, "unique_id": uid, "default_entity_id": f"sensor.{_entity_slug(uid)}",
                  "device": device, "origin": origin, "availability": availability, "availability_mode": "latest"}
        out.append((discovery_topic(prefix, node, field), json.dumps(config).encode()))
        # Earlier versions published on <prefix>/sensor/<node>_<field>/config, a topic no broker ACL
        # can grant one device without granting it every device's. An empty retained message
        # removes such a config (Home Assistant then drops the entity and the config above brings it
        # back under the same unique_id); sent first, so the old one never shadows the new one.
        clears.append((f"{prefix}/sensor/{object_id}/config", b""))
    return clears + out


def discovery_topic(prefix: str, node: str, field: str) -> str:
    """Where a device publishes one sensor's discovery config: the node id as a topic level of its
    own, so that ``<prefix>/sensor/<node>/+/config`` (see :func:`discovery_topic_filter`) grants a
    device its own configs and nobody else's."""
    return f"{prefix}/sensor/{node}/{field}/config"


def discovery_topic_filter(device_id: str, prefix: str = "homeassistant") -> str:
    """The topic filter covering every discovery config of ``device_id``: what a broker ACL grants
    the device (``edge cloud broker-config``)."""
    return discovery_topic(prefix, ha_node_id(device_id), "+")
