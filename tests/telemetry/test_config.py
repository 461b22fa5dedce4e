"""Settings validation (no I/O) and the reconnect backoff."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from edge_device.telemetry import (
    MqttConfig,
    TelemetryConfig,
    TelemetryConfigError,
    backoff_delay,
    check_mqtt_files,
    open_telemetry,
)


@pytest.mark.parametrize(("url", "problem"), [
    ("http://broker:1883", "scheme must be mqtt"),
    ("mqtt://:1883", "no host"),
    ("mqtt://broker:99999", "bad port"),
    ("mqtt://broker:1883/topic", "no path"),
])
def test_bad_broker_urls_are_named(url: str, problem: str) -> None:
    with pytest.raises(TelemetryConfigError, match=problem):
        TelemetryConfig.build(device_id="d1", mqtt={"url": url})


def test_url_parts_and_defaults() -> None:
    plain = MqttConfig(url="mqtt://broker")
    assert (plain.host, plain.port, plain.tls) == ("broker", 1883, False)
    tls = MqttConfig(url="mqtts://u:p%40ss@broker")
    assert (tls.port, tls.tls, tls.user, tls.url_password) == (8883, True, "u", "p@ss")
    assert "p%40ss" not in tls.safe_url and "p@ss" not in tls.safe_url


@pytest.mark.parametrize(("mqtt", "problem"), [
    ({"url": "mqtt://b", "ca_file": "ca.pem"}, "use mqtts://"),
    ({"url": "mqtts://b", "key_file": "k.pem"}, "key_file is set without cert_file"),
    ({"url": "mqtt://b", "password": "x"}, "needs a user name"),
    ({"url": "mqtt://b", "username": "u", "password": "x", "password_file": "f"}, "not both"),
    ({"url": "mqtt://b", "unknown": 1}, "Extra inputs are not permitted"),
])
def test_inconsistent_mqtt_settings(mqtt: dict, problem: str) -> None:
    with pytest.raises(TelemetryConfigError, match=problem):
        TelemetryConfig.build(device_id="d1", mqtt=mqtt)


@pytest.mark.parametrize("device_id", ["", "a/b", "a+b", "dev#", "x" * 65, "-lead", "a b"])
def test_device_ids_that_cannot_be_a_topic_level(device_id: str) -> None:
    with pytest.raises(TelemetryConfigError, match="device id"):
        TelemetryConfig.build(device_id=device_id, mqtt={"url": "mqtt://b"})


def test_batch_must_fit_the_outbox() -> None:
    with pytest.raises(TelemetryConfigError, match="batch.max_records"):
        TelemetryConfig.build(device_id="d", mqtt={"url": "mqtt://b"}, outbox={"max_rows": 100},
                              batch={"max_records": 500})


def test_missing_tls_file_fails_at_startup_with_its_name(tmp_path: Path) -> None:
    cfg = MqttConfig(url="mqtts://b", ca_file=tmp_path / "missing-ca.pem")
    with pytest.raises(TelemetryConfigError, match="missing-ca.pem: no such file"):
        check_mqtt_files(cfg)
    with pytest.raises(TelemetryConfigError, match="missing-ca.pem"):
        open_telemetry("mqtts://b", "d1", tmp_path / "o.db", ca_file=tmp_path / "missing-ca.pem")
    assert not (tmp_path / "o.db").exists()


def test_backoff_grows_exponentially_is_capped_and_jittered() -> None:
    rng = random.Random(7)
    for attempt in range(12):
        step = min(30.0, 0.5 * 2**attempt)
        samples = [backoff_delay(attempt, 0.5, 30.0, rng) for _ in range(200)]
        assert all(step / 2 <= s <= step for s in samples)
        assert max(samples) - min(samples) > step / 4  # spread: a fleet does not reconnect in lockstep


def test_importing_telemetry_does_not_import_paho_or_the_cloud() -> None:
    import subprocess

    code = ("import sys, edge_device.telemetry; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('paho', 'sqlalchemy', 'fastapi', 'torch')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stdout + r.stderr
