"""paho-mqtt at the boundary: client creation (TLS, credentials, last will) and reconnect backoff.

paho is imported inside the functions so that ``import edge_device.telemetry`` works on a machine
without it; the error then says which extra to install.
"""

from __future__ import annotations

import os
import random
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._config import MqttConfig
from ._errors import TelemetryConfigError, TelemetryError

if TYPE_CHECKING:
    from paho.mqtt.client import Client

__all__ = ["backoff_delay", "check_mqtt_files", "create_client", "paho"]


def paho() -> Any:
    """The ``paho.mqtt.client`` module, or a TelemetryError saying how to install it."""
    try:
        import paho.mqtt.client as mqtt_client
    except ImportError as exc:
        raise TelemetryError(
            "MQTT telemetry needs paho-mqtt >= 2.0: pip install 'edge-runtime[device]'"
        ) from exc
    return mqtt_client


def backoff_delay(attempt: int, min_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with "equal jitter": half the step is fixed, half random.

    The fixed half keeps a flapping broker from being hammered; the random half spreads a fleet
    that lost the same broker at the same moment, so they do not all reconnect in lockstep.
    """
    step = min(max_s, min_s * (2 ** min(max(attempt, 0), 32)))
    return step / 2 + (rng or random).uniform(0, step / 2)


def _read_password(config: MqttConfig) -> str | None:
    if config.password is not None:
        return config.password.get_secret_value()
    if config.password_file is not None:
        try:
            return config.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise TelemetryConfigError(f"MQTT password file {config.password_file}: cannot read "
                                       f"({exc.strerror})") from exc
        except UnicodeDecodeError as exc:
            raise TelemetryConfigError(f"MQTT password file {config.password_file}: not UTF-8 text") from exc
    if config.url_password is not None:
        return config.url_password
    # Last: the environment, so a systemd unit can pass the secret without a file.
    return os.environ.get(config.password_env) if config.user else None


def check_mqtt_files(config: MqttConfig) -> None:
    """Fail early, with the file's name, if a TLS or password file is missing or unreadable."""
    for label, path in (("CA certificate", config.ca_file), ("client certificate", config.cert_file),
                        ("client key", config.key_file), ("password file", config.password_file)):
        if path is None:
            continue
        p = Path(path)
        if not p.is_file():
            raise TelemetryConfigError(f"MQTT {label} {p}: no such file")
        if not os.access(p, os.R_OK):
            raise TelemetryConfigError(f"MQTT {label} {p}: not readable by this user")


def create_client(config: MqttConfig, *, client_id: str, clean_session: bool = True,
                  will: tuple[str, bytes] | None = None) -> Client:
    """A paho client (MQTT 3.1.1, callback API 2) with credentials, TLS and last will applied."""
    mqtt = paho()
    check_mqtt_files(config)
    client: Client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                 clean_session=clean_session, protocol=mqtt.MQTTv311)
    if config.user:
        client.username_pw_set(config.user, _read_password(config))
    if config.tls:
        try:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                             cafile=str(config.ca_file) if config.ca_file else None)
            if config.cert_file:
                ctx.load_cert_chain(str(config.cert_file), str(config.key_file) if config.key_file else None)
        except (ssl.SSLError, OSError) as exc:
            raise TelemetryConfigError(f"MQTT TLS files cannot be loaded ({exc})") from exc
        client.tls_set_context(ctx)
    client.connect_timeout = config.connect_timeout_s
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=True)
    return client
