"""An announcement the ingester makes while its broker is away is deferred, never a crash of the writer
thread (paho refuses a publish while disconnected, and its is_published() then raises)."""

from __future__ import annotations

from tests.support.mqtt import RawClient
from tests.support.net import wait_for
from tests.support.servers import Mosquitto
from tests.support.telemetry import cloud_frames, frame, message


def test_announcing_while_the_broker_is_down_is_retried_and_the_writer_survives(broker: Mosquitto,
                                                                                make_ingester) -> None:
    ing = make_ingester(broker.url)
    assert ing._client is not None
    broker.stop()
    wait_for(lambda: not ing._client.is_connected(), 30, "the ingester to see its broker gone")
    before = ing.stats.announcements
    ing._announce(["d1"])
    ing._announce(["d2"])  # the first one's refused publish must not make this one raise
    assert ing.stats.announcements == before
    broker.start()
    wait_for(lambda: ing._client is not None and ing._client.is_connected(), 60, "the ingester back")
    dev = RawClient(broker.port, "edge-d1")
    try:
        dev.publish("edge/d1/telemetry", message("d1", 1, [frame(7)]))
        wait_for(lambda: 7 in cloud_frames(ing.engine, "d1"), 30, "d1's record after the outage")
        # the deferred announcement is made once the broker is back (after d1's commit)
        wait_for(lambda: ing.stats.announcements > before, 30, "the announcement to d1")
    finally:
        dev.close()
