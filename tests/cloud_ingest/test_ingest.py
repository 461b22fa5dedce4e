"""The ingester against a real Mosquitto: bad payloads, duplicates, confirmations, sessions."""

from __future__ import annotations

import json

from sqlalchemy import func, select

from cloud_sync.db import telemetry_devices, telemetry_messages, telemetry_records, telemetry_rejects
from tests.support.mqtt import RawClient
from tests.support.net import wait_for
from tests.support.servers import Mosquitto
from tests.support.telemetry import cloud_frames, frame, message, wait_cloud_count


def test_bad_payloads_are_kept_counted_and_never_block_the_good_ones(broker: Mosquitto, make_ingester) -> None:
    ing = make_ingester(broker.url, max_payload_bytes=4096)
    dev = RawClient(broker.port, "dev1")
    acks = RawClient(broker.port, "watcher")
    acks.subscribe("edge/dev1/cmd/ack")
    t = "edge/dev1/telemetry"
    first = message("dev1", 1, [frame(0), frame(1)])
    bad = [
        (t, b"{\"schema\": 1, \"device_id\": ", "malformed"),
        (t, b"\x00\xff\xfe binary", "malformed"),
        (t, b"[]", "malformed"),
        (t, message("dev1", 2, [frame(2)], schema=2), "schema"),
        (t, message("dev1", 3, [1, 2]), "schema"),
        (t, message("dev2", 4, [frame(4)]), "mismatch"),  # a device speaking for another
        ("edge/dev1/events", message("dev1", 5, [frame(5)]), "mismatch"),
        (t, message("dev1", 6, [frame(6, pad="x" * 5000)]), "oversized"),
    ]
    dev.publish(t, first)
    for topic, payload, _ in bad:
        dev.publish(topic, payload)
    dev.publish(t, message("dev1", 7, [frame(7)]))
    dev.publish(t, first)  # a resend after a lost confirmation: dropped as a duplicate
    wait_for(lambda: ing.stats.messages + ing.stats.duplicates + sum(ing.stats.rejected.values()) >= 11, 30,
             "every message to be handled")
    assert sorted(cloud_frames(ing.engine, "dev1")) == [0, 1, 7]
    assert ing.stats.duplicates == 1
    assert dict(ing.stats.rejected) == {"malformed": 3, "schema": 2, "mismatch": 2, "oversized": 1}
    with ing.engine.connect() as c:
        rejects = c.execute(select(telemetry_rejects.c.reason, telemetry_rejects.c.size,
                                   telemetry_rejects.c.truncated, telemetry_rejects.c.payload)).all()
    assert len(rejects) == 8
    reasons = " | ".join(r.reason for r in rejects)
    for text in ("not valid JSON", "not a JSON object", "unsupported schema 2", "records.0",
                 "device_id 'dev2'", "kind 'telemetry'", "over the 4096-byte limit"):
        assert text in reasons
    whole = [r for r in rejects if not r.truncated]
    assert {bytes(r.payload) for r in whole} >= {b"[]", b"\x00\xff\xfe binary"}  # kept as sent
    # Confirmed: the good ones, the duplicate, and the rejects that name their own device and seq
    # (stored whole); not the oversized one (kept only in part: its device keeps it).
    wait_for(lambda: {s for _, p in acks.received for s in json.loads(p)["seqs"]} >= {1, 2, 3, 7}, 20,
             "confirmations")
    confirmed = {s for _, p in acks.received for s in json.loads(p)["seqs"]}
    assert 6 not in confirmed and 4 not in confirmed
    dev.close()
    acks.close()


def test_status_and_device_rows(broker: Mosquitto, make_ingester, make_device) -> None:
    ing = make_ingester(broker.url)
    tel = make_device(broker.url, "pi-3")
    tel.write(frame(1))
    assert tel.flush(30)
    tel.close(drain_s=1)
    wait_for(lambda: ing.stats.statuses >= 2, 20, "online and offline statuses")
    with ing.engine.connect() as c:
        row = c.execute(select(telemetry_devices).where(telemetry_devices.c.device_id == "pi-3")).one()
    assert row.status == "offline" and row.last_seq is not None and row.runtime


def test_the_persistent_session_keeps_what_arrives_while_the_ingester_is_down(
        tmp_path, broker: Mosquitto, make_ingester) -> None:
    db = f"sqlite:///{tmp_path / 'cloud.db'}"
    ing = make_ingester(broker.url, db)
    ing.stop()  # disconnects; the broker keeps the session and queues for it
    dev = RawClient(broker.port, "dev1")
    for seq in range(1, 51):
        dev.publish("edge/dev1/telemetry", message("dev1", seq, [frame(seq)]))
    ing2 = make_ingester(broker.url, db)
    wait_cloud_count(ing2.engine, "dev1", 50)
    assert sorted(cloud_frames(ing2.engine, "dev1")) == list(range(1, 51))
    with ing2.engine.connect() as c:
        assert c.execute(select(func.count()).select_from(telemetry_messages)).scalar_one() == 50
    dev.close()


def test_two_ingesters_sharing_the_load_still_write_each_message_once(
        tmp_path, broker: Mosquitto, make_ingester) -> None:
    db = f"sqlite:///{tmp_path / 'cloud.db'}"
    a = make_ingester(broker.url, db, client_id="ingest-a", share_group="g")
    b = make_ingester(broker.url, db, client_id="ingest-b", share_group="g")
    dev = RawClient(broker.port, "dev1")
    for seq in range(1, 201):
        dev.publish("edge/dev1/telemetry", message("dev1", seq, [frame(seq)]))
        if seq % 50 == 0:  # and resends of earlier ones, which may land on the other ingester
            dev.publish("edge/dev1/telemetry", message("dev1", seq - 10, [frame(seq - 10)]))
    wait_for(lambda: a.stats.messages + b.stats.messages + a.stats.duplicates + b.stats.duplicates >= 204, 30,
             "every message")
    assert a.stats.messages > 0 and b.stats.messages > 0
    with a.engine.connect() as c:
        n = c.execute(select(func.count()).select_from(telemetry_records)).scalar_one()
    assert n == 200 and sorted(cloud_frames(a.engine, "dev1")) == list(range(1, 201))
    dev.close()
