"""Validated first-boot settings: host name, login user, SSH keys, WiFi, trusted keys, device token.

Every check here runs before the image is opened for writing, and each error names the value or
file at fault. The WiFi passphrase is read from a file (never the command line, where `ps` and
shell history would show it) and is stored on the card only as the WPA PSK derived from it.
The device token is a secret too: it is never part of a message, a repr or a log line.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from edge_runtime import EdgeError, key_id, load_public_key

from ._errors import DeployInputError

__all__ = [
    "DeviceSettings",
    "DeviceToken",
    "TrustedKey",
    "WifiSettings",
    "device_token",
    "read_device_token",
    "read_ssh_keys",
    "read_trusted_key",
    "read_wifi",
]

_HOSTNAME_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# Names the system or this toolkit already uses for something else.
_RESERVED_USERS = frozenset({"root", "daemon", "bin", "sys", "nobody", "edge", "systemd-network"})
_KEY_TYPES = frozenset({
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
})
_COUNTRY_RE = re.compile(r"^[A-Z]{2}$")


@dataclass(frozen=True)
class WifiSettings:
    ssid: str
    psk: str
    """The 64 hex digit WPA PSK (PBKDF2 of the passphrase and SSID), never the passphrase itself."""
    country: str


@dataclass(frozen=True)
class DeviceSettings:
    """What the first boot sets up besides the edge software."""

    user: str = "pi"
    hostname: str | None = None
    ssh_keys: tuple[str, ...] = ()
    wifi: WifiSettings | None = None

    def __post_init__(self) -> None:
        if self.hostname is not None and not _HOSTNAME_RE.match(self.hostname):
            raise DeployInputError(
                f"host name {self.hostname!r} is not valid: use 1-63 lowercase letters, digits and '-', "
                "not starting or ending with '-'"
            )
        if not _USER_RE.match(self.user):
            raise DeployInputError(
                f"user name {self.user!r} is not valid: start with a lowercase letter or '_', then up to 31 "
                "lowercase letters, digits, '_' or '-'"
            )
        if self.user in _RESERVED_USERS:
            raise DeployInputError(f"user name {self.user!r} is reserved (the agent runs as 'edge'); choose another")


def read_ssh_keys(path: Path) -> tuple[str, ...]:
    """The public keys in an OpenSSH public key file (``id_ed25519.pub`` or an authorized_keys file).

    A private key, or anything that does not parse as ``TYPE BASE64 [COMMENT]`` with a matching
    type inside the key blob, is refused: putting a private key on an SD card would leak it.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DeployInputError(f"{path}: cannot read SSH key file: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise DeployInputError(f"{path}: not an OpenSSH public key (not ASCII text)") from exc
    if "PRIVATE KEY" in text:
        raise DeployInputError(
            f"{path}: is a private key; pass the public key instead (the .pub file, e.g. {path.name}.pub)"
        )
    keys: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keys.append(_check_key_line(path, number, line))
    if not keys:
        raise DeployInputError(f"{path}: holds no SSH public key")
    return tuple(keys)


def _check_key_line(path: Path, number: int, line: str) -> str:
    parts = line.split(None, 2)
    where = f"{path}: line {number}"
    if len(parts) < 2 or parts[0] not in _KEY_TYPES:
        raise DeployInputError(
            f"{where}: not an OpenSSH public key (expected 'ssh-ed25519 AAAA... comment' or another "
            f"of {', '.join(sorted(_KEY_TYPES))})"
        )
    try:
        blob = base64.b64decode(parts[1], validate=True)
        (length,) = struct.unpack_from(">I", blob)
        inner = blob[4:4 + length].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError) as exc:
        raise DeployInputError(f"{where}: the key data is not valid base64 of an SSH key") from exc
    if inner != parts[0]:
        raise DeployInputError(f"{where}: the key data is a {inner!r} key but the line says {parts[0]!r}")
    return " ".join(parts)


