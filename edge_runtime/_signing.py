"""Ed25519 keys and manifest signatures (``manifest.sig`` holds the raw 64-byte signature).

cryptography (its Rust extension and a static OpenSSL: ~10 MiB of RSS) is imported by the functions
that sign or verify, not by this module: a device running an unsigned bundle never loads it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import KeyFileError, SignatureError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    PrivateKey = Ed25519PrivateKey
    PublicKey = Ed25519PublicKey

__all__ = [
    "PrivateKey",
    "PublicKey",
    "generate_keypair",
    "key_id",
    "load_private_key",
    "load_public_key",
    "sign_bytes",
    "verify_bytes",
]


def __getattr__(name: str) -> Any:
    # PrivateKey / PublicKey are the cryptography classes, imported when first asked for.
    if name in ("PrivateKey", "PublicKey"):
        from cryptography.hazmat.primitives.asymmetric import ed25519

        return ed25519.Ed25519PrivateKey if name == "PrivateKey" else ed25519.Ed25519PublicKey
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


PRIVATE_NAME = "edge_signing.key"
PUBLIC_NAME = "edge_signing.pub"


def generate_keypair(out_dir: str | Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair as PEM files; the private key is created mode 0600."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    priv_path, pub_path = out / PRIVATE_NAME, out / PUBLIC_NAME
    if not overwrite and (priv_path.exists() or pub_path.exists()):
        raise KeyFileError(f"{priv_path} or {pub_path} already exists; pass overwrite to replace it")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    priv_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pub_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_new(priv_path, priv_pem, 0o600)
    _write_new(pub_path, pub_pem, 0o644)
    return priv_path, pub_path


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a fresh file created with ``mode``, then rename it over ``path``.

    Opening the destination itself would keep an old file's looser mode (a 0644 private key stays 0644)
    and follow a symlink planted at the key path; a new file made with O_EXCL|O_NOFOLLOW in the same
    folder, renamed into place, replaces whatever was there (link included) and is never readable by
    others, not even for an instant.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        fd = os.open(tmp, flags, mode)
    except OSError as exc:
        raise KeyFileError(f"{tmp}: cannot create key file ({exc.strerror})") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # the umask may have narrowed it; never widened
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise KeyFileError(f"{path}: cannot write key file ({exc.strerror})") from exc


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = _read_key_file(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: is a {type(key).__name__}, an Ed25519 private key is needed")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = _read_key_file(path)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a PEM public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: is a {type(key).__name__}, an Ed25519 public key is needed")
    return key


def key_id(key: Ed25519PublicKey) -> str:
    """A short stable name for a public key: the first 16 hex digits of sha256 of its raw bytes."""
    import hashlib

    from cryptography.hazmat.primitives import serialization

    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign_bytes(key: Ed25519PrivateKey, data: bytes) -> bytes:
    return key.sign(data)


def verify_bytes(
    keys: Ed25519PublicKey | list[Ed25519PublicKey], data: bytes, signature: bytes, *, what: str
) -> str:
    """Check ``signature`` over ``data`` against any of ``keys``; return the id of the key that matched."""
    from cryptography.exceptions import InvalidSignature

    if len(signature) != 64:
        raise SignatureError(f"{what}: signature is {len(signature)} bytes, an Ed25519 signature is 64")
    candidates = keys if isinstance(keys, list) else [keys]
    for k in candidates:
        try:
            k.verify(signature, data)
        except InvalidSignature:
            continue
        return key_id(k)
    ids = ", ".join(key_id(k) for k in candidates)
    raise SignatureError(
        f"{what}: signature does not match the trusted key(s) {ids}: tampered, or signed by another key")


def _read_key_file(path: str | Path) -> bytes:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{p}: cannot read key file ({exc.strerror})") from exc
    if len(data) > 64 * 1024:
        raise KeyFileError(f"{p}: {len(data)} bytes is too large for a key file")
    return data
