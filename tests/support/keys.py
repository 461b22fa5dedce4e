"""Ed25519 signing keys for bundles."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple


class Keys(NamedTuple):
    """A key pair's files. A tuple, so ``keys[0]`` / ``priv, pub = keys`` work as well as
    ``keys.private``: the agent tests index it, the cloud service tests name the fields."""

    private: Path
    public: Path


def make_keys(directory: Path) -> Keys:
    from edge_runtime import generate_keypair

    return Keys(*generate_keypair(directory))
