"""Mosquitto configuration for a fleet: users, hashed passwords and an ACL.

Device ``D`` may publish only ``edge/D/{telemetry,metrics,events,status}`` and read only
``edge/D/cmd/#``; the ingester reads every device's telemetry, metrics, events and status and writes
commands (including the confirmations on ``edge/D/cmd/ack`` and its retained announcement on
``edge/D/cmd/ingest``, which it also reads back when it is retired). Anonymous clients are refused.

The devices file is TOML::

    [ingester]                 # optional
    username = "ingest"
    password = "..."           # optional: generated when absent

    [[devices]]
    id = "greenhouse-1"
    password = "..."           # optional: generated when absent

Generated passwords are written to ``credentials.toml`` (mode 0600) next to the broker files and
reused when the command runs again, so re-running it after adding a device does not lock out the
others.
"""

from __future__ import annotations

import base64
import hashlib
import os
import pwd
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from edge_device.telemetry import INGEST_ANNOUNCE_LEAF, topic_for, validate_device_id
from edge_runtime import describe_validation_error

from .._errors import BrokerConfigError

__all__ = ["BrokerFiles", "BrokerSpec", "DeviceCredentials", "load_devices_file", "mosquitto_password_hash",
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


class BrokerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    devices: list[DeviceCredentials] = Field(default_factory=list)
    ingester: IngesterCredentials = Field(default_factory=IngesterCredentials)

    @model_validator(mode="after")
    def _unique(self) -> BrokerSpec:
        seen: set[str] = set()
        for d in self.devices:
            if d.id in seen:
                raise ValueError(f"device {d.id!r} is listed twice")
            seen.add(d.id)
        if self.ingester.username in seen:
            raise ValueError(f"the ingester's user name {self.ingester.username!r} is also a device id")
        return self


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    conf: Path
    passwd: Path
    acl: Path
    credentials: Path
    generated: tuple[str, ...]  # users whose password was generated this time


def load_devices_file(path: str | os.PathLike[str]) -> BrokerSpec:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BrokerConfigError(f"{p}: cannot read the devices file ({exc.strerror})") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BrokerConfigError(f"{p}: not valid TOML ({exc})") from exc
    try:
        return BrokerSpec.model_validate(data)
    except ValidationError as exc:
        raise BrokerConfigError(f"{p}: " + describe_validation_error(exc, "devices file")) from exc


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
    ing = data.get("ingester", {})
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
) -> BrokerFiles:
    """Write ``mosquitto.conf``, ``passwd``, ``acl`` and ``credentials.toml`` into ``out_dir``.

    Mosquitto started as root drops to an unprivileged account before it reads the password file
    and the ACL. ``run_as`` names that account (written as ``user``); when this runs as root it
    also owns ``passwd``, ``acl`` and the persistence directory. Default as root: ``mosquitto``.
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
    dev_pw = {d.id: password_for(d.id, d.password) for d in spec.devices}

    passwd = [f"{ing_user}:{mosquitto_password_hash(ing_pw)}"]
    passwd += [f"{dev}:{mosquitto_password_hash(pw)}" for dev, pw in dev_pw.items()]

    acl = ["# Generated by `edge cloud broker-config`. Anything not granted here is denied.", "",
           "# The ingester reads every device's data and writes commands (confirmations and its retained",
           "# announcement on cmd/ingest included); it reads the announcements back when it is retired.",
           f"user {ing_user}"]
    acl += [f"topic read edge/+/{t}" for t in _DEVICE_TOPICS]
    acl += [f"topic read {topic_for('+', INGEST_ANNOUNCE_LEAF)}", "topic write edge/+/cmd/#", ""]
    for dev in dev_pw:
        acl += [f"user {dev}"]
        acl += [f"topic write edge/{dev}/{t}" for t in _DEVICE_TOPICS]
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
    ]
    if certfile is not None and keyfile is not None:
        conf += [f"certfile {Path(certfile).resolve()}", f"keyfile {Path(keyfile).resolve()}"]
        if cafile is not None:
            conf += [f"cafile {Path(cafile).resolve()}"]
        conf += [f"require_certificate {'true' if require_certificate else 'false'}"]

    creds = ["# Passwords for the broker users. Keep this file secret (mode 0600).", "",
             "[ingester]", f"username = {_toml_str(ing_user)}", f"password = {_toml_str(ing_pw)}", ""]
    for dev, pw in dev_pw.items():
        creds += ["[[devices]]", f"id = {_toml_str(dev)}", f"password = {_toml_str(pw)}", ""]
    try:
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
                       generated=tuple(generated))
