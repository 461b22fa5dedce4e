"""Tokens: the admin token (configured) and per-device tokens (issued once, stored hashed).

Tokens travel in the ``Authorization: Bearer`` header only. They are compared by their SHA-256
(constant time), never stored or logged in clear: the access log shows paths, not headers.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

__all__ = ["Principal", "hash_token", "new_device_token", "parse_bearer", "tokens_equal"]

DEVICE_TOKEN_PREFIX = "edt_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the admin, or one device (by id)."""

    kind: Literal["admin", "device"]
    device_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.kind == "admin"


def hash_token(token: str) -> str:
    # Tokens are 256-bit random values, so a plain SHA-256 is enough (no password stretching needed).
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_equal(hash_a: str, hash_b: str) -> bool:
    return hmac.compare_digest(hash_a.encode(), hash_b.encode())


def new_device_token() -> str:
    return DEVICE_TOKEN_PREFIX + secrets.token_urlsafe(32)


def parse_bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    value = value.strip()
    return value or None
