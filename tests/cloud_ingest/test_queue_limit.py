"""Mosquitto's default max_queued_messages (1000) with the ingester away: the broker drops, and
nothing is lost, because devices resend whatever the cloud has not confirmed."""

from __future__ import annotations

from pathlib import Path

from tests.support.net import wait_for
from tests.support.servers import Mosquitto
from tests.support.telemetry import cloud_frames, frame, wait_cloud_count

DEVICES = 3
PER_DEVICE = 500


def test_default_queue_limit_drops_at_the_broker_but_nothing_is_lost(
        tmp_path: Path, broker: Mosquitto, make_ingester, make_device) -> None:
    assert "max_queued_messages" not in broker.conf.read_text()  # Mosquitto's default: 1000
    db = f"sqlite:///{tmp_path / 'cloud.db'}"
    # The session exists and the devices are announced (as `edge cloud ingest --devices fleet.toml`
    # does), so they wait for confirmations from their first message on; then the ingester is gone.
    make_ingester(broker.url, db, devices=tuple(f"dev{d}" for d in range(DEVICES))).stop()
    devices = [
        make_device(broker.url, f"dev{d}", delivery={"window": 1000, "confirm_timeout_s": 2.0},
                    batch={"max_records": 1, "linger_s": 0.0})
        for d in range(DEVICES)
    ]
    for d, tel in enumerate(devices):
        for i in range(PER_DEVICE):
            tel.write(frame(d * 100_000 + i))
    # 1500 one-record messages for a session that may queue 1000: the broker has to drop
    wait_for(lambda: "Outgoing messages are being dropped for client edge-ingest" in broker.log_text(), 60,
             "Mosquitto to drop messages for the ingester's session")
    wait_for(lambda: all(t.publisher.stats.delivery_mode == "ingester" for t in devices), 30,
             "every device to keep its rows for the announced ingester")
    ing = make_ingester(broker.url, db)
    for d in range(DEVICES):
        wait_cloud_count(ing.engine, f"dev{d}", PER_DEVICE, timeout=120)
    for d, tel in enumerate(devices):
        assert tel.flush(60)
        frames = cloud_frames(ing.engine, f"dev{d}")
        assert len(frames) == PER_DEVICE and sorted(frames) == [d * 100_000 + i for i in range(PER_DEVICE)]
    assert sum(t.publisher.stats.resent for t in devices) > 0  # the dropped ones came back by resend
