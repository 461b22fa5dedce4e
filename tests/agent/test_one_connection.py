"""One device, one MQTT connection: under the generated Mosquitto config, which binds each client id to
its user name, the agent's telemetry and its command topic share a connection. Two connections under
one user would take turns knocking each other off the broker."""

from __future__ import annotations

import subprocess
import sys
import threading
import tomllib
from collections.abc import Callable
from pathlib import Path

from edge_device.agent import Agent, load_config
from tests.support.agent import ListSink, agent_config, write_config
from tests.support.mqtt import RawClient
from tests.support.net import free_port, wait_for
from tests.support.servers import Mosquitto

ROOT = Path(__file__).resolve().parents[2]
DEVICE = "cam-1"


def test_telemetry_and_commands_share_the_one_connection_a_bound_broker_allows(
        public_dir: Path, tmp_path: Path, keys, release: Callable[..., Path], images_dir: Path) -> None:
    (public_dir / "fleet.toml").write_text(f'[[devices]]\nid = "{DEVICE}"\npassword = "pass-of-cam"\n')
    port = free_port()
    out = public_dir / "broker"
    proc = subprocess.run([sys.executable, "-m", "edge_cli", "cloud", "broker-config", "--devices",
                           str(public_dir / "fleet.toml"), "-o", str(out), "--port", str(port), "--bind", "127.0.0.1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "use_username_as_clientid true" in (out / "mosquitto.conf").read_text()
    creds = tomllib.loads((out / "credentials.toml").read_text())
    broker = Mosquitto(out, port=port, conf_file=out / "mosquitto.conf").start()
    password_file = tmp_path / "mqtt.password"
    password_file.write_text("pass-of-cam\n")
    cfg = agent_config(tmp_path, device_id=DEVICE, bundle=release(1), keys=keys, source=str(images_dir),
                       telemetry={"mqtt_url": f"mqtt://127.0.0.1:{port}", "username": DEVICE,
                                  "password_file": str(password_file), "confirm": "broker", "linger_s": 0.05,
                                  "metrics_interval_s": 0.5, "commands": True})
    cfg["source"] = {"spec": str(images_dir), "repeat": True}
    agent = Agent(load_config(write_config(tmp_path / "agent.toml", cfg), environ={}), extra_sinks=[ListSink()])
    t = threading.Thread(target=agent.run, daemon=True)
    t.start()
    notifier: RawClient | None = None
    try:
        wait_for(lambda: agent.commands is not None and agent.commands.connected.is_set(), 60,
                 "the agent's command subscription")
        assert agent.telemetry is not None
        publisher = agent.telemetry.publisher
        wait_for(lambda: publisher.stats.as_dict()["published"] >= 3, 60, "telemetry on the bound broker")
        # The cloud's notifier user (its own connection) sends a notice the agent must read on the shared
        # connection: a malformed one, so that it is counted and nothing is downloaded.
        notifier = RawClient(port, creds["service"]["username"], username=creds["service"]["username"],
                             password=creds["service"]["password"])
        assert not notifier.connack.is_failure
        notifier.publish(f"edge/{DEVICE}/cmd/update", b'{"schema": 1, "version": "not a number"}')
        wait_for(lambda: agent.commands is not None and agent.commands.malformed >= 1, 30,
                 "the notice on the shared connection")
        published = publisher.stats.as_dict()["published"]
        wait_for(lambda: publisher.stats.as_dict()["published"] > published + 2, 30, "telemetry still flowing")
        stats = publisher.stats.as_dict()
        # one connection, never knocked off: a second connection under the same user would have been
        assert stats["connects"] == 1 and stats["disconnects"] == 0, stats
    finally:
        if notifier is not None:
            notifier.close()
        agent.stop()
        t.join(60)
        broker.stop()
