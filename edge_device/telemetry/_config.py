"""Telemetry settings: pydantic v2 data, ``extra="forbid"``, validators that do no I/O.

File checks (TLS certificates, password files) happen when a connection is made, in ``_mqtt``,
so that a config can be validated on a machine that does not hold the files.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from edge_runtime import validated

from ._errors import TelemetryConfigError

__all__ = [
    "DEVICE_ID_PATTERN",
    "KINDS",
    "BatchConfig",
    "DeliveryConfig",
    "MqttConfig",
    "OutboxConfig",
    "TelemetryConfig",
    "default_outbox_path",
    "validate_device_id",
]

#: Record kinds in ascending priority: when the outbox is full, metrics go first, events last.
KINDS: tuple[str, ...] = ("metrics", "telemetry", "events")

#: A device id is one MQTT topic level and one Mosquitto user name: no wildcards, no '/', no ':'.
DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_DEVICE_ID_RE = re.compile(DEVICE_ID_PATTERN)


def validate_device_id(value: str) -> str:
    if not isinstance(value, str) or not _DEVICE_ID_RE.match(value):
        raise ValueError(
            f"device id {value!r} is not valid: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (it becomes an MQTT topic level and a broker user name)"
        )
    return value


def default_outbox_path() -> Path:
    """``$EDGE_OUTBOX``, else ``$XDG_STATE_HOME/edge/outbox.db`` (``~/.local/state/edge/outbox.db``)."""
    env = os.environ.get("EDGE_OUTBOX")
    if env:
        return Path(env)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "edge" / "outbox.db"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttConfig(_Model):
    """Where and how to reach the broker.

    ``url`` is ``mqtt://HOST[:PORT]`` (plain, port 1883) or ``mqtts://HOST[:PORT]`` (TLS, port 8883);
    ``USER[:PASSWORD]@`` in the URL is accepted but a password file or ``EDGE_MQTT_PASSWORD`` keeps the
    secret out of process listings.
    """

    url: str
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    #: the environment variable read last for the password: the device's by default; the cloud's ingester
    #: sets EDGE_CLOUD_MQTT_PASSWORD, so one host's two roles never read each other's secret
    password_env: str = Field("EDGE_MQTT_PASSWORD", pattern=r"^[A-Z_][A-Z0-9_]*$")
    keepalive_s: int = Field(30, ge=2, le=3600)
    connect_timeout_s: float = Field(10.0, gt=0, le=300)
    reconnect_min_s: float = Field(0.5, gt=0, le=3600)
    reconnect_max_s: float = Field(60.0, gt=0, le=86400)

    @model_validator(mode="after")
    def _check(self) -> MqttConfig:
        parts = urlsplit(self.url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(f"MQTT URL {self.url!r}: scheme must be mqtt:// or mqtts://")
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"MQTT URL {self.url!r}: bad port ({exc})") from exc
        if not parts.hostname:
            raise ValueError(f"MQTT URL {self.url!r}: no host (write mqtt://HOST:PORT)")
        if port == 0:
            raise ValueError(f"MQTT URL {self.url!r}: port 0 is not a port")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"MQTT URL {self.url!r}: a broker URL has no path, query or fragment")
        if parts.username and self.username:
            raise ValueError("give the MQTT user name either in the URL or as username, not both")
        if parts.password and (self.password or self.password_file):
            raise ValueError("give the MQTT password either in the URL or as password/password_file, not both")
        if self.password is not None and self.password_file is not None:
            raise ValueError("give either password or password_file, not both")
        if (self.password is not None or self.password_file is not None or parts.password) and not (
            self.username or parts.username
        ):
            raise ValueError("an MQTT password needs a user name")
        if not self.tls and (self.ca_file or self.cert_file or self.key_file):
            raise ValueError(f"TLS files are set but {self.url!r} is plain MQTT: use mqtts://")
        if self.key_file and not self.cert_file:
            raise ValueError("key_file is set without cert_file (the client certificate)")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        return self

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme in ("mqtts", "ssl")

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.tls else 1883)

    @property
    def user(self) -> str | None:
        """The user name, from the field or the URL."""
        name = urlsplit(self.url).username
        return self.username or (unquote(name) if name else None)

    @property
    def url_password(self) -> str | None:
        pw = urlsplit(self.url).password
        return unquote(pw) if pw else None

    @property
    def safe_url(self) -> str:
        """The URL without its password, for logs."""
        scheme = urlsplit(self.url).scheme
        user = f"{self.user}@" if self.user else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


class OutboxConfig(_Model):
    """The SQLite outbox and its bounds. ``max_bytes`` counts the records' JSON, not SQLite overhead."""

    path: Path = Field(default_factory=default_outbox_path)
    max_rows: int = Field(200_000, ge=10)
    max_bytes: int = Field(128 * 1024 * 1024, ge=64 * 1024)
    ttl_s: float = Field(7 * 24 * 3600.0, gt=0)