def read_wifi(ssid: str, psk_file: Path, country: str) -> WifiSettings:
    """Check the SSID, the passphrase in ``psk_file`` and the country; derive the WPA PSK."""
    ssid_bytes = ssid.encode("utf-8")
    if not 1 <= len(ssid_bytes) <= 32:
        raise DeployInputError(f"WiFi SSID {ssid!r} must be 1 to 32 bytes long")
    if any(ord(c) < 32 for c in ssid):
        raise DeployInputError(f"WiFi SSID {ssid!r} contains control characters")
    country = country.upper()
    if not _COUNTRY_RE.match(country):
        raise DeployInputError(
            f"WiFi country {country!r} must be a two-letter ISO 3166 code such as GB, DE or US "
            "(it sets the radio's regulatory domain)"
        )
    try:
        raw = psk_file.read_bytes()
    except OSError as exc:
        raise DeployInputError(f"{psk_file}: cannot read WiFi passphrase file: {exc.strerror or exc}") from exc
    # One trailing newline is what `echo pass > file` leaves; anything else is part of the passphrase.
    if raw.endswith(b"\r\n"):
        raw = raw[:-2]
    elif raw.endswith(b"\n"):
        raw = raw[:-1]
    try:
        passphrase = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise DeployInputError(f"{psk_file}: the WiFi passphrase must be printable ASCII") from exc
    if "\n" in passphrase:
        raise DeployInputError(f"{psk_file}: must hold the passphrase on a single line")
    if re.fullmatch(r"[0-9a-fA-F]{64}", passphrase):
        psk = passphrase.lower()
    elif 8 <= len(passphrase) <= 63 and all(32 <= ord(c) <= 126 for c in passphrase):
        # IEEE 802.11i: PSK = PBKDF2-HMAC-SHA1(passphrase, ssid, 4096 rounds, 32 bytes).
        psk = hashlib.pbkdf2_hmac("sha1", passphrase.encode("ascii"), ssid_bytes, 4096, 32).hex()
    else:
        raise DeployInputError(
            f"{psk_file}: a WPA passphrase is 8 to 63 printable ASCII characters "
            f"(or 64 hex digits), this one has {len(passphrase)}"
        )
    return WifiSettings(ssid=ssid, psk=psk, country=country)


# -- what the agent needs on the device: trusted keys, the device token --------------------------------

#: Longer than any token the cloud service issues; a bigger file is the wrong file.
_MAX_TOKEN = 4096


@dataclass(frozen=True)
class TrustedKey:
    """An Ed25519 public key (PEM) that model bundles must be signed with, as read from ``source``."""

    source: Path
    pem: bytes = field(repr=False)
    key_id: str
    """The key's short id (as ``edge keys`` and ``edge agent check-config`` print it)."""


@dataclass(frozen=True)
class DeviceToken:
    """The device's cloud token. ``value`` never appears in a repr, an error or a log line."""

    value: str = field(repr=False)
    source: str
    """Where it came from (``--device-token`` or a file name), for messages."""


def read_trusted_key(path: Path) -> TrustedKey:
    """The Ed25519 public key in ``path``, checked the way the agent will load it on the device."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DeployInputError(f"{path}: cannot read trusted key: {exc.strerror or exc}") from exc
    if b"PRIVATE KEY" in raw:
        # The card is readable by anyone holding it: a signing key on it signs anything.
        raise DeployInputError(
            f"{path}: is a private key; pass the public key (the .pub file `edge keys generate` wrote)"
        )
    try:
        key = load_public_key(path)
    except EdgeError as exc:
        raise DeployInputError(f"trusted key {exc}") from exc
    return TrustedKey(source=path, pem=raw, key_id=key_id(key))


def device_token(value: str, source: str = "--device-token") -> DeviceToken:
    """Check a device token; errors name ``source`` and what is wrong, never the token."""
    if not value:
        raise DeployInputError(f"{source}: the device token is empty")
    if len(value) > _MAX_TOKEN:
        raise DeployInputError(f"{source}: the device token is {len(value)} characters, more than {_MAX_TOKEN}")
    if not all(33 <= ord(c) <= 126 for c in value):
        # The agent strips the token file and sends the token in an HTTP header: spaces, line breaks
        # and non-ASCII cannot survive that.
        raise DeployInputError(
            f"{source}: the device token must be printable ASCII without spaces or line breaks"
        )
    return DeviceToken(value=value, source=source)


def read_device_token(path: Path) -> DeviceToken:
    """The device token held in ``path`` (one line; surrounding whitespace is ignored, as the agent does)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DeployInputError(f"{path}: cannot read device token file: {exc.strerror or exc}") from exc
    if len(raw) > 4 * _MAX_TOKEN:
        raise DeployInputError(f"{path}: is {len(raw)} bytes, too big to be a device token file")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise DeployInputError(
            f"{path}: the device token must be printable ASCII without spaces or line breaks"
        ) from exc
    return device_token(text.strip(), source=str(path))
