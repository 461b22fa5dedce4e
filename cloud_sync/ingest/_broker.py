"""Mosquitto configuration for a fleet: users, hashed passwords and an ACL.

Device ``D`` may publish only ``edge/D/{telemetry,metrics,events,status}`` and its own Home
Assistant discovery configs (``homeassistant/sensor/<node of D>/+/config``), and read only
``edge/D/cmd/#``; the ingester reads every device's telemetry, metrics, events and status and writes
commands (including the confirmations on ``edge/D/cmd/ack`` and its retained announcement on
``edge/D/cmd/ingest``, which it also reads back when it is retired). Anonymous clients are refused.

The devices file is TOML::

    ha_discovery_prefix = "homeassistant"   # optional: the devices' discovery prefix ("" for none)

    [ingester]                 # optional
    username = "ingest"
    password = "..."           # optional: generated when absent

    [service]                  # optional: the cloud service's update notices (mqtt_username)
    username = "edge-cloud"
    password = "..."           # optional: generated when absent

    [home_assistant]           # optional: a user for Home Assistant (reads discovery and states)
    username = "homeassistant"
    password = "..."           # optional: generated when absent

    [[devices]]
    id = "greenhouse-1"
    password = "..."           # optional: generated when absent

Generated passwords are written to ``credentials.toml`` (mode 0600) next to the broker files and
reused when the command runs again, so re-running it after adding a device does not lock out the
others. The ingester's and the service's passwords are also written alone, to
``ingest.password`` and ``service.password`` (mode 0600), for ``edge cloud ingest --password-file``
and the service's ``mqtt_password``.

Client ids are bound to user names (``use_username_as_clientid``): a device that asks for another
device's (or the ingester's) client id gets its own, so it cannot take over and disconnect the
other. Each broker user therefore holds one connection at a time: several ingesters sharing the
load (``--share``) or a device with two connections need ``--no-bind-client-ids``.

Revocation: ``edge cloud broker-config --fleet-from-db URL --reload PID`` reads the service's
device registry, leaves revoked devices out of ``passwd`` and ``acl`` and makes Mosquitto re-read
them (SIGHUP); the ingester turns a revoked device's messages into rejects on its own.
"""

from __future__ import annotations

import base64
import hashlib
import os
import pwd
import secrets
import signal
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from edge_device.telemetry import INGEST_ANNOUNCE_LEAF, topic_for, validate_device_id
from edge_runtime import first_line, validated

from .._errors import BrokerConfigError, DatabaseError

__all__ = ["BrokerFiles", "BrokerSpec", "DeviceCredentials", "HomeAssistantCredentials", "ServiceCredentials",
           "load_devices_file", "mosquitto_password_hash", "registry_fleet", "reload_mosquitto", "spec_with_registry",
           "write_broker_config"]

_PBKDF2_ITERATIONS = 101  # what mosquitto_passwd 2.x writes for its "$7$" (PBKDF2-SHA512) hashes
_DEVICE_TOPICS = ("telemetry", "metrics", "events", "status")