class BatchConfig(_Model):
    """How records are grouped into MQTT messages (one topic, one kind per message)."""

    max_records: int = Field(500, ge=1, le=50_000)
    max_bytes: int = Field(256 * 1024, ge=1024, le=64 * 1024 * 1024)
    linger_s: float = Field(0.5, ge=0, le=600)


class DeliveryConfig(_Model):
    """When a message leaves the outbox.

    ``confirm`` says whose word deletes the rows of a message:

    * ``"auto"`` (default): the ingester's, when one serves this device, else the broker's. An
      ingester (``edge cloud ingest``) announces itself with a retained message on
      ``edge/D/cmd/ingest``, which the device reads on every connection (it may read its own
      ``cmd/`` topics). With the announcement, rows stay until the ingester confirms its database
      commit on ``edge/D/cmd/ack``; without it (a plain broker feeding Home Assistant, Node-RED,
      Telegraf), rows go at the broker's PUBACK, so telemetry flows and nothing is sent twice.
      An ingester that is only down leaves its announcement on the broker: the device keeps its
      rows (resending them) until the ingester is back and commits them, so nothing is lost however
      long it is away. The device also remembers its ingester (with the outbox, per broker), so a
      broker that lost its retained messages does not make it delete rows nobody receives.
      ``edge cloud ingest --retire`` replaces the announcements with a retained retirement notice;
      from then on the devices delete at PUBACK (the messages still waiting for a confirmation
      too) and forget the ingester. On each connection acknowledged rows wait until the retained
      announcement could have arrived (the PUBACK of the ``online`` status, published right after
      subscribing, marks that point) and, with none and no remembered ingester,
      ``announce_wait_s`` more: an ingester that is running but has never seen this device
      announces itself as soon as it has the device's status. A new device whose ingester is down
      and has never heard of it trusts the broker, unless the ingester announced it beforehand
      (``edge cloud ingest --devices fleet.toml``).
    * ``"ingester"``: always wait for the ingester's confirmation (the previous default; ``"cloud"``
      is accepted for it).
    * ``"broker"``: always delete at the broker's PUBACK.

    A message the broker acknowledged but the ingester never confirmed (broker crash, full queue,
    ingester down) is sent again after ``confirm_timeout_s``, doubling up to ``confirm_timeout_max_s``.
    ``window`` bounds the messages published but not yet confirmed: it is the device's flow control.
    It is larger than Mosquitto's default in-flight limit towards the ingester (20), so the broker
    always has the next messages queued while the ingester commits the previous ones.
    """

    confirm: Literal["auto", "ingester", "broker"] = "auto"
    window: int = Field(32, ge=1, le=1000)
    confirm_timeout_s: float = Field(30.0, gt=0, le=86400)
    confirm_timeout_max_s: float = Field(600.0, gt=0, le=86400)
    announce_wait_s: float = Field(3.0, ge=0, le=3600)

    @field_validator("confirm", mode="before")
    @classmethod
    def _old_name(cls, v: object) -> object:
        # "cloud" was the name of "ingester" before "auto" existed; configs written then still load.
        return "ingester" if v == "cloud" else v

    @model_validator(mode="after")
    def _check(self) -> DeliveryConfig:
        if self.confirm_timeout_max_s < self.confirm_timeout_s:
            raise ValueError("confirm_timeout_max_s must be >= confirm_timeout_s")
        return self


class TelemetryConfig(_Model):
    device_id: str
    mqtt: MqttConfig
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    metrics_interval_s: float = Field(60.0, gt=0, le=86400)
    #: records accepted by ``write`` but not yet committed; past it the lowest-priority ones are dropped
    #: (and counted) rather than blocking the caller
    max_pending: int = Field(20_000, ge=10)

    @model_validator(mode="after")
    def _check(self) -> TelemetryConfig:
        validate_device_id(self.device_id)
        if self.batch.max_bytes > self.outbox.max_bytes:
            raise ValueError("batch.max_bytes must not exceed outbox.max_bytes")
        if self.batch.max_records > self.outbox.max_rows:
            raise ValueError("batch.max_records must not exceed outbox.max_rows")
        return self

    @classmethod
    def build(cls, **data: object) -> TelemetryConfig:
        """Validate, turning pydantic's error into a :class:`TelemetryConfigError` naming each field."""
        return validated(cls, data, "telemetry settings", TelemetryConfigError)

