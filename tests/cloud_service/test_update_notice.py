"""Publishing a version to a channel sends an update notice on edge/D/cmd/update to exactly the
devices following that channel of that model (real Mosquitto)."""

from __future__ import annotations

import json
import queue
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from cloud_sync.service import ServiceSettings
from edge_device.client import CloudClient
from tests.support.keys import Keys
from tests.support.service import ADMIN_TOKEN, MakeSigned, run_service


def _drain(q: queue.Queue, want: int, timeout: float = 20) -> list[tuple[str, dict]]:
    got: list[tuple[str, dict]] = []
    end = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < end:
        try:
            got.append(q.get(timeout=0.2))
        except queue.Empty:
            continue
    # anything more that arrives shortly after would be a notice too many
    time.sleep(0.5)
    while not q.empty():
        got.append(q.get_nowait())
    return got


def test_update_notices_reach_the_channel_devices(tmp_path: Path, keys: Keys, make_signed: MakeSigned,
                                                  mosquitto: tuple[str, int]) -> None:
    host, port = mosquitto
    q: queue.Queue = queue.Queue()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    # retained notices of other tests on this broker arrive flagged `retain`: only live ones count
    sub.on_message = lambda c, u, m: None if m.retain else q.put((m.topic, json.loads(m.payload)))
    sub.connect(host, port)
    sub.subscribe("edge/+/cmd/update", qos=1)
    sub.loop_start()
    settings = ServiceSettings(data_dir=tmp_path, admin_token=ADMIN_TOKEN, trusted_keys=[keys.public],
                               mqtt_host=host, mqtt_port=port)
    try:
        with run_service(settings) as svc:
            admin = CloudClient(svc.url, ADMIN_TOKEN, timeout=60)
            admin.register_device("pi-a", model="mobilenet_v2", channel="stable")
            admin.register_device("pi-b", model="mobilenet_v2", channel="stable")
            admin.register_device("pi-beta", model="mobilenet_v2", channel="beta")
            admin.register_device("pi-other", model="another_model", channel="stable")
            admin.register_device("pi-gone", model="mobilenet_v2", channel="stable")
            admin.revoke_device("pi-gone")

            v1 = admin.publish(make_signed(1), channel="stable")
            got = _drain(q, 2)
            assert sorted(t for t, _ in got) == ["edge/pi-a/cmd/update", "edge/pi-b/cmd/update"]
            for _, payload in got:
                assert payload == {"schema": 1, "type": "update", "model": "mobilenet_v2", "version": 1,
                                   "channel": "stable", "sha256": v1["sha256"], "size": v1["size"],
                                   "url": v1["url"], "expires": None}

            admin.publish(make_signed(2))  # on no channel: nobody is told
            assert _drain(q, 0, timeout=0.5) == []

            admin.promote("mobilenet_v2", "beta", 2)
            got = _drain(q, 1)
            assert [(t, p["version"]) for t, p in got] == [("edge/pi-beta/cmd/update", 2)]

            admin.promote("mobilenet_v2", "stable", 2)
            assert sorted((t, p["version"]) for t, p in _drain(q, 2)) == [
                ("edge/pi-a/cmd/update", 2), ("edge/pi-b/cmd/update", 2)]
            admin.rollback("mobilenet_v2", "stable")
            assert sorted((t, p["version"]) for t, p in _drain(q, 2)) == [
                ("edge/pi-a/cmd/update", 1), ("edge/pi-b/cmd/update", 1)]
    finally:
        sub.loop_stop()
        sub.disconnect()


def test_notices_are_retained_for_devices_that_were_offline(tmp_path: Path, keys: Keys, make_signed: MakeSigned,
                                                            mosquitto: tuple[str, int]) -> None:
    host, port = mosquitto
    settings = ServiceSettings(data_dir=tmp_path, admin_token=ADMIN_TOKEN, trusted_keys=[keys.public],
                               mqtt_host=host, mqtt_port=port)
    with run_service(settings) as svc:
        admin = CloudClient(svc.url, ADMIN_TOKEN, timeout=60)
        admin.register_device("pi-late", model="late_model", channel="stable")
        admin.publish(make_signed(1, name="late_model"), channel="stable")
        # the device connects only afterwards and still learns of the version
        q: queue.Queue = queue.Queue()
        dev = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        dev.on_message = lambda c, u, m: q.put((m.topic, json.loads(m.payload), m.retain))
        end = time.monotonic() + 20
        dev.connect(host, port)
        dev.subscribe("edge/pi-late/cmd/update", qos=1)
        dev.loop_start()
        try:
            while True:
                try:
                    topic, payload, retained = q.get(timeout=0.5)
                    break
                except queue.Empty:
                    if time.monotonic() > end:
                        pytest.fail("no retained update notice")
                    # the notice may still be on its way to the broker: subscribe again to get it retained
                    dev.unsubscribe("edge/pi-late/cmd/update")
                    dev.subscribe("edge/pi-late/cmd/update", qos=1)
            assert topic == "edge/pi-late/cmd/update" and payload["model"] == "late_model"
            assert payload["version"] == 1 and retained
        finally:
            dev.loop_stop()
            dev.disconnect()
