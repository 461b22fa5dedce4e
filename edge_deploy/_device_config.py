"""The agent config as the device sees it: every path rewritten to where the first boot installs things.

An operator writes ``agent.toml`` on their computer, where the bundle, the trusted keys and the token
file live at host paths (often relative to the config). On the device the same things are somewhere
else: the installer puts the bundle in ``/var/lib/edge/bundles/``, the first-boot script puts the
keys in ``/etc/edge/keys/`` and the secrets next to ``agent.toml``, and the agent, sandboxed by its
unit (``ProtectSystem=strict``, ``StateDirectory=edge``), can write only below ``/var/lib/edge``.

:func:`device_config` reads the host config, reads every file it names from the host (so what lands
on the card is what was checked), rewrites each path to its place on the device and validates the
result with the agent's own config model, as ``edge agent check-config`` does on the device.
"""

from __future__ import annotations

import json
import logging
import math
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path, PurePosixPath
from typing import Any, TypeGuard, TypeVar

from ._errors import DeployError, DeployInputError
from ._firstboot import InstallFile
from ._settings import DeviceToken, TrustedKey, read_device_token, read_trusted_key

__all__ = [
    "DEVICE_BUNDLE_DIR",
    "DEVICE_CONFIG",
    "DEVICE_CONF_DIR",
    "DEVICE_KEYS_DIR",
    "DEVICE_STATE_DIR",
    "DEVICE_TOKEN_FILE",
    "CardFile",
    "DeviceConfig",
    "device_config",
]

log = logging.getLogger(__name__)

#: The device layout (install-on-pi.sh, the first-boot script and edge-agent.service agree on it).
DEVICE_CONF_DIR = "/etc/edge"
DEVICE_CONFIG = f"{DEVICE_CONF_DIR}/agent.toml"
DEVICE_KEYS_DIR = f"{DEVICE_CONF_DIR}/keys"
DEVICE_TOKEN_FILE = f"{DEVICE_CONF_DIR}/device.token"
#: The unit's StateDirectory: the only place the sandboxed agent can write.
DEVICE_STATE_DIR = "/var/lib/edge"
DEVICE_BUNDLE_DIR = f"{DEVICE_STATE_DIR}/bundles"

_PUBLIC = ("0644", "root", "root")
# The agent runs as edge; 0600 keeps a secret from every other user on the device.
_SECRET = ("0600", "edge", "edge")
# Single-purpose files the config may name: (section, key) -> (path below /etc/edge, mode, owner, group).
_FIXED_FILES: dict[tuple[str, str], tuple[str, tuple[str, str, str]]] = {
    ("telemetry", "password_file"): ("mqtt.password", _SECRET),
    ("telemetry", "ca_file"): ("tls/ca.pem", _PUBLIC),
    ("telemetry", "cert_file"): ("tls/client.crt", _PUBLIC),
    ("telemetry", "key_file"): ("tls/client.key", _SECRET),
}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_T = TypeVar("_T")


@dataclass(frozen=True)
class CardFile:
    """A file to write into the boot partition's ``edge/`` folder and install on the device."""

    install: InstallFile
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class DeviceConfig:
    text: bytes
    """agent.toml for the device, as written on the card."""
    files: tuple[CardFile, ...]
    """Every file the config names that travels on the card (keys, token, TLS files)."""
    bundle: str
    trusted_keys: tuple[str, ...]
    """Device paths of the trusted keys, as the config names them."""
    token_file: str | None
    """Device path of the token file, when the token travels as a file."""