class DeviceCredentials(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    password: SecretStr | None = None

    @field_validator("id")
    @classmethod
    def _valid_id(cls, v: str) -> str:
        return validate_device_id(v)


class IngesterCredentials(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str = Field("ingest", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    password: SecretStr | None = None


class ServiceCredentials(BaseModel):
    """The cloud service's broker user: it writes update notices on ``edge/D/cmd/update``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str = Field("edge-cloud", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    password: SecretStr | None = None


class HomeAssistantCredentials(BaseModel):
    """Home Assistant's broker user: it reads the devices' discovery configs and the topics those
    configs name (telemetry, metrics, status), and writes nothing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str = Field("homeassistant", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    password: SecretStr | None = None


class BrokerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    devices: list[DeviceCredentials] = Field(default_factory=list)
    ingester: IngesterCredentials = Field(default_factory=IngesterCredentials)
    service: ServiceCredentials = Field(default_factory=ServiceCredentials)
    #: the devices' Home Assistant discovery prefix (their ``[home_assistant] discovery_prefix``):
    #: each device may publish its own discovery configs under it; empty: no discovery at all
    ha_discovery_prefix: str = Field("homeassistant", pattern=r"^([A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*)?$")
    #: a broker user for Home Assistant (absent: none)
    home_assistant: HomeAssistantCredentials | None = None

    @model_validator(mode="after")
    def _unique(self) -> BrokerSpec:
        seen: set[str] = set()
        for d in self.devices:
            if d.id in seen:
                raise ValueError(f"device {d.id!r} is listed twice")
            seen.add(d.id)
        if self.ingester.username in seen:
            raise ValueError(f"the ingester's user name {self.ingester.username!r} is also a device id")
        if self.service.username in seen or self.service.username == self.ingester.username:
            raise ValueError(f"the service's user name {self.service.username!r} is also a device id or the "
                             "ingester's: each broker user holds one connection")
        if self.home_assistant is not None:
            ha = self.home_assistant.username
            if ha in seen or ha in (self.ingester.username, self.service.username):
                raise ValueError(f"Home Assistant's user name {ha!r} is also a device id, the ingester's or "
                                 "the service's: each broker user holds one connection")
            if not self.ha_discovery_prefix:
                raise ValueError("a [home_assistant] user needs ha_discovery_prefix (the devices' discovery prefix)")
        return self


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    conf: Path
    passwd: Path
    acl: Path
    credentials: Path
    generated: tuple[str, ...]  # users whose password was generated this time
    #: the ingester's password alone (mode 0600), for ``edge cloud ingest --password-file``
    ingester_password: Path | None = None
    #: the service's password alone (mode 0600), for its ``mqtt_password``
    service_password: Path | None = None


def load_devices_file(path: str | os.PathLike[str]) -> BrokerSpec:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BrokerConfigError(f"{p}: cannot read the devices file ({exc.strerror})") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BrokerConfigError(f"{p}: not valid TOML ({exc})") from exc
    return validated(BrokerSpec, data, "devices file", BrokerConfigError, where=str(p))


def registry_fleet(db_url: str) -> tuple[list[str], set[str]]:
    """The device registry's view of the fleet (the service's ``fleet_devices`` table): the ids of
    the active devices, and of the revoked ones."""
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    from ..db import fleet_devices, make_engine

    try:
        engine = make_engine(db_url)
    except (DatabaseError, SQLAlchemyError) as exc:
        raise BrokerConfigError(f"--fleet-from-db: cannot open the database ({first_line(exc, typed=True)})") from exc
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(fleet_devices.c.id, fleet_devices.c.revoked_at)
                                .order_by(fleet_devices.c.id)).all()
    except SQLAlchemyError as exc:
        raise BrokerConfigError(f"--fleet-from-db: cannot read the devices ({first_line(exc, typed=True)})") from exc
    finally:
        engine.dispose()
    active = [str(r.id) for r in rows if r.revoked_at is None]
    revoked = {str(r.id) for r in rows if r.revoked_at is not None}
    return active, revoked


def spec_with_registry(spec: BrokerSpec, active: list[str], revoked: set[str]) -> BrokerSpec:
    """``spec`` with the registry applied: revoked devices removed (they lose their broker user and
    every ACL line), active devices the file does not list added (with generated passwords)."""
    listed = {d.id for d in spec.devices}
    devices = [d for d in spec.devices if d.id not in revoked]
    cloud_users = (spec.ingester.username, spec.service.username)
    devices += [DeviceCredentials(id=i) for i in active if i not in listed and i not in cloud_users]
    return BrokerSpec(devices=devices, ingester=spec.ingester, service=spec.service,
                      ha_discovery_prefix=spec.ha_discovery_prefix, home_assistant=spec.home_assistant)


def reload_mosquitto(pid_or_file: str) -> int:
    """SIGHUP a running Mosquitto (a pid, or its pid file): it re-reads the password file and the
    ACL, so a removed device can no longer connect nor publish. Returns the pid."""
    text = pid_or_file.strip()
    if not text.isdigit():
        try:
            text = Path(text).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise BrokerConfigError(f"--reload {pid_or_file}: cannot read the pid file ({exc.strerror})") from exc
    if not text.isdigit() or not 0 < int(text) < 2**22:
        raise BrokerConfigError(f"--reload {pid_or_file}: {text[:32]!r} is not a process id")
    pid = int(text)
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError as exc:
        raise BrokerConfigError(f"--reload: no process {pid} (is Mosquitto running?)") from exc
    except PermissionError as exc:
        raise BrokerConfigError(f"--reload: not allowed to signal process {pid}") from exc
    return pid


def mosquitto_password_hash(password: str, *, salt: bytes | None = None) -> str:
    """A ``$7$`` PBKDF2-SHA512 hash line value, as ``mosquitto_passwd`` 2.x writes it."""
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, _PBKDF2_ITERATIONS)
    return f"$7${_PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def _previous_passwords(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BrokerConfigError(f"{path}: cannot reuse the previous credentials ({exc}); move it away") from exc
    found: dict[str, str] = {}
    for section in ("ingester", "service", "home_assistant"):
        ing = data.get(section, {})
        if isinstance(ing, dict) and isinstance(ing.get("username"), str) and isinstance(ing.get("password"), str):
            found[ing["username"]] = ing["password"]
    for d in data.get("devices", []) if isinstance(data.get("devices"), list) else []:
        if isinstance(d, dict) and isinstance(d.get("id"), str) and isinstance(d.get("password"), str):
            found[d["id"]] = d["password"]
    return found


def _uid_of(user: str) -> tuple[int, int] | None:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _write(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def write_broker_config(
    spec: BrokerSpec,
    out_dir: str | os.PathLike[str],
    *,
    port: int = 1883,
    bind: str = "0.0.0.0",
    cafile: Path | None = None,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    require_certificate: bool = False,
    device_window: int = 32,
    run_as: str | None = None,
    bind_client_ids: bool = True,
) -> BrokerFiles:
    """Write ``mosquitto.conf``, ``passwd``, ``acl`` and ``credentials.toml`` into ``out_dir``.

    Mosquitto started as root drops to an unprivileged account before it reads the password file
    and the ACL. ``run_as`` names that account (written as ``user``); when this runs as root it
    also owns ``passwd``, ``acl`` and the persistence directory. Default as root: ``mosquitto``.

    ``bind_client_ids`` (the default) makes Mosquitto use each client's user name as its client
    id (``use_username_as_clientid``): a device that connects with another device's client id (or
    the ingester's) gets its own instead, so it cannot take over and disconnect the other one.
    Each broker user then holds one connection at a time.
    """
    if run_as is None and os.geteuid() == 0 and _uid_of("mosquitto") is not None:
        run_as = "mosquitto"
    owner = None
    if run_as is not None:
        owner = _uid_of(run_as)
        if owner is None:
            raise BrokerConfigError(f"--user {run_as}: no such account on this machine")
    if (certfile is None) != (keyfile is None):
        raise BrokerConfigError("TLS needs both --certfile and --keyfile")
    if require_certificate and cafile is None:
        raise BrokerConfigError("--require-certificate needs --cafile (the CA that signed the device certificates)")
    if not 0 < port < 65536:
        raise BrokerConfigError(f"port {port} is not a TCP port")
    out = Path(out_dir).resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "data").mkdir(exist_ok=True)
    except OSError as exc:
        raise BrokerConfigError(f"{out}: cannot create ({exc.strerror})") from exc
    files = BrokerFiles(conf=out / "mosquitto.conf", passwd=out / "passwd", acl=out / "acl",
                        credentials=out / "credentials.toml", generated=())
    previous = _previous_passwords(files.credentials)
    generated: list[str] = []

    def password_for(user: str, given: SecretStr | None) -> str:
        if given is not None:
            return given.get_secret_value()
        if user in previous:
            return previous[user]
        generated.append(user)
        return secrets.token_urlsafe(24)

    ing_user = spec.ingester.username
    ing_pw = password_for(ing_user, spec.ingester.password)
    svc_user = spec.service.username
    svc_pw = password_for(svc_user, spec.service.password)
    dev_pw = {d.id: password_for(d.id, d.password) for d in spec.devices}

    ha = spec.home_assistant
    ha_pw = password_for(ha.username, ha.password) if ha is not None else None

    passwd = [f"{ing_user}:{mosquitto_password_hash(ing_pw)}", f"{svc_user}:{mosquitto_password_hash(svc_pw)}"]
    if ha is not None and ha_pw is not None:
        passwd.append(f"{ha.username}:{mosquitto_password_hash(ha_pw)}")
    passwd += [f"{dev}:{mosquitto_password_hash(pw)}" for dev, pw in dev_pw.items()]

    acl = ["# Generated by `edge cloud broker-config`. Anything not granted here is denied.", "",
           "# The ingester reads every device's data and writes commands (confirmations and its retained",
           "# announcement on cmd/ingest included); it reads the announcements back when it is retired.",
           f"user {ing_user}"]
    acl += [f"topic read edge/+/{t}" for t in _DEVICE_TOPICS]
    acl += [f"topic read {topic_for('+', INGEST_ANNOUNCE_LEAF)}", "topic write edge/+/cmd/#", ""]
    acl += ["# The cloud service sends update notices.", f"user {svc_user}", "topic write edge/+/cmd/update", ""]
    from edge_device.agent import discovery_topic_filter

    if ha is not None:
        acl += ["# Home Assistant reads the discovery configs and the topics they name; it writes nothing.",
                f"user {ha.username}", f"topic read {spec.ha_discovery_prefix}/#",
                *(f"topic read edge/+/{t}" for t in ("telemetry", "metrics", "status")), ""]
    if spec.ha_discovery_prefix:
        acl += ["# Each device may also publish its own Home Assistant discovery configs (retained), and",
                "# only its own: the node id is a topic level of its own.", ""]
    for dev in dev_pw:
        acl += [f"user {dev}"]
        acl += [f"topic write edge/{dev}/{t}" for t in _DEVICE_TOPICS]
        if spec.ha_discovery_prefix:
            acl += [f"topic write {discovery_topic_filter(dev, spec.ha_discovery_prefix)}"]
        acl += [f"topic read edge/{dev}/cmd/#", ""]

    # The ingester's persistent session must be able to queue every device's window of unconfirmed
    # messages while it restarts; Mosquitto's default (1000) is too small for a large fleet.
    queued = max(1000, 2 * device_window * max(1, len(dev_pw)))
    conf = [
        "# Generated by `edge cloud broker-config`.",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {files.passwd}",
        f"acl_file {files.acl}",
        "",
        *([f"user {run_as}"] if run_as else []),
        "# Sessions and queued messages survive a restart (saved on shutdown and every minute).",
        "persistence true",
        f"persistence_location {out / 'data'}/",
        "autosave_interval 60",
        f"max_queued_messages {queued}",
        "",
        f"listener {port} {bind}",
        # A listener option: before the first `listener` line it would open a default one on 1883.
        *(["# A client's id is its user name, whatever it asks for: no device can take over another",
           "# device's (or the ingester's) session and disconnect it.",
           "use_username_as_clientid true"] if bind_client_ids else []),
    ]
    if certfile is not None and keyfile is not None:
        conf += [f"certfile {Path(certfile).resolve()}", f"keyfile {Path(keyfile).resolve()}"]
        if cafile is not None:
            conf += [f"cafile {Path(cafile).resolve()}"]
        conf += [f"require_certificate {'true' if require_certificate else 'false'}"]

    creds = ["# Passwords for the broker users. Keep this file secret (mode 0600).", "",
             "[ingester]", f"username = {_toml_str(ing_user)}", f"password = {_toml_str(ing_pw)}", "",
             "[service]", f"username = {_toml_str(svc_user)}", f"password = {_toml_str(svc_pw)}", ""]
    if ha is not None and ha_pw is not None:
        creds += ["[home_assistant]", f"username = {_toml_str(ha.username)}", f"password = {_toml_str(ha_pw)}", ""]
    for dev, pw in dev_pw.items():
        creds += ["[[devices]]", f"id = {_toml_str(dev)}", f"password = {_toml_str(pw)}", ""]
    ing_file, svc_file = out / "ingest.password", out / "service.password"
    try:
        _write(ing_file, ing_pw + "\n", 0o600)
        _write(svc_file, svc_pw + "\n", 0o600)
        _write(files.passwd, "\n".join(passwd) + "\n", 0o600)
        _write(files.acl, "\n".join(acl) + "\n", 0o644)
        _write(files.conf, "\n".join(conf) + "\n", 0o644)
        _write(files.credentials, "\n".join(creds), 0o600)
        if owner is not None and os.geteuid() == 0:
            for path in (files.passwd, files.acl, out / "data"):
                os.chown(path, owner[0], owner[1])
    except OSError as exc:
        raise BrokerConfigError(f"{out}: cannot write the broker files ({exc.strerror})") from exc
    return BrokerFiles(conf=files.conf, passwd=files.passwd, acl=files.acl, credentials=files.credentials,
                       generated=tuple(generated), ingester_password=ing_file, service_password=svc_file)
