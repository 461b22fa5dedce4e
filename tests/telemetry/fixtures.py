"""Fixtures shared by tests/telemetry and tests/cloud_ingest (imported by both conftests)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from cloud_sync.db import telemetry_records
from cloud_sync.ingest import IngestConfig, Ingester
from edge_device.telemetry import MqttConfig, Telemetry, open_telemetry
from tests.telemetry.servers import Mosquitto, Postgres, wait_for

#: Settings that make a device react in test time instead of production time.
FAST: dict[str, Any] = {
    "batch": {"linger_s": 0.05},
    "delivery": {"confirm_timeout_s": 1.0, "confirm_timeout_max_s": 4.0},
    "mqtt_options": {"keepalive_s": 2, "connect_timeout_s": 2.0, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5},
    "metrics_interval_s": 3600.0,
}


def fast_settings(**overrides: Any) -> dict[str, Any]:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in FAST.items()}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key].update(value)
        else:
            out[key] = value
    return out


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    m = Mosquitto(tmp_path / "broker").start()
    yield m
    m.stop()


@pytest.fixture
def make_ingester(tmp_path: Path) -> Iterator[Callable[..., Ingester]]:
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
    made: list[Telemetry] = []

    def make(url: str, device_id: str = "dev1", outbox: Path | None = None, **overrides: Any) -> Telemetry:
        tel = open_telemetry(url, device_id, outbox or tmp_path / f"{device_id}.outbox.db",
                             **fast_settings(**overrides))
        made.append(tel)
        return tel

    yield make
    for tel in made:
        tel.close(drain_s=0)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    pg = Postgres().start()
    yield pg
    pg.stop()


def cloud_frames(engine: Engine, device_id: str) -> list[int]:
    with engine.connect() as c:
        return [r[0] for r in c.execute(select(telemetry_records.c.frame)
                                        .where(telemetry_records.c.device_id == device_id))]


def wait_cloud_count(engine: Engine, device_id: str, n: int, timeout: float = 60) -> None:
    def count() -> int:
        with engine.connect() as c:
            return int(c.execute(select(func.count()).select_from(telemetry_records)
                                 .where(telemetry_records.c.device_id == device_id)).scalar_one())
    wait_for(lambda: count() >= n, timeout, f"{n} records of {device_id} in the cloud database")


def frame(i: int, **extra: Any) -> dict[str, Any]:
    """A record shaped like the pipeline's (DESIGN.md "Pipeline")."""
    return {"ts": "2026-01-01T00:00:00.000Z", "source": "cam0", "frame": i,
            "top_k": [{"label": "tomato", "score": 0.9}, {"label": "leaf", "score": 0.05}],
            "latency_ms": {"preprocess": 1.0, "inference": 5.0, "postprocess": 0.2, "total": 6.2},
            "model": {"name": "plants", "version": 3}, "backend": "litert", "path": "local", **extra}
