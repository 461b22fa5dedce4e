"""Telemetry records and envelopes as the device makes them, and waits on the cloud database."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

from tests.support.net import wait_for

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["FAST", "cloud_frames", "fast_settings", "frame", "message", "wait_cloud_count"]

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


def cloud_frames(engine: Engine, device_id: str) -> list[int]:
    from sqlalchemy import select

    from cloud_sync.db import telemetry_records

    with engine.connect() as c:
        return [r[0] for r in c.execute(select(telemetry_records.c.frame)
                                        .where(telemetry_records.c.device_id == device_id))]


def wait_cloud_count(engine: Engine, device_id: str, n: int, timeout: float = 60) -> None:
    from sqlalchemy import func, select

    from cloud_sync.db import telemetry_records

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


def message(device: str, seq: int, records: list[Any], kind: str = "telemetry", **over: Any) -> bytes:
    body = {"schema": 1, "device_id": device, "seq": seq, "uuid": str(uuid.uuid4()), "kind": kind,
            "created": "2026-01-01T00:00:00Z", "records": records, **over}
    return json.dumps(body).encode()
