"""The fixtures every test folder may take by name, registered by the top-level conftest
(``pytest_plugins``): the shared data and MobileNet V2, signing keys, Mosquitto, PostgreSQL, S3,
and devices and ingesters for telemetry. A folder's own fixtures stay in its conftest.

Heavy libraries are imported inside the fixtures, so that a folder that takes none of them
(device profiles, the architecture checks) does not pay for them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.data import MOBILENET_REFERENCE, SHARED
from tests.support.keys import Keys, make_keys
from tests.support.servers import Mosquitto, Postgres, start_moto_s3
from tests.support.telemetry import fast_settings

if TYPE_CHECKING:
    from cloud_sync.ingest import Ingester
    from edge_device.telemetry import Telemetry


def _require(path: Path) -> Path:
    if not path.exists():
        # Fail, never skip: a missing data set must not turn into a green run.
        pytest.fail(f"test data {path} is missing; the shared data folder must sit beside the project")
    return path


# -- the shared data ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _require(SHARED)


@pytest.fixture(scope="session")
def mobilenet_tflite(shared_data: Path) -> Path:
    return _require(shared_data / "models" / "mobilenet_v2_1.0_224_quant.tflite")


@pytest.fixture(scope="session")
def imagenet_labels(shared_data: Path) -> list[str]:
    return _require(shared_data / "labels" / "imagenet_labels.txt").read_text().splitlines()


@pytest.fixture(scope="session")
def reference_images(shared_data: Path) -> dict[str, Path]:
    return {name: _require(shared_data / "images" / name) for name in MOBILENET_REFERENCE}


@pytest.fixture(scope="session")
def mobilenet_bundle(tmp_path_factory: pytest.TempPathFactory, mobilenet_tflite: Path,
                     imagenet_labels: list[str]) -> Path:
    from edge_runtime import make_bundle

    out = tmp_path_factory.mktemp("bundles") / "mobilenet"
    return make_bundle(mobilenet_tflite, out, name="mobilenet_v2", version=1, labels=imagenet_labels)


@pytest.fixture(scope="session")
def efficientnet_bundle(tmp_path_factory: pytest.TempPathFactory, imagenet_labels: list[str]) -> Path:
    """EfficientNet-Lite0 (real pretrained weights) exported to ONNX by the test, then bundled."""
    from edge_runtime import make_bundle
    from tests.support.models import efficientnet_lite0_onnx

    d = tmp_path_factory.mktemp("efficientnet")
    onnx_path = efficientnet_lite0_onnx(d / "efficientnet_lite0.onnx")
    # The model has 1000 classes; the shared file has 1001 with "background" first.
    return make_bundle(onnx_path, d / "bundle", name="efficientnet_lite0", labels=imagenet_labels[1:],
                       preprocess={"mean": [127.0], "std": [128.0]})


# -- signing keys ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    """The release key: bundles signed with it are trusted."""
    return make_keys(tmp_path_factory.mktemp("keys-release"))


@pytest.fixture(scope="session")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    """Another key: what it signs must be refused."""
    return make_keys(tmp_path_factory.mktemp("keys-other"))


# -- servers -----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """One broker for the session, no persistence. Unpacks as ``host, port`` too."""
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"), persistence=False).start()
    yield broker
    broker.stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker of the test's own, with persistence: the test may stop, kill and restart it."""
    m = Mosquitto(tmp_path / "broker").start()
    yield m
    m.stop()


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A world-traversable temporary directory for a broker's password, ACL and certificate files:
    Mosquitto drops to its own user before reading them, and pytest's tmp dirs (0700) are closed
    to it."""
    d = Path(tempfile.mkdtemp(prefix="edge-public-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL cluster: ``postgres.url``, or ``postgres()`` for a fresh database."""
    pg = Postgres().start()
    yield pg
    pg.stop()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with start_moto_s3() as url:
        yield url


# -- telemetry: devices and the cloud's ingester -----------------------------------------------
@pytest.fixture
def make_ingester(tmp_path: Path) -> Iterator[Callable[..., Ingester]]:
    from cloud_sync.ingest import IngestConfig, Ingester
    from edge_device.telemetry import MqttConfig

    started: list[Ingester] = []

    def make(url: str, db_url: str | None = None, **kw: Any) -> Ingester:
        mqtt = kw.pop("mqtt", None) or MqttConfig(url=url, reconnect_min_s=0.2, reconnect_max_s=1.0)
        ing = Ingester(IngestConfig(mqtt=mqtt, db_url=db_url or f"sqlite:///{tmp_path / 'cloud.db'}", **kw))
        ing.start()
        started.append(ing)
        assert ing.wait_connected(20), "the ingester did not subscribe"
        return ing

    yield make
    for ing in started:
        ing.stop()


@pytest.fixture
def make_device(tmp_path: Path) -> Iterator[Callable[..., Telemetry]]:
    from edge_device.telemetry import open_telemetry

    made: list[Telemetry] = []

    def make(url: str, device_id: str = "dev1", outbox: Path | None = None, **overrides: Any) -> Telemetry:
        tel = open_telemetry(url, device_id, outbox or tmp_path / f"{device_id}.outbox.db",
                             **fast_settings(**overrides))
        made.append(tel)
        return tel

    yield make
    for tel in made:
        tel.close(drain_s=0)
