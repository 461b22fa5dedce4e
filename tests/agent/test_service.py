"""The agent as a service: systemd's notify protocol through a socket the test owns (READY,
STATUS, WATCHDOG only while frames flow, STOPPING), graceful SIGTERM (sinks flushed, ``offline``
published, outbox consistent, nothing lost), the local HTTP endpoint, Home Assistant discovery."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_device.agent import SdNotifier
from edge_device.telemetry import Outbox
from tests.support.agent import agent_config, write_config
from tests.support.mqtt import Subscriber
from tests.support.net import free_port, wait_for
from tests.support.paths import ROOT, env_with_project
from tests.support.servers import Mosquitto


class NotifySocket:
    """What systemd does: a datagram socket whose path goes to the service as $NOTIFY_SOCKET."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path if not path.startswith("@") else "\0" + path[1:])
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._recv, daemon=True)
        self._t.start()

    def _recv(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def fields(self, key: str) -> list[tuple[float, str]]:
        out = []
        for t, msg in list(self.messages):
            for line in msg.split("\n"):
                k, _, v = line.partition("=")
                if k == key:
                    out.append((t, v))
        return out

    def close(self) -> None:
        self._stop.set()
        self._t.join(2)
        self.sock.close()


def start_agent(config: Path, notify: str, watchdog_usec: int) -> subprocess.Popen[str]:
    env = env_with_project()
    env.update(NOTIFY_SOCKET=notify, WATCHDOG_USEC=str(watchdog_usec))
    return subprocess.Popen([sys.executable, "-m", "edge_cli", "agent", "--config", str(config)],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture()
def notify(tmp_path: Path) -> Iterator[tuple[str, NotifySocket]]:
    path = str(tmp_path / "notify.sock")
    s = NotifySocket(path)
    yield path, s
    s.close()


def test_notify_protocol_http_home_assistant_and_graceful_sigterm(
        tmp_path: Path, keys, release, images_dir: Path, mosquitto: Mosquitto, notify) -> None:
    import jinja2

    path, ns = notify
    device, port = "svc-1", free_port()
    out = tmp_path / "records.jsonl"
    cfg = agent_config(tmp_path, device_id=device, bundle=release(1), keys=keys, source=str(images_dir),
                       outputs=[str(out)],
                       telemetry={"mqtt_url": mosquitto.url, "confirm": "broker", "linger_s": 0.05,
                                  "metrics_interval_s": 0.5, "drain_s": 5},
                       http={"enabled": True, "port": port},
                       home_assistant={"enabled": True, "name": "Greenhouse camera"})
    cfg["source"] = {"spec": str(images_dir), "repeat": True}
    config = write_config(tmp_path / "agent.toml", cfg)
    sub = Subscriber(mosquitto.port, f"edge/{device}/#", "homeassistant/sensor/#")
    proc = start_agent(config, path, 400_000)  # WatchdogSec=0.4 s: a ping every 0.2 s
    try:
        wait_for(lambda: ns.fields("READY") or proc.poll() is not None, 60, "READY=1")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        (t_ready, _), = ns.fields("READY")
        assert ns.fields("STATUS")[0][1] == "starting"
        wait_for(lambda: len([t for t, _ in ns.fields("WATCHDOG") if t > t_ready]) >= 5, 30, "watchdog pings")
        assert any("running: mobilenet_v2 v1, offline mode" in v for _, v in ns.fields("STATUS"))

        # the local endpoint
        status, health = get(f"http://127.0.0.1:{port}/health")
        assert status == 200 and health["status"] == "ok"
        assert health["model"] == {"name": "mobilenet_v2", "version": 1, "backend": health["model"]["backend"]}
        assert health["frames"] > 0 and health["device_id"] == device
        status, latest = get(f"http://127.0.0.1:{port}/latest")
        assert status == 200 and latest["model"]["version"] == 1 and latest["top_k"]
        assert get(f"http://127.0.0.1:{port}/nope")[0] == 404

        # Home Assistant: retained discovery configs whose templates read the device's own topics
        wanted = ("homeassistant/sensor/svc-1/fps/config", f"edge/{device}/metrics", f"edge/{device}/telemetry")
        sub.wait(lambda: all(sub.payloads(t) for t in wanted), 30, "discovery, metrics and telemetry")
        # (the session's broker may hold other tests' retained discovery configs: only this device's count)
        configs = {t: json.loads(p) for t, p, _ in sub.messages if t.startswith(f"homeassistant/sensor/{device}/")}
        assert set(configs) == {f"homeassistant/sensor/{device}/{f}/config"
                                for f in ("label", "score", "path", "model_version", "fps")}
        late = Subscriber(mosquitto.port, "homeassistant/sensor/#")  # Home Assistant starting later
        try:
            def mine() -> list[bool]:
                return [r for t, _, r in late.messages if t.startswith(f"homeassistant/sensor/{device}/")]
            late.wait(lambda: len(mine()) >= 5, 10, "the retained discovery configs")
            assert all(mine())
        finally:
            late.close()
        env = jinja2.Environment()
        states = {}
        # one snapshot of the last message of each state topic, as Home Assistant would hold it
        snapshot = {t: sub.payloads(t)[-1] for t in (f"edge/{device}/telemetry", f"edge/{device}/metrics")}
        for c in configs.values():
            envelope = snapshot[c["state_topic"]]
            states[c["unique_id"]] = env.from_string(c["value_template"]).render(value_json=envelope)
            assert c["device"]["name"] == "Greenhouse camera" and c["device"]["identifiers"] == [f"edge_{device}"]
            avail = c["availability"][0]
            assert avail["topic"] == f"edge/{device}/status"
            status_payload = sub.payloads(avail["topic"])[-1]
            assert env.from_string(avail["value_template"]).render(value_json=status_payload) == "online"
        last = snapshot[f"edge/{device}/telemetry"]["records"][-1]
        assert states["edge_svc_1_label"] == last["top_k"][0]["label"]
        assert float(states["edge_svc_1_score"]) == pytest.approx(last["top_k"][0]["score"] * 100, abs=0.06)
        assert states["edge_svc_1_model_version"] == "1"
        assert states["edge_svc_1_path"] == "local (offline-mode)"
        assert float(states["edge_svc_1_fps"]) > 0

        # SIGTERM: STOPPING, exit 0, everything flushed
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sub_messages = list(sub.messages)
        sub.close()
    assert ns.fields("STOPPING"), ns.messages[-5:]
    assert ns.fields("STOPPING")[0][0] > t_ready
    # the JSONL output: every line whole
    lines = out.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert records and [r["frame"] for r in records] == list(range(len(records)))
    # offline published (retained), and nothing lost: what MQTT got plus what waits in the outbox
    statuses = [json.loads(p) for t, p, _ in sub_messages if t == f"edge/{device}/status"]
    assert statuses[-1]["state"] == "offline"
    seen: dict[int, int] = {}
    for t, p, _ in sub_messages:
        if t == f"edge/{device}/telemetry":
            env_ = json.loads(p)
            seen[env_["seq"]] = len(env_["records"])
    outbox = load_agent_config(config).outbox_path
    with sqlite3.connect(outbox) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with Outbox(outbox, readonly=True) as ob:
        waiting = len(ob.peek(limit=1_000_000, kind="telemetry"))
    assert sum(seen.values()) + waiting == len(records)
    events = [json.loads(p) for t, p, _ in sub_messages if t == f"edge/{device}/events"]
    names = [r["event"] for e in events for r in e["records"]]
    assert "agent_started" in names and "agent_stopped" in names
    state = json.loads((Path(cfg["state_dir"]) / "state.json").read_text())
    assert state["running"] is False


def load_agent_config(path: Path) -> Any:
    from edge_device.agent import load_config

    return load_config(path, environ={})


def test_a_hung_pipeline_stops_the_watchdog_pings(tmp_path: Path, keys, release, images_dir: Path, notify) -> None:
    """Records go to a FIFO nobody reads: the sink blocks, its queue fills, the pipeline stalls.
    The process is alive, but the pings stop, so systemd would restart it; reading again resumes them."""
    path, ns = notify
    fifo = tmp_path / "stuck.jsonl"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # open, but nobody reads
    port = free_port()
    cfg = agent_config(tmp_path, device_id="hang-1", bundle=release(1), keys=keys, source=str(images_dir),
                       outputs=[str(fifo)], http={"enabled": True, "port": port})
    cfg["source"] = {"spec": str(images_dir), "repeat": True}
    proc = start_agent(write_config(tmp_path / "agent.toml", cfg), path, 400_000)
    drained = threading.Event()
    try:
        wait_for(lambda: ns.fields("READY") or proc.poll() is not None, 60, "READY=1")
        assert proc.poll() is None

        def quiet_for(seconds: float) -> bool:
            pings = ns.fields("WATCHDOG")
            return bool(pings) and time.monotonic() - pings[-1][0] > seconds

        wait_for(lambda: quiet_for(1.5), 120, "the watchdog pings to stop")
        assert proc.poll() is None, "the process itself is still alive"
        status, health = get(f"http://127.0.0.1:{port}/health")
        assert status == 503 and health["status"] == "stalled"
        count = len(ns.fields("WATCHDOG"))

        def drain() -> None:
            os.set_blocking(reader, True)
            while os.read(reader, 65536):
                pass
            drained.set()

        threading.Thread(target=drain, daemon=True).start()
        wait_for(lambda: len(ns.fields("WATCHDOG")) > count + 3, 30, "the pings to resume")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        drained.wait(10)
        os.close(reader)


def test_sd_notifier_abstract_socket_and_no_systemd(tmp_path: Path) -> None:
    name = f"@edge-agent-test-{os.getpid()}"
    ns = NotifySocket(name)
    try:
        n = SdNotifier({"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "3000000"})
        assert n.enabled and n.watchdog_interval_s == 1.5
        assert n.ready("serving\nsecond line") and n.notify("WATCHDOG=1") and n.stopping()
        wait_for(lambda: len(ns.messages) == 3, 5, "three datagrams")
        assert [m for _, m in ns.messages] == ["READY=1\nSTATUS=serving", "WATCHDOG=1", "STOPPING=1"]
    finally:
        ns.close()
    quiet = SdNotifier({})
    assert not quiet.enabled and not quiet.ready() and quiet.watchdog_interval_s is None
    # a watchdog meant for another process of the unit is not ours to pet
    assert SdNotifier({"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_interval_s is None
    # systemd gone: sending fails quietly, the agent keeps serving
    gone = SdNotifier({"NOTIFY_SOCKET": str(tmp_path / "nobody.sock")})
    assert not gone.notify("WATCHDOG=1") and gone.errors == 1
