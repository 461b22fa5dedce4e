"""`edge run --mqtt`: real model, real images, real broker, real ingester."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from cloud_sync.db import telemetry_records
from edge_device.telemetry import Outbox
from tests.support.data import MOBILENET_REFERENCE
from tests.support.net import wait_for
from tests.support.servers import Mosquitto, SilentServer

ROOT = Path(__file__).resolve().parents[2]


def images(reference_images: dict[str, Path], d: Path, copies: int) -> Path:
    d.mkdir()
    for k in range(copies):
        for name, path in reference_images.items():
            shutil.copy(path, d / f"{k:03d}-{name}")
    return d


def edge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_edge_run_sends_every_record_to_the_cloud(tmp_path: Path, broker: Mosquitto, make_ingester,
                                                  mobilenet_bundle: Path, reference_images) -> None:
    ing = make_ingester(broker.url)
    src = images(reference_images, tmp_path / "imgs", 3)
    r = edge("run", str(mobilenet_bundle), "--source", str(src), "--no-summary", "--mqtt", broker.url,
             "--device-id", "cam-1", "--outbox", str(tmp_path / "o.db"))
    assert r.returncode == 0, r.stderr
    local = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(local) == 12
    wait_for(lambda: len(_cloud(ing.engine)) >= 12, 30, "12 records in the cloud")
    cloud = _cloud(ing.engine)
    assert len(cloud) == 12
    by_source = {Path(rec["source"]).name: rec["top_k"][0]["label"] for rec in cloud}
    for name, label in by_source.items():
        assert label == MOBILENET_REFERENCE[name.split("-", 1)[1]][0]
    assert sorted(rec["frame"] for rec in cloud) == sorted(rec["frame"] for rec in local)


def test_edge_run_finishes_at_full_speed_with_a_dead_uplink_and_keeps_everything(
        tmp_path: Path, mobilenet_bundle: Path, reference_images) -> None:
    hole = SilentServer("blackhole")
    src = images(reference_images, tmp_path / "imgs", 5)
    r = edge("run", str(mobilenet_bundle), "--source", str(src), "--mqtt", hole.url, "--device-id", "cam-2",
             "--outbox", str(tmp_path / "o.db"))
    hole.close()
    assert r.returncode == 0, r.stderr
    assert "20 frame(s), 0 error(s)" in r.stderr
    with Outbox(tmp_path / "o.db", readonly=True) as ob:
        st = ob.stats()
    assert st.appended["telemetry"] == 20 and st.rows >= 20 and st.confirmed_total == 0
    out = edge("outbox", "stats", "--outbox", str(tmp_path / "o.db"), "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["pending"]["telemetry"] == 20


def test_edge_run_mqtt_options_are_checked(tmp_path: Path, mobilenet_bundle: Path, reference_images) -> None:
    src = images(reference_images, tmp_path / "imgs", 1)
    r = edge("run", str(mobilenet_bundle), "--source", str(src), "--mqtt", "mqtt://localhost:1")
    assert r.returncode == 2 and "--mqtt and --device-id go together" in r.stderr
    r = edge("run", str(mobilenet_bundle), "--source", str(src), "--mqtt", "http://x", "--device-id", "d")
    assert r.returncode == 1 and "error: invalid telemetry settings" in r.stderr and "mqtt://" in r.stderr
    r = edge("run", str(mobilenet_bundle), "--source", str(src), "--mqtt", "mqtts://x", "--device-id", "d",
             "--mqtt-ca", str(tmp_path / "nope.pem"))
    assert r.returncode == 1 and "nope.pem: no such file" in r.stderr and "Traceback" not in r.stderr


def _cloud(engine) -> list[dict]:
    with engine.connect() as c:
        return [r[0] for r in c.execute(select(telemetry_records.c.record)
                                        .where(telemetry_records.c.device_id.in_(["cam-1"])))]
