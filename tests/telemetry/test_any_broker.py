"""Telemetry with default settings works with any consumer of the broker, and with the cloud ingester.

A device with ``confirm="auto"`` (the default) deletes rows at the broker's PUBACK unless an
ingester announced itself on ``edge/D/cmd/ingest`` (retained); then it waits for the ingester's
commit confirmations, also while that ingester is down, until ``retire`` clears the announcement.
Real Mosquitto on a free port, the real ingester on SQLite, plain paho subscribers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from sqlalchemy import func, select

from cloud_sync.db import telemetry_messages, telemetry_records
from cloud_sync.ingest import BrokerSpec, IngestConfig, retire, write_broker_config
from edge_device.telemetry import DeliveryConfig, MqttConfig, Outbox, Telemetry
from tests.support.net import wait_for
from tests.support.servers import Mosquitto
from tests.support.telemetry import frame

#: How long the ingester stays down while the device keeps publishing. Seconds here; the design
#: does not depend on it (the device keeps every row until the ingester confirms it), so a soak run
#: can set EDGE_TEST_INGEST_DOWN_S=600.
INGEST_DOWN_S = float(os.environ.get("EDGE_TEST_INGEST_DOWN_S", "4"))
ROOT = Path(__file__).resolve().parents[2]


class Plain:
    """A plain paho subscriber, the way Home Assistant, Node-RED or Telegraf would listen."""

    def __init__(self, port: int, topic: str, *, username: str | None = None, password: str | None = None) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"plain-{time.monotonic_ns()}")
        if username:
            self.client.username_pw_set(username, password)
        subscribed = threading.Event()

        def on_message(c: Any, u: Any, m: mqtt.MQTTMessage) -> None:
            with self._lock:
                self.messages.append((m.topic, bytes(m.payload), bool(m.retain)))

        self.client.on_message = on_message
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10), f"no SUBACK for {topic}"

    def envelopes(self, topic: str) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(p) for t, p, _ in self.messages if t == topic and p]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained(port: int, topic: str, **credentials: str) -> bytes | None:
    """The retained message on ``topic`` now (None when there is none), as a late subscriber sees it."""
    sub = Plain(port, topic, **credentials)
    try:
        # the retained message follows the first SUBACK; a second subscription's SUBACK comes after it
        done = threading.Event()
        sub.client.on_subscribe = lambda *a: done.set()
        sub.client.subscribe(topic, qos=1)
        assert done.wait(10)
        with sub._lock:
            found = [p for t, p, r in sub.messages if t == topic and r]
        return found[-1] if found else None
    finally:
        sub.close()


def is_retirement(payload: bytes | None) -> bool:
    return payload is not None and json.loads(payload).get("retired") is True


def db_frames(engine: Any, device_id: str) -> list[int]:
    with engine.connect() as c:
        return [r[0] for r in c.execute(select(telemetry_records.c.frame)
                                        .where(telemetry_records.c.device_id == device_id))]


def db_count(engine: Any, device_id: str) -> int:
    with engine.connect() as c:
        return int(c.execute(select(func.count()).select_from(telemetry_records)
                             .where(telemetry_records.c.device_id == device_id)).scalar_one())


def drained(tel: Telemetry) -> Callable[[], bool]:
    """Every record written so far is in the outbox (commit) and has left it again."""
    return lambda: tel.commit(0) and tel.outbox.stats().rows == 0 and tel.publisher.stats.unconfirmed == 0


def test_the_default_is_auto_and_the_old_name_still_loads() -> None:
    assert DeliveryConfig().confirm == "auto"
    assert DeliveryConfig(confirm="cloud").confirm == "ingester"  # type: ignore[arg-type]
    assert DeliveryConfig(confirm="broker").confirm == "broker"


def test_a_plain_broker_and_any_subscriber_get_every_record_once(broker: Mosquitto, make_device) -> None:
    """No ingester: default settings, 200 one-record messages (far more than the window of 32, with a
    confirmation timeout of 1 s): every seq reaches a plain subscriber exactly once and the outbox
    empties."""
    sub = Plain(broker.port, "edge/greenhouse-1/telemetry")
    tel = make_device(broker.url, "greenhouse-1", batch={"max_records": 1})
    assert tel.config.delivery.confirm == "auto"
    for i in range(200):
        tel.write(frame(i))
    assert tel.flush(60), f"the outbox did not drain: {tel.stats()}"
    wait_for(lambda: len(sub.envelopes("edge/greenhouse-1/telemetry")) >= 200, 20, "200 messages at the subscriber")
    envs = sub.envelopes("edge/greenhouse-1/telemetry")
    seqs = [e["seq"] for e in envs]
    assert len(seqs) == len(set(seqs)) == 200, "a message arrived twice"
    assert sorted(r["frame"] for e in envs for r in e["records"]) == list(range(200))
    st = tel.outbox.stats()
    assert st.rows == 0 and st.confirmed_total == st.appended_total
    assert tel.publisher.stats.delivery_mode == "broker" and tel.publisher.stats.resent == 0
    assert retained(broker.port, "edge/greenhouse-1/cmd/ingest") is None
    sub.close()


def test_a_short_run_against_a_plain_broker_leaves_nothing_to_send_twice(
        tmp_path: Path, broker: Mosquitto, make_device) -> None:
    """What `edge run --mqtt` does on a few images: write, then close with its default drain (2 s,
    shorter than the wait for an ingester's announcement). The close waits for the answer instead
    of leaving acknowledged rows behind for the next run to send again."""
    sub = Plain(broker.port, "edge/cam-9/telemetry")
    tel = make_device(broker.url, "cam-9", outbox=tmp_path / "cam-9.db")
    # connected first, as after `edge run` loaded its model (a close during the connect gives up on it)
    wait_for(lambda: tel.publisher.stats.connected, 10, "the connection")
    for i in range(12):
        tel.write(frame(i))
    tel.close(drain_s=2.0)
    with Outbox(tmp_path / "cam-9.db", readonly=True) as ob:
        assert ob.stats().rows == 0
    wait_for(lambda: sum(len(e["records"]) for e in sub.envelopes("edge/cam-9/telemetry")) >= 12, 10,
             "12 records at the subscriber")
    assert sorted(r["frame"] for e in sub.envelopes("edge/cam-9/telemetry") for r in e["records"]) == list(range(12))
    sub.close()


def test_with_the_ingester_records_reach_the_database_exactly_once(
        broker: Mosquitto, make_ingester, make_device) -> None:
    ing = make_ingester(broker.url)
    tel = make_device(broker.url, "greenhouse-2", batch={"max_records": 5})
    for i in range(200):
        tel.write(frame(i))
    assert tel.commit(10)
    wait_for(lambda: tel.publisher.stats.delivery_mode == "ingester", 20, "the ingester's announcement")
    assert tel.publisher.stats.ingester == "edge-ingest"
    wait_for(drained(tel), 60, "the outbox to drain")
    assert sorted(db_frames(ing.engine, "greenhouse-2")) == list(range(200))
    with ing.engine.connect() as c:
        seqs = [r[0] for r in c.execute(select(telemetry_messages.c.seq)
                                        .where(telemetry_messages.c.device_id == "greenhouse-2"))]
    assert len(seqs) == len(set(seqs))
    announced = retained(broker.port, "edge/greenhouse-2/cmd/ingest")
    assert announced is not None and json.loads(announced)["ingester"] == "edge-ingest"


def test_an_ingester_that_is_down_for_a_while_loses_nothing(
        broker: Mosquitto, make_ingester, make_device) -> None:
    """The ingester stops while the device keeps publishing: its announcement stays, so the device
    keeps every row (none is deleted at the PUBACK) and resends; once the ingester is back, every
    record is in the database exactly once and the outbox drains."""
    ing = make_ingester(broker.url)
    tel = make_device(broker.url, "greenhouse-3", batch={"max_records": 10},
                      delivery={"window": 4, "confirm_timeout_s": 0.5, "confirm_timeout_max_s": 2.0})
    for i in range(50):
        tel.write(frame(i))
    wait_for(lambda: db_count(ing.engine, "greenhouse-3") >= 50, 60, "the first 50 records in the database")
    wait_for(drained(tel), 30, "the first records to be confirmed")
    assert tel.publisher.stats.delivery_mode == "ingester"
    ing.stop()

    confirmed_before = tel.outbox.stats().confirmed_total
    published_before = tel.publisher.stats.published
    deadline = time.monotonic() + INGEST_DOWN_S
    n = 50
    while time.monotonic() < deadline or n < 350:  # the device keeps producing the whole time
        tel.write(frame(n))
        n += 1
        if n % 50 == 0:
            time.sleep(0.1)
    assert tel.commit(10)
    # the device went on publishing (its window, then resends), but nothing left the outbox
    wait_for(lambda: tel.publisher.stats.published >= published_before + 4, 20, "publishing during the outage")
    st = tel.outbox.stats()
    assert st.confirmed_total == confirmed_before and st.rows == st.appended_total - confirmed_before
    assert tel.publisher.stats.delivery_mode == "ingester"

    ing2 = make_ingester(broker.url)  # same client id and database: the broker kept its session
    wait_for(drained(tel), 120, "the outbox to drain after the ingester came back")
    frames = db_frames(ing2.engine, "greenhouse-3")
    assert sorted(frames) == list(range(n)), f"{len(frames)} records in the database, {n} written"


def test_retiring_the_ingester_sends_devices_back_to_the_broker_acknowledgement(
        broker: Mosquitto, make_ingester, make_device) -> None:
    ing = make_ingester(broker.url)
    tel = make_device(broker.url, "greenhouse-4", batch={"max_records": 10}, delivery={"window": 4})
    for i in range(20):
        tel.write(frame(i))
    wait_for(drained(tel), 60, "confirmations")
    ing.stop()
    for i in range(20, 100):
        tel.write(frame(i))
    assert tel.commit(10)
    wait_for(lambda: tel.publisher.stats.broker_acked >= 4, 20, "PUBACKs while the ingester is away")
    assert tel.outbox.stats().rows > 0  # kept for the ingester

    cleared = retire(IngestConfig(mqtt=MqttConfig(url=broker.url)))
    assert cleared == ["greenhouse-4"]
    wait_for(lambda: tel.publisher.stats.delivery_mode == "broker", 20, "the device to see the retirement")
    wait_for(drained(tel), 60, "the outbox to drain at the broker's PUBACKs")
    assert is_retirement(retained(broker.port, "edge/greenhouse-4/cmd/ingest"))
    assert retire(IngestConfig(mqtt=MqttConfig(url=broker.url))) == []  # nothing left to retire


def test_explicit_overrides_ignore_the_announcement(broker: Mosquitto, make_ingester, make_device) -> None:
    """confirm="broker" deletes at the PUBACK even with an ingester; confirm="ingester" waits with none."""
    ing = make_ingester(broker.url)
    by_broker = make_device(broker.url, "greenhouse-5", delivery={"confirm": "broker"})
    for i in range(30):
        by_broker.write(frame(i))
    assert by_broker.flush(30)
    wait_for(lambda: db_count(ing.engine, "greenhouse-5") >= 30, 30, "the records in the database")
    assert by_broker.publisher.stats.delivery_mode == "broker"
    ing.stop()
    retire(IngestConfig(mqtt=MqttConfig(url=broker.url)))

    by_ingester = make_device(broker.url, "greenhouse-6", delivery={"confirm": "ingester"})
    for i in range(30):
        by_ingester.write(frame(i))
    assert by_ingester.commit(10)
    wait_for(lambda: by_ingester.publisher.stats.resent >= 1, 30, "a resend for want of a confirmation")
    st = by_ingester.outbox.stats()  # the 30 records and the report made on connecting: all kept
    assert st.rows == st.appended_total == 31 and st.confirmed_total == 0
    assert by_ingester.publisher.stats.delivery_mode == "ingester"


def test_the_generated_acl_lets_the_ingester_announce_and_retire(tmp_path: Path, make_ingester, make_device) -> None:
    """Against `edge cloud broker-config`'s ACL: the ingester may write and read back edge/D/cmd/ingest,
    the device (id with a dot) may read it, and a device may not announce an ingester itself."""
    from tests.support.net import free_port

    port = free_port()
    spec = BrokerSpec.model_validate({"devices": [{"id": "greenhouse.1", "password": "dev-pw"}],
                                      "ingester": {"username": "ingest", "password": "ing-pw"}})
    files = write_broker_config(spec, tmp_path / "broker", port=port, bind="127.0.0.1",
                                run_as="root" if os.geteuid() == 0 else None)
    with Mosquitto(tmp_path / "broker", port=port, conf_file=files.conf) as broker:
        ing_mqtt = MqttConfig(url=broker.url, username="ingest", password="ing-pw",  # type: ignore[arg-type]
                              reconnect_min_s=0.2, reconnect_max_s=1.0)
        ing = make_ingester(broker.url, mqtt=ing_mqtt)
        tel = make_device(broker.url, "greenhouse.1", username="greenhouse.1", password="dev-pw")
        for i in range(40):
            tel.write(frame(i))
        wait_for(lambda: tel.publisher.stats.delivery_mode == "ingester", 30, "the announcement under the ACL")
        wait_for(drained(tel), 60, "the outbox to drain")
        assert sorted(db_frames(ing.engine, "greenhouse.1")) == list(range(40))

        # The device itself cannot fake or clear an announcement. The broker binds client ids to user
        # names, so a second client with the device's credentials takes over the device's session:
        # the device is closed first so the two do not kick each other off while the rogue publishes.
        tel.close(drain_s=0)
        connected = threading.Event()
        rogue = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="rogue")
        rogue.username_pw_set("greenhouse.1", "dev-pw")
        rogue.on_connect = lambda c, u, f, rc, p: connected.set() if not rc.is_failure else None
        rogue.connect("127.0.0.1", port)
        rogue.loop_start()
        try:
            assert connected.wait(10), "the rogue never got its CONNACK"
            rogue.publish("edge/greenhouse.1/cmd/ingest", b"", qos=1, retain=True).wait_for_publish(10)
        finally:
            rogue.disconnect()
            rogue.loop_stop()
        announced = retained(port, "edge/greenhouse.1/cmd/ingest", username="ingest", password="ing-pw")
        assert announced is not None and json.loads(announced)["ingester"] == "edge-ingest"

        tel = make_device(broker.url, "greenhouse.1", username="greenhouse.1", password="dev-pw")
        wait_for(lambda: tel.publisher.stats.delivery_mode == "ingester", 30, "the device back on its ingester")
        ing.stop()
        assert retire(IngestConfig(mqtt=ing_mqtt)) == ["greenhouse.1"]
        wait_for(lambda: tel.publisher.stats.delivery_mode == "broker", 20, "the device to see the retirement")


def test_cli_announces_the_fleet_at_start_and_retire_clears_it(tmp_path: Path, broker: Mosquitto) -> None:
    """`edge cloud ingest --devices fleet.toml` announces itself to every listed device before any of
    them spoke; after it stops the announcements stay; `--retire` clears them."""
    (tmp_path / "fleet.toml").write_text('[[devices]]\nid = "cam-1"\n\n[[devices]]\nid = "cam.2"\n')
    base = [sys.executable, "-m", "edge_cli", "cloud", "ingest", "--mqtt", broker.url,
            "--db", f"sqlite:///{tmp_path / 'cloud.db'}", "--stats-interval", "0"]
    proc = subprocess.Popen([*base, "--devices", str(tmp_path / "fleet.toml")], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: all(retained(broker.port, f"edge/{d}/cmd/ingest") for d in ("cam-1", "cam.2"))
                 or proc.poll() is not None, 30, "the announcements")
        assert proc.poll() is None, proc.communicate()[1]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert retained(broker.port, "edge/cam.2/cmd/ingest") is not None  # stopping is not retiring
    r = subprocess.run([*base, "--retire"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "retired the announcement of 2 device(s): cam-1, cam.2" in r.stderr
    assert is_retirement(retained(broker.port, "edge/cam-1/cmd/ingest"))
    assert is_retirement(retained(broker.port, "edge/cam.2/cmd/ingest"))


def test_a_broker_that_lost_its_state_does_not_turn_the_device_against_its_ingester(
        tmp_path: Path, broker: Mosquitto, make_ingester, make_device) -> None:
    """The broker is killed before it ever saved its state: the retained announcement and the
    ingester's session are gone. The device remembers its ingester (with its outbox), keeps every
    row while nobody subscribes, and resends; the restarted ingester gets everything exactly once.
    After a retirement it read while it was offline, the device forgets the ingester."""
    outbox = tmp_path / "greenhouse-7.db"
    ing = make_ingester(broker.url)
    tel = make_device(broker.url, "greenhouse-7", outbox=outbox, batch={"max_records": 10},
                      delivery={"window": 4, "confirm_timeout_s": 0.5, "confirm_timeout_max_s": 2.0})
    for i in range(30):
        tel.write(frame(i))
    wait_for(drained(tel), 60, "the first records to be confirmed")
    assert tel.publisher.stats.delivery_mode == "ingester"
    ing.stop()
    broker.kill()  # SIGKILL: Mosquitto saves its state only on a clean shutdown (and every autosave)
    for i in range(30, 130):
        tel.write(frame(i))
    broker.start()
    assert retained(broker.port, "edge/greenhouse-7/cmd/ingest") is None  # the broker forgot everything
    wait_for(lambda: tel.publisher.stats.connected and tel.publisher.stats.broker_acked >= 8, 30,
             "PUBACKs from the restarted broker")
    st = tel.outbox.stats()
    assert st.rows >= 100 and tel.publisher.stats.delivery_mode == "ingester"  # kept: nobody reads them

    ing2 = make_ingester(broker.url)  # a fresh session: it gets the resent messages
    wait_for(drained(tel), 120, "the outbox to drain")
    assert sorted(db_frames(ing2.engine, "greenhouse-7")) == list(range(130))
    tel.close(drain_s=0)
    ing2.stop()

    assert retire(IngestConfig(mqtt=MqttConfig(url=broker.url))) == ["greenhouse-7"]
    again = make_device(broker.url, "greenhouse-7", outbox=outbox)
    wait_for(lambda: again.publisher.stats.delivery_mode == "broker", 20, "the device to read the retirement")
    for i in range(130, 140):
        again.write(frame(i))
    assert again.flush(30)
    assert again.outbox.setting("ingester") is None