def device_config(
    config: Path,
    *,
    bundle_name: str,
    trusted_keys: Sequence[TrustedKey] = (),
    token: DeviceToken | None = None,
) -> DeviceConfig:
    """The device's agent.toml and the files it names, from the host config at ``config``.

    ``trusted_keys`` and ``token`` (from the command line) replace the config's own
    ``model.trusted_keys`` and ``cloud.token``/``cloud.token_file``. Raises
    :class:`DeployInputError` naming the key and the problem when a named file cannot be read or
    the rewritten config is one the agent would refuse.
    """
    doc = _read_doc(config)
    base = config.resolve().parent
    files: list[CardFile] = []

    model = _section(doc, "model", config)
    bundle = f"{DEVICE_BUNDLE_DIR}/{bundle_name}"
    _moved(config, "model.bundle", model.get("bundle"), bundle)
    model["bundle"] = bundle

    keys = list(trusted_keys)
    listed = model.get("trusted_keys")
    carry = bool(keys) or _is_str_list(listed)
    if keys:
        if listed:
            log.info("%s: model.trusted_keys replaced by the keys given on the command line", config)
    elif _is_str_list(listed):
        keys = [_host_file(config, base, "model.trusted_keys", item, read_trusted_key) for item in listed]
    key_paths: list[str] = []
    taken: set[str] = set()
    # The same key given twice (two copies, two flags) is pinned once.
    unique: dict[str, TrustedKey] = {}
    for key in keys:
        unique.setdefault(key.key_id, key)
    keys = list(unique.values())
    for key in keys:
        name = _unique_name(_key_file_name(key.source), taken)
        entry = InstallFile(f"keys/{name}", f"{DEVICE_KEYS_DIR}/{name}", *_PUBLIC)
        files.append(CardFile(entry, key.pem))
        key_paths.append(entry.device)
    if carry:
        model["trusted_keys"] = key_paths

    token_file: str | None = None
    from_flag = token is not None
    cloud = _section(doc, "cloud", config) if from_flag or "cloud" in doc else {}
    if token is None and isinstance(cloud.get("token_file"), str):
        token = _host_file(config, base, "cloud.token_file", cloud["token_file"], read_device_token)
    if token is not None:
        if from_flag:
            if "token" in cloud or "token_file" in cloud:
                log.info("%s: the device token given replaces cloud.token / cloud.token_file", config)
            cloud.pop("token", None)
        token_file = DEVICE_TOKEN_FILE
        cloud["token_file"] = token_file
        files.append(CardFile(InstallFile("device.token", token_file, *_SECRET, secret=True),
                              (token.value + "\n").encode("ascii")))

    telemetry = doc.get("telemetry")
    if isinstance(telemetry, dict):
        for (section, name), (rel, (mode, owner, group)) in _FIXED_FILES.items():
            value = telemetry.get(name)
            if not isinstance(value, str):
                continue  # absent, or a wrong type the validation below names
            data = _host_file(config, base, f"{section}.{name}", value, _read_bytes)
            entry = InstallFile(rel, f"{DEVICE_CONF_DIR}/{rel}", mode, owner, group, secret=mode == "0600")
            files.append(CardFile(entry, data))
            telemetry[name] = entry.device
        if isinstance(telemetry.get("outbox"), str):
            telemetry["outbox"] = _writable(config, "telemetry.outbox", telemetry["outbox"])

    # Writable places: the sandboxed agent can write only below its state directory.
    state = doc.get("state_dir")
    if isinstance(state, str) and not _under_state_dir(state):
        _moved(config, "state_dir", state, DEVICE_STATE_DIR)
        doc["state_dir"] = DEVICE_STATE_DIR
    outputs = doc.get("outputs")
    if isinstance(outputs, list):
        doc["outputs"] = [_output(config, o) if isinstance(o, str) else o for o in outputs]
        written = [o for o in doc["outputs"] if isinstance(o, str) and o not in ("-", "")]
        if len(set(written)) != len(written):
            raise DeployInputError(
                f"{config}: outputs: two outputs would write the same file on the device ({', '.join(written)}); "
                f"give them different file names"
            )

    # The agent's own model decides, as `edge agent check-config` would on the device. EDGE_*
    # variables of this computer are not the device's: none apply. Imported here so that the
    # installer's `from edge_deploy import install_plan` on the device stays light.
    from edge_device.agent import AgentConfig, AgentConfigError, load_config

    try:
        load_config(data=doc, environ={})
    except AgentConfigError as exc:
        problems = str(exc).removeprefix("agent config: ").removeprefix("invalid agent config: ")
        raise DeployInputError(f"{config}: invalid agent config for the device: {problems}") from exc
    # Sections in the order the agent documents them ([model] added for --bundle lands near the top).
    order = list(AgentConfig.model_fields)
    doc = {k: doc[k] for k in sorted(doc, key=order.index)}

    text = _toml(doc)
    if tomllib.loads(text) != doc:
        raise DeployError(f"{config}: the rewritten agent config does not read back the same; please report this")
    header = ("# Written by `edge pi prepare-image`: every path is where the first boot puts the file on the\n"
              f"# device. Installed as {DEVICE_CONFIG}.\n")
    return DeviceConfig(
        text=(header + text).encode("utf-8"),
        files=tuple(files),
        bundle=bundle,
        trusted_keys=tuple(key_paths),
        token_file=token_file,
    )


