"""Signed model updates end to end: the real cloud service publishes, its MQTT notice reaches the
agent through a real Mosquitto, the agent downloads, verifies, health-checks and switches while its
pipeline runs on real images; refused bundles (another key, expired, failing their health check,
older) leave the old model serving; a model that fails on real frames after the switch is rolled
back. Events are read where the cloud reads them: on ``edge/<device>/events``."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from edge_device.agent import Agent, StateStore, load_config
from tests.support.agent import NAME, ListSink, admin, agent_config, expiring, register, start_service
from tests.support.mqtt import Subscriber
from tests.support.net import wait_for
from tests.support.servers import Mosquitto
from tests.support.service import CloudService

DEVICE = "upd-1"


class Device:
    def __init__(self, agent: Agent, sink: ListSink, sub: Subscriber, cloud: CloudService, thread: threading.Thread):
        self.agent, self.sink, self.sub, self.cloud, self.thread = agent, sink, sub, cloud, thread

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        evs = self.sub.records(f"edge/{DEVICE}/events")
        return [e for e in evs if name is None or e["event"] == name]

    def wait_event(self, name: str, timeout: float = 60, **match: Any) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            for e in self.events(name):
                if all(e.get(k) == v for k, v in match.items()):
                    return e
            return None

        self.sub.wait(lambda: found() is not None, timeout, f"event {name} {match}")
        ev = found()
        assert ev is not None
        return ev

    def serving(self) -> int:
        assert self.agent.model is not None
        return self.agent.model.version

    def frames_on(self, version: int, n: int, timeout: float = 60) -> None:
        """Wait until ``n`` more frames came out of ``version`` (the device keeps serving)."""
        start = len(self.sink.records)
        self.sink.wait_for(lambda rs: sum(1 for r in rs[start:] if r["model"]["version"] == version) >= n,
                           timeout, f"{n} frames on v{version}")


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory, keys, other_keys, release, mosquitto: Mosquitto,
           ) -> Iterator[Device]:
    tmp = tmp_path_factory.mktemp("updates")
    # The service trusts both keys (a second team publishes too); the device pins only the release key.
    cloud = start_service(tmp, [keys[1], other_keys[1]], mqtt_port=mosquitto.port)
    admin(cloud).publish(release(1), channel="stable")
    token = register(cloud, DEVICE, tmp)
    frames = tmp / "frames"
    frames.mkdir()
    from tests.support.agent import IMAGES

    for p in [*sorted(IMAGES.glob("*.png")), *sorted((IMAGES / "leaves").iterdir())]:
        (frames / p.name).symlink_to(p)
    # six unreadable frames in a row each round: the source's fault, never counted against a model
    for i in range(6):
        (frames / f"zz-broken-{i}.png").write_bytes((IMAGES / "cat.png").read_bytes()[:300])
    cfg = load_config(data=agent_config(
        tmp, device_id=DEVICE, bundle=release(1), keys=keys, source=str(frames),
        cloud={"url": cloud.url, "token_file": str(token)},
        # notices only: the first poll would come in an hour, so an update proves the notice path
        updates={"enabled": True, "first_poll_s": 3600, "poll_interval_s": 3600, "expiry_grace_s": 0,
                 "probation_frames": 30, "rollback_after_failures": 5},
        telemetry={"mqtt_url": mosquitto.url, "confirm": "broker", "linger_s": 0.05, "metrics_interval_s": 1},
    ) | {"source": {"spec": str(frames), "repeat": True}}, environ={})
    sub = Subscriber(mosquitto.port, f"edge/{DEVICE}/events", f"edge/{DEVICE}/status")
    sink = ListSink()
    agent = Agent(cfg, extra_sinks=[sink])
    t = threading.Thread(target=agent.run, daemon=True)
    t.start()
    wait_for(lambda: agent.phase == "running" and agent.commands is not None and agent.commands.connected.is_set(),
             60, "the agent and its MQTT command connection")
    dev = Device(agent, sink, sub, cloud, t)
    yield dev
    agent.stop()
    t.join(60)
    sub.close()
    cloud.stop()


def test_update_by_mqtt_notice_switches_between_frames(device: Device, release) -> None:
    device.frames_on(1, 10)
    device.wait_event("agent_started", version=1)
    admin(device.cloud).publish(release(2), channel="stable")
    started = device.wait_event("update_started", version=2)
    assert started["trigger"] == "notice"
    device.wait_event("update_succeeded", version=2, previous=1)
    device.frames_on(2, 40)
    device.wait_event("update_confirmed", version=2)
    for name in ("update_downloaded", "update_verified", "update_healthy"):
        device.wait_event(name, version=2)
    records = device.sink.records
    # every frame answered, in order, none lost or failed across the switch: 1 1 1 ... 2 2 2
    assert [r["frame"] for r in records] == list(range(len(records)))
    for r in records:
        if "zz-broken" in r["source"]:
            assert "image is corrupt or truncated" in r["error"], r
        else:
            assert "error" not in r and r["top_k"], r
    versions = [r["model"]["version"] for r in records]
    switch = versions.index(2)
    assert set(versions[:switch]) == {1} and set(versions[switch:]) == {2}
    store = StateStore(device.agent.config.state_dir)
    assert store.read_pointer("current").version == 2 and store.read_pointer("previous").version == 1
    state = store.load()
    assert state.highest_accepted == 2 and state.trial is None
    assert not any(p.name.endswith(".part") for p in store.staging.iterdir())


def test_malformed_notices_are_ignored_and_the_device_keeps_serving(device: Device) -> None:
    import paho.mqtt.client as mqtt

    commands = device.agent.commands
    assert commands is not None
    started = len(device.events("update_started"))
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.connect("127.0.0.1", commands.mqtt.port)
    c.loop_start()
    try:
        for payload in (b"not json", b'{"version": "two"}', b'{"version": 0}', b"[1, 2]", b"x" * 20_000):
            c.publish(f"edge/{DEVICE}/cmd/update", payload, qos=1).wait_for_publish(5)
    finally:
        c.loop_stop()
        c.disconnect()
    wait_for(lambda: commands.malformed >= 5, 10, "the notices to be read")
    device.frames_on(device.serving(), 5)
    assert len(device.events("update_started")) == started


def refused(device: Device, version: int, reason: str) -> dict[str, Any]:
    ev = device.wait_event("update_refused", version=version)
    assert ev["reason"] == reason, ev
    device.frames_on(2, 5)  # and the device keeps serving v2
    assert device.serving() == 2
    return ev


def test_refused_bundles_leave_the_old_model_serving(device: Device, release) -> None:
    cloud = admin(device.cloud)
    if device.serving() != 2:
        pytest.fail("this test follows test_update_by_mqtt_notice_switches_between_frames")
    # signed by a key the registry trusts but the device does not pin
    cloud.publish(release(3, key="other"), channel="stable")
    ev = refused(device, 3, "signature")
    assert "signature does not match the trusted key" in ev["error"]
    # expired between its upload and its promotion (a frozen or replayed registry)
    exp = expiring(6)
    cloud.publish(release(4, expires=exp))
    wait_for(lambda: datetime.now(UTC) > datetime.fromisoformat(exp.replace("Z", "+00:00")), 10, "the expiry")
    cloud.promote(NAME, "stable", 4)
    assert "expired at" in refused(device, 4, "expired")["error"]
    # well signed but broken: its own sample no longer gives the label its manifest declares
    cloud.publish(release(5, kind="bad-labels"), channel="stable")
    ev = refused(device, 5, "health")
    assert "on its sample samples/cat.png, its manifest expects 'Egyptian cat'" in ev["error"]
    store = StateStore(device.agent.config.state_dir)
    assert 5 in store.load().bad_versions and not store.model_dir(5).exists()
    # the channel rolled back to an old version: a downgrade, refused
    cloud.promote(NAME, "stable", 1)
    refused(device, 1, "downgrade")
    # no refusal is said twice, however often the registry is asked
    device.agent.updater.notify("test")
    wait_for(lambda: device.agent.updater.checks >= 6, 30, "another check")
    device.frames_on(2, 5)
    counts: dict[int, int] = {}
    for e in device.events("update_refused"):
        counts[e["version"]] = counts.get(e["version"], 0) + 1
    assert counts == {3: 1, 4: 1, 5: 1, 1: 1}
    assert store.read_pointer("current").version == 2


def test_a_model_failing_on_real_frames_is_rolled_back_then_updates_go_on(device: Device, release) -> None:
    if device.serving() != 2:
        pytest.fail("this test follows the two before it")
    cloud = admin(device.cloud)
    before = len(device.sink.records)
    # passes its health check (its sample is a black image), answers NaN on every real frame
    cloud.publish(release(6, kind="nan"), channel="stable")
    device.wait_event("update_succeeded", version=6, previous=2)
    ev = device.wait_event("rolled_back", version=2)
    assert ev["from"] == 6 and "5 failing frames in a row" in ev["reason"]
    device.frames_on(2, 20)
    store = StateStore(device.agent.config.state_dir)
    state = store.load()
    assert 6 in state.bad_versions and state.highest_accepted == 6
    assert store.read_pointer("current").version == 2 and not store.model_dir(6).exists()
    recs = device.sink.records[before:]
    on6 = [r for r in recs if r["model"]["version"] == 6 and "zz-broken" not in r["source"]]
    assert on6 and all(r.get("suspect") == "non-finite or empty output" for r in on6)
    # one run of v6 frames, between v2 before and v2 after
    versions = [r["model"]["version"] for r in recs]
    first6, last6 = versions.index(6), len(versions) - 1 - versions[::-1].index(6)
    assert set(versions[:first6]) == {2} and set(versions[first6:last6 + 1]) == {6}
    assert versions[last6 + 1:] and set(versions[last6 + 1:last6 + 20]) == {2}
    all_recs = device.sink.records
    assert [r["frame"] for r in all_recs] == list(range(len(all_recs)))  # not a frame lost either way
    # the device still takes good updates afterwards
    cloud.publish(release(7), channel="stable")
    device.wait_event("update_succeeded", version=7, previous=2)
    device.frames_on(7, 10)
    assert device.serving() == 7


def test_stop_publishes_offline_status_and_leaves_a_clean_state(device: Device) -> None:
    agent = device.agent
    agent.stop()
    device.thread.join(60)
    assert agent.phase == "stopped"
    device.wait_event("agent_stopped")
    device.sub.wait(lambda: any(p.get("state") == "offline" for p in device.sub.payloads(f"edge/{DEVICE}/status")),
                    10, "the offline status")
    last = device.sub.payloads(f"edge/{DEVICE}/status")[-1]
    assert last["state"] == "offline"
    state = json.loads((agent.config.state_dir / "state.json").read_text())
    assert state["running"] is False
    assert StateStore(agent.config.state_dir).running_agent_pid() is None
