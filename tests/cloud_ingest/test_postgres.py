"""The ingester on a real PostgreSQL (a throwaway cluster started by the test)."""

from __future__ import annotations

import json

from sqlalchemy import func, select, text

from cloud_sync.db import make_engine, telemetry_metrics, telemetry_records, telemetry_rejects
from tests.support.mqtt import RawClient
from tests.support.net import wait_for
from tests.support.servers import Mosquitto
from tests.support.telemetry import cloud_frames, frame, message, wait_cloud_count


def fresh_database(pg, name: str) -> str:
    admin = make_engine(pg.url, create_tables=False).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        c.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return pg.url.rsplit("/", 1)[0] + f"/{name}"


def test_devices_through_a_broker_restart_into_postgresql(tmp_path, postgres, broker: Mosquitto,
                                                          make_ingester, make_device) -> None:
    db = fresh_database(postgres, "e2e")
    ing = make_ingester(broker.url, db)
    assert ing.engine.dialect.name == "postgresql"
    tel = make_device(broker.url, "pg-dev")
    for i in range(1000):
        tel.write(frame(i))
    assert tel.commit(30)
    broker.stop()
    for i in range(1000, 2000):
        tel.write(frame(i))
    tel.report_metrics()
    broker.start()
    wait_cloud_count(ing.engine, "pg-dev", 2000, timeout=120)
    assert tel.flush(60)
    frames = cloud_frames(ing.engine, "pg-dev")
    assert len(frames) == 2000 and sorted(frames) == list(range(2000))
    with ing.engine.connect() as c:
        rec = c.execute(select(telemetry_records.c.record, telemetry_records.c.top_label)
                        .where(telemetry_records.c.frame == 5)).one()
        assert rec.top_label == "tomato" and rec.record["model"] == {"name": "plants", "version": 3}
        assert c.execute(select(func.count()).select_from(telemetry_metrics)).scalar_one() >= 1


def test_a_message_postgresql_refuses_is_isolated_and_the_rest_goes_in(postgres, broker: Mosquitto,
                                                                      make_ingester) -> None:
    """jsonb cannot hold \\u0000: the database refuses that one message; it becomes a reject (kept
    as bytes), and the messages around it, in the same batch or not, are written."""
    db = fresh_database(postgres, "poison")
    ing = make_ingester(broker.url, db)
    dev = RawClient(broker.port, "dev1")
    watcher = RawClient(broker.port, "watcher")
    watcher.subscribe("edge/dev1/cmd/ack")
    t = "edge/dev1/telemetry"
    dev.publish(t, message("dev1", 1, [frame(1)]))
    poison = message("dev1", 2, [frame(2, source="cam\u00000")])
    assert b"\\u0000" in poison
    dev.publish(t, poison)
    dev.publish(t, message("dev1", 3, [frame(3)]))
    wait_for(lambda: ing.stats.messages + sum(ing.stats.rejected.values()) >= 3, 30, "three messages handled")
    assert sorted(cloud_frames(ing.engine, "dev1")) == [1, 3]
    assert dict(ing.stats.rejected) == {"database": 1}
    with ing.engine.connect() as c:
        r = c.execute(select(telemetry_rejects.c.reason, telemetry_rejects.c.payload,
                             telemetry_rejects.c.seq)).one()
    assert "database refused it" in r.reason and bytes(r.payload) == poison and r.seq == 2
    wait_for(lambda: {s for _, p in watcher.received for s in json.loads(p)["seqs"]} >= {1, 2, 3}, 20,
             "all three confirmed")
    dev.close()
    watcher.close()
