"""Detection records into ``telemetry_detections``: one row per object, written with its record in
one transaction, exactly once, on SQLite and PostgreSQL, against a real Mosquitto."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import delete, func, select

from cloud_sync.db import telemetry_detections, telemetry_records, telemetry_rejects
from cloud_sync.ingest import Ingester
from cloud_sync.ingest._parse import detection_rows, telemetry_row
from tests.support.mqtt import RawClient
from tests.support.net import wait_for
from tests.support.servers import Mosquitto
from tests.support.telemetry import frame, message

KITE = {"label": "kite", "score": 0.89, "box": [10.5, 20.0, 110.25, 90.0]}
PERSON = {"label": "person", "score": 0.86, "box": [200.0, 150.0, 260.0, 400.0]}
PERSON2 = {"label": "person", "score": 0.71, "box": [300.0, 160.0, 340.0, 380.0]}


def detector_frame(i: int, dets: list[Any], **extra: Any) -> dict[str, Any]:
    rec = frame(i, detections=dets, model={"name": "yolov8n", "version": 2}, ts=f"2026-01-01T00:00:0{i}Z", **extra)
    del rec["top_k"]
    return rec


def objects(ingester: Ingester, device_id: str) -> list[tuple[Any, ...]]:
    t = telemetry_detections
    with ingester.engine.connect() as c:
        return [tuple(r) for r in c.execute(
            select(t.c.seq, t.c.idx, t.c.obj, t.c.label, t.c.score, t.c.x1, t.c.y1, t.c.x2, t.c.y2,
                   t.c.model_name, t.c.model_version, t.c.ts)
            .where(t.c.device_id == device_id).order_by(t.c.seq, t.c.idx, t.c.obj)).all()]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("postgres")() if request.param == "postgresql" else None


def test_one_row_per_object_exactly_once(broker: Mosquitto, make_ingester: Callable[..., Ingester],
                                         db_url: str | None) -> None:
    ing = make_ingester(broker.url, db_url)
    dev = RawClient(broker.port, "cam-1")
    t = "edge/cam-1/telemetry"
    first = message("cam-1", 1, [detector_frame(0, [KITE, PERSON]), detector_frame(1, []),
                                 detector_frame(2, [PERSON2])])
    dev.publish(t, first)
    dev.publish(t, first)  # a resend after a lost confirmation
    # a classifier's record and a record whose detections are partly unusable
    dev.publish(t, message("cam-1", 2, [frame(3), detector_frame(4, [
        "junk", {"score": 0.5, "box": [0, 0, 1, 1]}, {"label": "kite", "score": "high", "box": [1, 2, 3]},
        {"label": "dog", "score": 0.6, "box": [1, 2, 3, 4]}])]))
    dev.publish(t, first)  # and again, in a later batch
    wait_for(lambda: ing.stats.messages + ing.stats.duplicates >= 4, 30, "every message handled")
    assert ing.stats.messages == 2 and ing.stats.duplicates == 2
    rows = objects(ing, "cam-1")
    assert [r[:11] for r in rows] == [
        (1, 0, 0, "kite", 0.89, 10.5, 20.0, 110.25, 90.0, "yolov8n", 2),
        (1, 0, 1, "person", 0.86, 200.0, 150.0, 260.0, 400.0, "yolov8n", 2),
        (1, 2, 0, "person", 0.71, 300.0, 160.0, 340.0, 380.0, "yolov8n", 2),
        # obj is the position in the record's list: the skipped entries leave gaps
        (2, 1, 2, "kite", None, None, None, None, None, "yolov8n", 2),
        (2, 1, 3, "dog", 0.6, 1.0, 2.0, 3.0, 4.0, "yolov8n", 2),
    ]
    # the frame's time, as the record has it
    assert [r[11].replace(tzinfo=None).second for r in rows[:3]] == [0, 0, 2]
    with ing.engine.connect() as c:
        # every object belongs to a stored record; a detector's record carries its best object
        r, d = telemetry_records.c, telemetry_detections.c
        joined = telemetry_detections.outerjoin(
            telemetry_records, (r.device_id == d.device_id) & (r.seq == d.seq) & (r.idx == d.idx))
        orphans = c.execute(select(func.count()).select_from(joined).where(r.id.is_(None))).scalar_one()
        assert orphans == 0
        tops = c.execute(select(telemetry_records.c.top_label, telemetry_records.c.top_score)
                         .order_by(telemetry_records.c.seq, telemetry_records.c.idx)).all()
        assert [tuple(x) for x in tops] == [("kite", 0.89), (None, None), ("person", 0.71), ("tomato", 0.9),
                                            (None, None)]
        if ing.engine.dialect.name == "postgresql":
            # the foreign key holds: an object goes with its record
            c.execute(delete(telemetry_records).where(telemetry_records.c.seq == 1))
            assert c.execute(select(func.count()).select_from(telemetry_detections)).scalar_one() == 2
            c.rollback()
    dev.close()


def test_a_refused_object_takes_its_record_with_it(broker: Mosquitto, make_ingester: Callable[..., Ingester],
                                                   postgres: Callable[[], str]) -> None:
    # PostgreSQL refuses NUL in text: the object's insert fails, so the message's record must not
    # be stored without it (one transaction); the message becomes a reject, the next one is fine.
    ing = make_ingester(broker.url, postgres())
    dev = RawClient(broker.port, "cam-2")
    dev.publish("edge/cam-2/telemetry", message("cam-2", 1, [detector_frame(0, [{**KITE, "label": "ki\x00te"}])]))
    dev.publish("edge/cam-2/telemetry", message("cam-2", 2, [detector_frame(1, [PERSON])]))
    wait_for(lambda: ing.stats.messages + sum(ing.stats.rejected.values()) >= 2, 30, "both messages handled")
    assert ing.stats.rejected["database"] == 1
    assert [r[:4] for r in objects(ing, "cam-2")] == [(2, 0, 0, "person")]
    with ing.engine.connect() as c:
        seqs = c.execute(select(telemetry_records.c.seq).where(telemetry_records.c.device_id == "cam-2"))
        assert seqs.scalars().all() == [2]
        assert c.execute(select(func.count()).select_from(telemetry_rejects)
                         .where(telemetry_rejects.c.device_id == "cam-2")).scalar_one() == 1
    dev.close()


def test_detection_rows_are_pure_and_bounded() -> None:
    assert detection_rows({"top_k": [{"label": "a", "score": 1.0}]}) == []
    assert detection_rows({"detections": "many"}) == []
    many = [{"label": "x", "score": 0.5, "box": [0, 0, 1, 1]}] * 5000
    rows = detection_rows({"detections": many})
    assert len(rows) == 1000 and rows[-1][0] == 999
    assert detection_rows({"detections": [{"label": 7, "score": True, "box": [0, "1", float("nan"), 2]}]}) == [
        (0, "7", None, 0.0, None, None, 2.0)]
    assert telemetry_row({"detections": [PERSON]})["top_label"] == "person"
