"""`edge cloud broker-config` output, run by a real Mosquitto: each device is kept to its own topics,
over TLS with client certificates and passwords."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import ssl
import subprocess
import sys
import tomllib
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cloud_sync import BrokerConfigError
from cloud_sync.ingest import BrokerSpec, load_devices_file, write_broker_config
from edge_device.telemetry import MqttConfig
from tests.support.mqtt import RawClient
from tests.support.net import free_port, wait_for
from tests.support.servers import Mosquitto
from tests.support.telemetry import cloud_frames, frame, message

ROOT = Path(__file__).resolve().parents[2]


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
          *, ca: bool = False, san_ip: bool = False) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer[0])]) if issuer else name
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san_ip:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                         x509.DNSName("localhost")]), critical=False)
    return b.sign(issuer[1] if issuer else key, hashes.SHA256())


def make_pki(d: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    ca_key = ec.generate_private_key(ec.SECP256R1())
    certs = {"ca": (_cert("edge-test-ca", ca_key, None, ca=True), ca_key)}
    for who in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        certs[who] = (_cert(f"edge-test-{who}", key, ("edge-test-ca", ca_key), san_ip=who == "server"), key)
    for who, (cert, key) in certs.items():
        files[f"{who}_cert"] = d / f"{who}.crt"
        files[f"{who}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{who}_key"] = d / f"{who}.key"
        files[f"{who}_key"].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
        os.chmod(files[f"{who}_key"], 0o644)  # test keys, read by the broker's user
    return files


def test_each_device_is_kept_to_its_own_topics_over_tls(public_dir: Path, make_ingester, make_device) -> None:
    pki = make_pki(public_dir)
    (public_dir / "fleet.toml").write_text('[[devices]]\nid = "A"\npassword = "pass-of-A"\n\n[[devices]]\nid = "B"\n')
    port = free_port()
    out = public_dir / "broker"
    r = subprocess.run([sys.executable, "-m", "edge_cli", "cloud", "broker-config", "--devices",
                        str(public_dir / "fleet.toml"), "-o", str(out), "--port", str(port), "--bind", "127.0.0.1",
                        "--cafile", str(pki["ca_cert"]), "--certfile", str(pki["server_cert"]),
                        "--keyfile", str(pki["server_key"]), "--require-certificate",
                        # raw clients below share the users of the running device and ingester;
                        # client ids bound to users (the default) are tested in test_identity.py
                        "--no-bind-client-ids"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "generated passwords for: ingest, edge-cloud, B" in r.stdout
    creds = tomllib.loads((out / "credentials.toml").read_text())
    assert oct((out / "credentials.toml").stat().st_mode & 0o777) == "0o600"
    pw = {d["id"]: d["password"] for d in creds["devices"]}
    assert pw["A"] == "pass-of-A"
    tls = {"ca_certs": str(pki["ca_cert"]), "certfile": str(pki["client_cert"]), "keyfile": str(pki["client_key"])}
    tls_cfg = {"ca_file": pki["ca_cert"], "cert_file": pki["client_cert"], "key_file": pki["client_key"]}
    url = f"mqtts://127.0.0.1:{port}"

    broker = Mosquitto(out, port=port, conf_file=out / "mosquitto.conf").start()
    try:
        ing = make_ingester(url, mqtt=MqttConfig(url=url, username="ingest",
                                                 password=creds["ingester"]["password"], **tls_cfg))
        # the real device client: TLS, client certificate, password
        tel = make_device(url, "A", username="A", password="pass-of-A", **{k: str(v) for k, v in tls_cfg.items()})
        for i in range(20):
            tel.write(frame(i))
        assert tel.flush(30)
        assert sorted(cloud_frames(ing.engine, "A")) == list(range(20))

        a = RawClient(port, "raw-A", username="A", password="pass-of-A", tls=tls)
        b = RawClient(port, "raw-B", username="B", password=pw["B"], tls=tls)
        # A publishes as B (refused silently by the broker), then as itself (a marker)
        a.publish("edge/B/telemetry", message("B", 1, [frame(666)]))
        a.publish("edge/A/telemetry", message("A", 10**15, [frame(777)]))
        wait_for(lambda: 777 in cloud_frames(ing.engine, "A"), 20, "A's own message")
        assert cloud_frames(ing.engine, "B") == []  # the spoofed one never reached the ingester
        # A may not read B's commands nor other devices' data. Mosquitto 2.0 grants the SUBACK and
        # applies the ACL to every message it would deliver, so the proof is what A receives.
        for topic in ("edge/B/cmd/#", "edge/+/telemetry", "edge/#", "edge/A/cmd/#"):
            a.subscribe(topic)
        b.subscribe("edge/B/cmd/#")
        cloud = RawClient(port, "cloud-cmd", username="ingest", password=creds["ingester"]["password"], tls=tls)
        b.publish("edge/B/telemetry", message("B", 1, [frame(888)]))
        cloud.publish("edge/B/cmd/update", b'{"schema": 1, "version": 4}')
        cloud.publish("edge/A/cmd/update", b'{"schema": 1, "version": 5}')  # last: a marker for A
        wait_for(lambda: any(t == "edge/A/cmd/update" for t, _ in a.received), 20, "A's own command")
        wait_for(lambda: any(t == "edge/B/cmd/update" for t, _ in b.received), 20, "B's command")
        wait_for(lambda: 888 in cloud_frames(ing.engine, "B"), 20, "B's telemetry at the ingester")
        # only A's own commands: the update, and the ingester's retained announcement on
        # edge/A/cmd/ingest (and a late confirmation on edge/A/cmd/ack, if one comes)
        assert "edge/A/cmd/update" in {t for t, _ in a.received}
        assert all(t.startswith("edge/A/cmd/") for t, _ in a.received), a.received
        # wrong password, anonymous, no client certificate: refused
        wrong = RawClient(port, "wrong", username="A", password="nope", tls=tls)
        assert wrong.connack.is_failure
        anon = RawClient(port, "anon", tls=tls)
        assert anon.connack.is_failure
        bare = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        bare.tls_set(ca_certs=str(pki["ca_cert"]))
        with pytest.raises((ssl.SSLError, OSError)):
            bare.connect("127.0.0.1", port)
            for _ in range(20):
                bare.loop(0.1)
                if bare.is_connected():
                    break
            raise OSError("connected without a client certificate")  # reached only if it let us in
        for c in (a, b, cloud, wrong, anon):
            c.close()
    finally:
        broker.stop()


def test_rerunning_keeps_generated_passwords_and_the_hash_format(tmp_path: Path) -> None:
    spec = BrokerSpec.model_validate({"devices": [{"id": "A"}]})
    first = write_broker_config(spec, tmp_path / "b")
    creds1 = tomllib.loads(first.credentials.read_text())
    spec2 = BrokerSpec.model_validate({"devices": [{"id": "A"}, {"id": "C"}]})
    second = write_broker_config(spec2, tmp_path / "b")
    creds2 = tomllib.loads(second.credentials.read_text())
    assert second.generated == ("C",)
    assert creds2["devices"][0]["password"] == creds1["devices"][0]["password"]
    assert creds2["ingester"]["password"] == creds1["ingester"]["password"]
    for line in first.passwd.read_text().splitlines():
        _user, hashed = line.split(":", 1)
        assert hashed.startswith("$7$101$") and len(hashed.split("$")) == 5


@pytest.mark.parametrize(("content", "problem"), [
    ('[[devices]]\nid = "a/b"\n', "device id 'a/b' is not valid"),
    ('[[devices]]\nid = "A"\n[[devices]]\nid = "A"\n', "listed twice"),
    ('[[devices]]\nid = "ingest"\n', "also a device id"),
    ('[[devices]]\nname = "A"\n', "devices.0"),
    ("devices = [", "not valid TOML"),
])
def test_bad_devices_files_are_named(tmp_path: Path, content: str, problem: str) -> None:
    f = tmp_path / "fleet.toml"
    f.write_text(content)
    with pytest.raises(BrokerConfigError, match=problem):
        load_devices_file(f)


def test_cli_reports_a_bad_devices_file_on_one_line(tmp_path: Path) -> None:
    f = tmp_path / "fleet.toml"
    f.write_text('[[devices]]\nid = "x y"\n')
    r = subprocess.run([sys.executable, "-m", "edge_cli", "cloud", "broker-config", "--devices", str(f),
                        "-o", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.startswith("error: ") and "fleet.toml" in r.stderr and "Traceback" not in r.stderr
    json.dumps(r.stderr)


def test_home_assistant_gets_each_devices_own_discovery_and_nothing_spoofed(tmp_path: Path) -> None:
    """Under the generated ACL a device publishes its own discovery configs (retained), not another
    device's; the [home_assistant] user reads them and the states they name, and writes nothing."""
    from edge_device.agent import discovery_messages

    port = free_port()
    spec = BrokerSpec.model_validate({"devices": [{"id": "greenhouse.1", "password": "pw-1"},
                                                  {"id": "cam-2", "password": "pw-2"}],
                                      "home_assistant": {"password": "ha-pw"}})
    files = write_broker_config(spec, tmp_path / "broker", port=port, bind="127.0.0.1",
                                run_as="root" if os.geteuid() == 0 else None)
    assert tomllib.loads(files.credentials.read_text())["home_assistant"] == {"username": "homeassistant",
                                                                              "password": "ha-pw"}
    mine = discovery_messages("greenhouse.1", prefix="homeassistant", name=None, model_name="plants")
    theirs = discovery_messages("cam-2", prefix="homeassistant", name=None, model_name="spoofed")
    with Mosquitto(tmp_path / "broker", port=port, conf_file=files.conf):
        dev = RawClient(port, "greenhouse.1", username="greenhouse.1", password="pw-1")
        for topic, payload in [*mine, *theirs]:
            dev.client.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
        dev.publish("edge/greenhouse.1/status", b'{"state": "online"}')
        ha = RawClient(port, "ha", username="homeassistant", password="ha-pw")
        ha.publish("homeassistant/sensor/cam-2/label/config", b"{}")  # refused silently: HA writes nothing
        ha.subscribe("homeassistant/#")
        ha.subscribe("edge/+/status")
        wanted = {t for t, p in mine if p}
        wait_for(lambda: wanted <= {t for t, _ in ha.received}, 20, "the device's retained discovery configs")
        dev.publish("edge/greenhouse.1/status", b'{"state": "online", "marker": 1}')
        wait_for(lambda: any(b"marker" in p for _, p in ha.received), 20, "the device's status")
        got = {t for t, p in ha.received if t.startswith("homeassistant/")}
        assert got == wanted  # nothing of cam-2's, nothing HA wrote, no empty clears left retained
        assert all(json.loads(p)["device"]["model"] == "plants" for t, p in ha.received if t in wanted)
        dev.close()
        ha.close()
