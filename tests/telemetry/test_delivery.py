"""Device → broker → ingester, with a real Mosquitto started by each test on a free port."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from sqlalchemy import func, select

from cloud_sync.db import telemetry_events, telemetry_metrics
from edge_device.telemetry import MessageEnvelope, Outbox
from tests.support.net import free_port, wait_for
from tests.support.servers import Mosquitto, SilentServer
from tests.support.telemetry import cloud_frames, frame, wait_cloud_count

ROOT = Path(__file__).resolve().parents[2]


class Listener:
    """A plain paho subscriber that records what arrives."""

    def __init__(self, url_port: int, topic: str = "edge/#") -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, bytes(m.payload), m.retain))
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect("127.0.0.1", url_port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        assert subscribed.wait(10)

    def payloads(self, topic: str) -> list[dict]:
        return [json.loads(p) for t, p, _ in list(self.messages) if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_rows_leave_the_outbox_only_after_the_pubacks(tmp_path: Path, make_device) -> None:
    """A broker that takes PUBLISH and never answers PUBACK: everything stays in the outbox; the same
    port then serves a real Mosquitto and every record arrives."""
    silent = SilentServer("no-puback")
    tel = make_device(silent.url, delivery={"confirm": "broker", "window": 4}, batch={"max_records": 10})
    for i in range(50):
        tel.write(frame(i))
    assert tel.commit(10)
    wait_for(lambda: silent.publishes >= 4, 20, "the device to publish to the silent broker")
    st = tel.outbox.stats()
    # nothing left (50 frames + the report made on connecting), although 4 messages went out
    assert st.rows == st.appended_total == 51 and st.confirmed_total == 0 and st.sealed_messages >= 4
    assert tel.publisher.stats.published >= 4 and tel.publisher.stats.broker_acked == 0
    port = silent.port
    silent.close()
    with Mosquitto(tmp_path / "broker", port=port) as broker:
        listener = Listener(broker.port, "edge/dev1/telemetry")
        wait_for(lambda: tel.outbox.stats().rows == 0, 30, "the outbox to drain")
        wait_for(lambda: sum(len(p["records"]) for p in listener.payloads("edge/dev1/telemetry")) >= 50, 10,
                 "50 records at the subscriber")
        frames = [r["frame"] for p in listener.payloads("edge/dev1/telemetry") for r in p["records"]]
        assert sorted(frames) == list(range(50))
        envs = [MessageEnvelope.model_validate_json(p) for t, p, _ in listener.messages
                if t == "edge/dev1/telemetry"]
        seqs = [e.seq for e in envs]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        listener.close()


def test_writes_never_wait_for_a_black_hole_broker(tmp_path: Path, make_device) -> None:
    """The uplink accepts TCP and then says nothing: the publisher hangs in its connect, while the
    writer keeps writing and every record is committed to the outbox."""
    hole = SilentServer("blackhole")
    tel = make_device(hole.url, mqtt_options={"connect_timeout_s": 60.0, "keepalive_s": 30})
    wait_for(lambda: hole.connections >= 1, 10, "the device to dial the black hole")
    done = threading.Event()

    def produce() -> None:
        for i in range(5000):
            tel.write(frame(i))
        done.set()

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    assert done.wait(120), "writes blocked while the broker did not answer"
    assert tel.commit(60)
    assert tel.outbox.stats().appended_total == 5000
    assert tel.publisher.stats.connects == 0 and tel.publisher.is_alive()
    hole.close()


def test_status_is_retained_online_and_the_last_will_says_offline(tmp_path: Path, broker: Mosquitto) -> None:
    script = textwrap.dedent(f"""
        import time
        from edge_device.telemetry import open_telemetry
        tel = open_telemetry({broker.url!r}, "pi-7", {str(tmp_path / 'o.db')!r},
                             mqtt_options={{"keepalive_s": 2}})
        while True:
            tel.write({{"frame": 1}})
            time.sleep(0.05)
    """)
    listener = Listener(broker.port, "edge/pi-7/status")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        wait_for(lambda: any(p["state"] == "online" for p in listener.payloads("edge/pi-7/status")), 30,
                 "status online")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # keepalive 2 s: the broker gives up after 3 s and publishes the will
        wait_for(lambda: listener.payloads("edge/pi-7/status")[-1]["state"] == "offline", 30, "the last will")
    finally:
        if proc.poll() is None:
            proc.kill()
        listener.close()
    late = Listener(broker.port, "edge/pi-7/status")  # a dashboard that connects afterwards
    wait_for(lambda: late.messages, 10, "the retained status")
    _topic, payload, retained = late.messages[0]
    assert retained and json.loads(payload)["state"] == "offline" and json.loads(payload)["device_id"] == "pi-7"
    late.close()


def test_rows_wait_for_the_cloud_and_a_message_the_broker_lost_is_resent(
        tmp_path: Path, broker: Mosquitto, make_device, make_ingester) -> None:
    """confirm="ingester" (no longer the default; "auto" deletes at the PUBACK where no ingester has
    announced itself): the broker PUBACKs messages nobody subscribed to (it drops them); the rows
    stay, are resent after the confirmation timeout, and arrive once the ingester is there."""
    tel = make_device(broker.url, delivery={"confirm": "ingester"})
    for i in range(100):
        tel.write(frame(i))
    wait_for(lambda: tel.publisher.stats.broker_acked >= 1, 20, "a PUBACK")
    st = tel.outbox.stats()  # acknowledged by the broker, not confirmed by the cloud: all still here
    assert st.rows == st.appended_total and st.confirmed_total == 0
    ing = make_ingester(broker.url)
    wait_cloud_count(ing.engine, "dev1", 100)
    wait_for(lambda: tel.outbox.stats().rows == 0, 30, "confirmations to empty the outbox")
    assert sorted(cloud_frames(ing.engine, "dev1")) == list(range(100))
    assert tel.publisher.stats.resent >= 1


def test_full_outbox_drops_the_right_rows_and_the_count_reaches_the_cloud(
        tmp_path: Path, make_device, make_ingester) -> None:
    port = free_port()  # nothing listens yet: the device is offline
    tel = make_device(f"mqtt://127.0.0.1:{port}", outbox_limits={"max_rows": 50}, batch={"max_records": 20})
    for i in range(10):
        tel.emit({"ts": "2026-01-01T00:00:00Z", "m": i}, "metrics")
    for i in range(60):
        tel.write(frame(i))
    for i in range(5):
        tel.event("door_opened", n=i)
    assert tel.commit(10)
    tel.report_metrics()
    wait_for(lambda: tel.outbox.stats().pending["metrics"] == 1 and tel.outbox.stats().rows == 50
             and sum(tel.outbox.stats().dropped.get("metrics", {}).values()) == 10, 20, "the offline report")
    before = tel.outbox.stats()
    left = [r.record["frame"] for r in tel.outbox.peek(100, "telemetry")]
    # 75 rows into 50: metrics first (all 10, the last one when the report replaced it), then the
    # oldest telemetry; events untouched
    assert left == list(range(16, 60))
    assert before.pending["events"] == 5
    assert before.dropped == {"metrics": {"capacity": 10}, "telemetry": {"capacity": 16}}

    with Mosquitto(tmp_path / "broker", port=port) as broker:
        ing = make_ingester(broker.url)
        wait_for(lambda: tel.outbox.stats().rows == 0, 60, "the outbox to drain")
        after = tel.outbox.stats()
        assert sorted(cloud_frames(ing.engine, "dev1")) == left
        with ing.engine.connect() as c:
            assert c.execute(select(func.count()).select_from(telemetry_events)).scalar_one() == 5
            last = c.execute(select(telemetry_metrics.c.dropped_total, telemetry_metrics.c.record)
                             .order_by(telemetry_metrics.c.seq.desc()).limit(1)).one()
        # the report sent on reconnect counts every drop, its own included
        assert last.dropped_total == after.dropped_total == 27
        assert last.record["dropped"]["detail"] == after.dropped
        assert last.record["dropped"]["by_kind"] == {"metrics": 11, "telemetry": 16}


def test_outbox_survives_a_restart_of_the_device_with_unsent_messages(
        tmp_path: Path, broker: Mosquitto, make_device, make_ingester) -> None:
    ob_path = tmp_path / "dev1.outbox.db"
    port = free_port()
    tel = make_device(f"mqtt://127.0.0.1:{port}", outbox=ob_path)
    for i in range(300):
        tel.write(frame(i))
    tel.close(drain_s=0)
    with Outbox(ob_path, readonly=True) as ob:
        assert ob.stats().rows == 300
    ing = make_ingester(broker.url)
    tel2 = make_device(broker.url, outbox=ob_path)
    assert tel2.flush(60)
    assert sorted(cloud_frames(ing.engine, "dev1")) == list(range(300))


def test_the_retained_status_shows_the_running_model(tmp_path: Path, broker: Mosquitto, make_device) -> None:
    """The agent calls set_status(model=...) after each switch: the retained status follows it,
    validates as a StatusMessage (what the ingester parses), and a late subscriber sees the newest."""
    from edge_device.telemetry import StatusMessage

    listener = Listener(broker.port, "edge/+/status")
    tel = make_device(broker.url)
    try:
        wait_for(lambda: listener.messages, 30, "the first status")
        tel.set_status(model={"name": "mobilenet_v2", "version": 1})
        wait_for(lambda: any(m.get("model") for m in listener.payloads(f"edge/{tel.config.device_id}/status")),
                 30, "a status with the model")
        tel.set_status(model={"name": "mobilenet_v2", "version": 2})
        wait_for(lambda: listener.payloads(f"edge/{tel.config.device_id}/status")[-1].get("model", {})
                 .get("version") == 2, 30, "the status after the switch")
    finally:
        listener.close()
    late = Listener(broker.port, f"edge/{tel.config.device_id}/status")
    wait_for(lambda: late.messages, 10, "the retained status")
    _topic, payload, retained = late.messages[0]
    msg = StatusMessage.model_validate_json(payload)
    assert retained and msg.state == "online" and msg.model is not None and msg.model.version == 2
    late.close()