# -- reading --------------------------------------------------------------------------------------------


def _read_doc(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DeployInputError(f"{path}: cannot read agent config: {exc.strerror or exc}") from exc
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DeployInputError(f"{path}: agent config is not UTF-8 text") from exc
    except tomllib.TOMLDecodeError as exc:
        raise DeployInputError(f"{path}: agent config is not valid TOML: {exc}") from exc


def _section(doc: dict[str, Any], name: str, config: Path) -> dict[str, Any]:
    value = doc.setdefault(name, {})
    if not isinstance(value, dict):
        raise DeployInputError(f"{config}: {name}: must be a table ([{name}]), not {type(value).__name__}")
    return value


def _is_str_list(value: Any) -> TypeGuard[list[str]]:
    # Anything else is left in place for the agent's validation to name.
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _host_file(config: Path, base: Path, key: str, value: str, read: Callable[[Path], _T]) -> _T:
    """Read a file the config names, relative to the config's folder as the agent resolves it."""
    path = Path(value)
    path = path if path.is_absolute() else base / path
    try:
        return read(path)
    except DeployInputError as exc:
        hint = ""
        if key == "model.trusted_keys":
            hint = "; or give the key with --trusted-key"
        elif key == "cloud.token_file":
            hint = "; or give the token with --device-token-file"
        raise DeployInputError(f"{config}: {key}: {exc}{hint}") from exc


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DeployInputError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def _key_file_name(source: Path) -> str:
    # FAT and shells both accept this alphabet; the agent reads the PEM whatever the suffix.
    stem = _SAFE_NAME.sub("_", source.stem if source.suffix in (".pub", ".pem") else source.name) or "key"
    return f"{stem}.pub"


def _unique_name(name: str, taken: set[str]) -> str:
    # FAT names are case-insensitive: "Release.pub" and "release.pub" are one file on the card.
    stem, suffix = name.rsplit(".", 1)
    candidate, n = name, 1
    while candidate.lower() in taken:
        n += 1
        candidate = f"{stem}-{n}.{suffix}"
    taken.add(candidate.lower())
    return candidate


# -- writable places -------------------------------------------------------------------------------------


def _under_state_dir(path: str) -> bool:
    p = PurePosixPath(path)
    return p.is_absolute() and ".." not in p.parts and (p == PurePosixPath(DEVICE_STATE_DIR)
                                                        or PurePosixPath(DEVICE_STATE_DIR) in p.parents)


def _writable(config: Path, key: str, value: str) -> str:
    if _under_state_dir(value):
        return value
    name = PurePosixPath(value.replace("\\", "/")).name
    if not name or name in (".", ".."):
        raise DeployInputError(f"{config}: {key}: {value!r} names no file")
    new = f"{DEVICE_STATE_DIR}/{name}"
    _moved(config, key, value, new)
    return new


def _output(config: Path, spec: str) -> str:
    if spec in ("-", ""):
        return spec
    if spec.startswith("sqlite:///"):
        return "sqlite:///" + _writable(config, "outputs", spec[len("sqlite:///"):])
    if spec.startswith("sqlite:"):
        return spec  # malformed: the agent names it when it opens the output
    return _writable(config, "outputs", spec)


def _moved(config: Path, key: str, old: Any, new: str) -> None:
    if old is not None and old != new:
        log.info("%s: %s %s -> %s on the device", config, key, old, new)


# -- writing TOML ----------------------------------------------------------------------------------------


def _toml(doc: dict[str, Any]) -> str:
    """``doc`` as TOML (what tomllib reads back as the same dict): scalars first, then tables."""
    out: list[str] = []
    _table(doc, (), out)
    return "\n".join(out).lstrip("\n") + "\n"


def _table(table: dict[str, Any], path: tuple[str, ...], out: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in table.items() if isinstance(v, dict)}
    if path and (scalars or not tables):
        out += ["", f"[{'.'.join(_key(p) for p in path)}]"]
    out += [f"{_key(k)} = {_value(v)}" for k, v in scalars.items()]
    for k, v in tables.items():
        _table(v, (*path, k), out)


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        # JSON's escapes are a subset of those of a TOML basic string.
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (datetime, date, time)):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise DeployError(f"cannot write {type(v).__name__} values as TOML")
