"""Fixtures of the cloud service tests: signed bundles of the shared MobileNet V2, and a plain
service per module (a module that needs other settings defines its own ``service``). The service
under uvicorn, PostgreSQL, Mosquitto, S3 and the keys come from tests/support."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import edge_runtime
from cloud_sync.service import ServiceSettings
from edge_runtime import load_private_key
from tests.support.data import IMAGENET_LABELS, MOBILENET_MODEL
from tests.support.keys import Keys
from tests.support.service import ADMIN_TOKEN, Running, run_service


@pytest.fixture(scope="session")
def labels() -> list[str]:
    return IMAGENET_LABELS.read_text().splitlines()


@pytest.fixture(scope="session")
def make_signed(tmp_path_factory: pytest.TempPathFactory, keys: Keys, labels: list[str]) -> Callable[..., Path]:
    """A signed MobileNet V2 bundle archive with the given version (and name)."""
    out_dir = tmp_path_factory.mktemp("bundles")
    cache: dict[tuple[str, int, str], Path] = {}

    def make(version: int = 1, name: str = "mobilenet_v2", key: Path | None = None) -> Path:
        k = (name, version, str(key or keys.private))
        if k not in cache:
            out = out_dir / f"{name}-v{version}-{len(cache)}.tar.gz"
            edge_runtime.make_bundle(MOBILENET_MODEL, out, name=name, version=version, labels=labels,
                                     preprocess={"size": (224, 224)}, sign_key=load_private_key(key or keys.private))
            cache[k] = out
        return cache[k]

    return make


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[Running]:
    """The service with the admin token and the test keys trusted, one per module."""
    settings = ServiceSettings(data_dir=tmp_path_factory.mktemp("svc"), admin_token=ADMIN_TOKEN,
                               trusted_keys=[keys.public])
    with run_service(settings) as running:
        yield running
