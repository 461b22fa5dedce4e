"""Identity on the broker, under the generated Mosquitto config on a real Mosquitto: a device cannot
take another device's (or the ingester's) client id and disconnect it; the ingester has credentials
of its own in a password file; revoking a device in the registry reaches the broker (broker-config
--fleet-from-db --reload) and the ingester (its records go to telemetry_rejects, reason "revoked")."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import tomllib
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from cloud_sync.db import telemetry_rejects
from cloud_sync.ingest import BrokerSpec, write_broker_config
from cloud_sync.service import ServiceSettings
from edge_device.telemetry import MqttConfig
from tests.support.mqtt import RawClient
from tests.support.net import free_port, wait_for
from tests.support.servers import Mosquitto
from tests.support.service import ADMIN_TOKEN, run_service
from tests.support.telemetry import cloud_frames, frame, message

ROOT = Path(__file__).resolve().parents[2]


class Watched(RawClient):
    """A raw client that counts the times the broker disconnected it."""

    def __init__(self, port: int, client_id: str, **kw: Any) -> None:
        self.disconnects: list[Any] = []
        self._lock = threading.Lock()
        super().__init__(port, client_id, **kw)

        def on_disconnect(c: Any, u: Any, flags: Any, reason: Any, p: Any) -> None:
            with self._lock:
                self.disconnects.append(reason)
        self.client.on_disconnect = on_disconnect


def _broker_config(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_cli", "cloud", "broker-config", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_a_device_cannot_take_another_client_id(public_dir: Path, make_ingester) -> None:
    (public_dir / "fleet.toml").write_text('[[devices]]\nid = "A"\npassword = "pass-of-A"\n\n'
                                           '[[devices]]\nid = "B"\npassword = "pass-of-B"\n')
    port = free_port()
    out = public_dir / "broker"
    r = _broker_config(["--devices", str(public_dir / "fleet.toml"), "-o", str(out), "--port", str(port),
                        "--bind", "127.0.0.1"])
    assert r.returncode == 0, r.stderr
    assert "use_username_as_clientid true" in (out / "mosquitto.conf").read_text()
    # the ingester's own credentials, in a file for `edge cloud ingest --password-file`
    pw_file = out / "ingest.password"
    assert "ingest.password" in r.stdout
    assert oct(pw_file.stat().st_mode & 0o777) == "0o600"
    creds = tomllib.loads((out / "credentials.toml").read_text())
    assert pw_file.read_text().strip() == creds["ingester"]["password"]
    url = f"mqtt://127.0.0.1:{port}"
    broker = Mosquitto(out, port=port, conf_file=out / "mosquitto.conf").start()
    clients: list[RawClient] = []
    try:
        ing = make_ingester(url, mqtt=MqttConfig(url=url, username="ingest", password_file=pw_file,
                                                 reconnect_min_s=0.2, reconnect_max_s=1.0))
        b = Watched(port, "edge-B", username="B", password="pass-of-B")
        clients.append(b)
        assert not b.connack.is_failure
        connects_before = ing.stats.as_dict().get("connects")
        # A, with its own valid password, asks for B's client id, then for the ingester's
        for stolen in ("edge-B", "B", "edge-ingest", "ingest"):
            a = RawClient(port, stolen, username="A", password="pass-of-A")
            assert not a.connack.is_failure
            a.publish("edge/A/telemetry", message("A", 100 + len(stolen), [frame(len(stolen))]))
            a.close()
        wait_for(lambda: len(cloud_frames(ing.engine, "A")) == 3, 20, "A's telemetry at the ingester")
        # B was never disconnected and still gets its telemetry through to the ingester
        b.publish("edge/B/telemetry", message("B", 1, [frame(42)]))
        wait_for(lambda: 42 in cloud_frames(ing.engine, "B"), 20, "B's telemetry at the ingester")
        assert b.disconnects == [], b.disconnects
        assert b.client.is_connected()
        assert ing.wait_connected(0)
        assert ing.stats.as_dict().get("connects") == connects_before
    finally:
        for c in clients:
            c.close()
        broker.stop()


def test_revocation_reaches_the_broker_and_the_ingester(public_dir: Path, make_ingester) -> None:
    db = public_dir / "edge-cloud.db"
    db_url = f"sqlite:///{db}"
    settings = ServiceSettings(data_dir=public_dir / "svc", database_url=db_url, admin_token=ADMIN_TOKEN)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    port = free_port()
    out = public_dir / "broker"
    url = f"mqtt://127.0.0.1:{port}"
    with run_service(settings) as svc:
        for dev in ("R1", "R2"):
            r = httpx.post(f"{svc.url}/api/v1/devices", headers=admin, json={"id": dev}, timeout=30)
            assert r.status_code == 201, r.text
        # the broker's users come from the registry
        r = _broker_config(["--fleet-from-db", db_url, "-o", str(out), "--port", str(port), "--bind", "127.0.0.1"])
        assert r.returncode == 0, r.stderr
        pw = {d["id"]: d["password"] for d in tomllib.loads((out / "credentials.toml").read_text())["devices"]}
        assert sorted(pw) == ["R1", "R2"]
        broker = Mosquitto(out, port=port, conf_file=out / "mosquitto.conf").start()
        clients: list[RawClient] = []
        try:
            ing = make_ingester(url, db_url=db_url, revoked_refresh_s=0.0,
                                mqtt=MqttConfig(url=url, username="ingest", password_file=out / "ingest.password",
                                                reconnect_min_s=0.2, reconnect_max_s=1.0))
            r1 = RawClient(port, "edge-R1", username="R1", password=pw["R1"])
            r2 = RawClient(port, "edge-R2", username="R2", password=pw["R2"])
            clients += [r1, r2]
            r1.publish("edge/R1/telemetry", message("R1", 1, [frame(1)]))
            wait_for(lambda: cloud_frames(ing.engine, "R1") == [1], 20, "R1's first record")

            assert httpx.delete(f"{svc.url}/api/v1/devices/R1", headers=admin, timeout=30).status_code == 200
            # the ingester: R1's next records are rejects with reason "revoked", nothing in the tables
            r1.publish("edge/R1/telemetry", message("R1", 2, [frame(2)]))
            r2.publish("edge/R2/telemetry", message("R2", 1, [frame(3)]))  # others are unaffected
            wait_for(lambda: cloud_frames(ing.engine, "R2") == [3], 20, "R2's record")

            def rejects() -> list[Any]:
                with ing.engine.connect() as conn:
                    return list(conn.execute(select(telemetry_rejects).where(telemetry_rejects.c.device_id == "R1")))
            wait_for(lambda: len(rejects()) == 1, 20, "R1's record in telemetry_rejects")
            row = rejects()[0]
            assert row.reason.startswith("revoked"), row.reason
            assert row.seq == 2
            assert cloud_frames(ing.engine, "R1") == [1]
            assert ing.stats.as_dict()["rejected"].get("revoked") == 1

            # the broker: broker-config --fleet-from-db --reload drops R1's user and ACL lines
            assert broker.proc is not None
            r = _broker_config(["--fleet-from-db", db_url, "-o", str(out), "--port", str(port),
                                "--bind", "127.0.0.1", "--reload", str(broker.proc.pid)])
            assert r.returncode == 0, r.stderr
            assert "left out revoked device(s): R1" in r.stdout and "SIGHUP" in r.stdout
            assert "R1" not in (out / "acl").read_text() and "R1:" not in (out / "passwd").read_text()

            def refused() -> bool:
                c = RawClient(port, "edge-R1-again", username="R1", password=pw["R1"])
                c.close()
                return bool(c.connack.is_failure)
            wait_for(refused, 20, "the broker to refuse the revoked device")
            # R1's connection from before the reload is no longer allowed to publish (the ACL): its
            # message never reaches the ingester, while R2's marker behind it does
            info = r1.client.publish("edge/R1/telemetry", message("R1", 3, [frame(4)]), qos=1)
            with contextlib.suppress(RuntimeError, ValueError):  # disconnected by the reload: fine too
                info.wait_for_publish(5)
            r2.publish("edge/R2/telemetry", message("R2", 2, [frame(5)]))
            wait_for(lambda: cloud_frames(ing.engine, "R2") == [3, 5], 20, "R2's marker")
            assert len(rejects()) == 1 and cloud_frames(ing.engine, "R1") == [1]
            r2b = RawClient(port, "edge-R2-b", username="R2", password=pw["R2"])  # R2 keeps its password
            clients.append(r2b)
            assert not r2b.connack.is_failure
        finally:
            for c in clients:
                c.close()
            broker.stop()


def test_reload_names_a_bad_pid(tmp_path: Path) -> None:
    write_broker_config(BrokerSpec(), tmp_path / "b")
    r = _broker_config(["--devices", str(tmp_path / "none.toml"), "-o", str(tmp_path / "b")])
    assert r.returncode != 0 and "none.toml" in (r.stderr + r.stdout)
    (tmp_path / "f.toml").write_text("")
    r = _broker_config(["--devices", str(tmp_path / "f.toml"), "-o", str(tmp_path / "b"), "--reload", "nope"])
    assert r.returncode != 0 and "nope" in r.stderr
    r = _broker_config(["-o", str(tmp_path / "b")])
    assert r.returncode != 0 and "--fleet-from-db" in r.stderr
