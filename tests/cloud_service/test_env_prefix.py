"""The cloud side's settings come from EDGE_CLOUD_* variables, the device's from EDGE_*: on a
machine that runs both, neither takes the other's value (EDGE_MQTT_PASSWORD is the device's)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cloud_sync.service import CONFIG_ENV, ServiceSettings, create_app_from_env, legacy_env_names
from edge_device.agent import load_config
from tests.support.paths import env_with_project

TOKEN = "cloud-admin-token-0123456789"


def test_the_service_reads_edge_cloud_variables_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGE_MQTT_PASSWORD", "the-device-password")
    monkeypatch.setenv("EDGE_ADMIN_TOKEN", "an-old-name-nobody-reads-now")
    monkeypatch.setenv("EDGE_MAX_BATCH_SIZE", "3")
    s = ServiceSettings(data_dir=tmp_path)
    assert s.mqtt_password is None and s.admin_hash is None and s.max_batch_size == 16

    monkeypatch.setenv("EDGE_CLOUD_MQTT_PASSWORD", "the-service-password")
    monkeypatch.setenv("EDGE_CLOUD_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("EDGE_CLOUD_TRUSTED_KEYS", '["a.pub"]')
    s = ServiceSettings(data_dir=tmp_path)
    assert s.mqtt_password is not None and s.mqtt_password.get_secret_value() == "the-service-password"
    assert s.admin_token is not None and s.admin_token.get_secret_value() == TOKEN
    assert s.trusted_keys == [Path("a.pub")]


def test_variables_override_the_toml_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "cloud.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "data"}"\nmax_batch_size = 4\n')
    monkeypatch.setenv("EDGE_CLOUD_MAX_BATCH_SIZE", "8")
    assert ServiceSettings.from_toml(cfg).max_batch_size == 8
    # What `edge cloud serve --workers N` hands its workers: the file's path under EDGE_CLOUD_CONFIG.
    monkeypatch.setenv(CONFIG_ENV, str(cfg))
    monkeypatch.setenv("EDGE_CLOUD_ADMIN_TOKEN", TOKEN)
    app = create_app_from_env()
    settings = app.state.service.settings
    assert (settings.data_dir, settings.max_batch_size) == (tmp_path / "data", 8)
    assert settings.admin_token.get_secret_value() == TOKEN


def test_old_service_names_are_named_with_their_new_ones() -> None:
    env = {"EDGE_ADMIN_TOKEN": "x", "EDGE_SERVICE_CONFIG": "c.toml", "EDGE_OUTBOX": "o.db",
           "EDGE_CLOUD_ADMIN_TOKEN": "y"}
    assert legacy_env_names(env) == {"EDGE_ADMIN_TOKEN": "EDGE_CLOUD_ADMIN_TOKEN",
                                     "EDGE_SERVICE_CONFIG": "EDGE_CLOUD_CONFIG"}


def test_the_device_agent_ignores_the_cloud_variables(tmp_path: Path) -> None:
    p = tmp_path / "agent.toml"
    p.write_text('device_id = "dev-1"\nstate_dir = "state"\n[model]\nbundle = "b.tar.gz"\n'
                 'trusted_keys = ["k.pub"]\n[source]\nspec = "0"\n')
    env = {"EDGE_CLOUD_MQTT_PASSWORD": "s", "EDGE_CLOUD_DATABASE_URL": "sqlite://", "EDGE_CLOUD_ADMIN_TOKEN": TOKEN,
           "EDGE_CLOUD_DATA_DIR": "/srv/edge"}
    cfg = load_config(p, environ=env)
    assert cfg.device_id == "dev-1"


def test_the_ingester_reads_its_broker_from_edge_cloud_mqtt_url(tmp_path: Path) -> None:
    env = env_with_project()

    def ingest(extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "edge_cli", "cloud", "ingest", "--stats-interval", "0"],
                              env={**env, **extra}, cwd=tmp_path, capture_output=True, text=True, timeout=60)

    # The device's variable is not the ingester's: without EDGE_CLOUD_MQTT_URL --mqtt is missing.
    r = ingest({"EDGE_MQTT_URL": "mqtt://127.0.0.1:1"})
    assert r.returncode == 2 and "--mqtt" in r.stderr
    # An unusable value proves the variable was read (and fails before any connection).
    r = ingest({"EDGE_CLOUD_MQTT_URL": "http://broker:1883"})
    assert r.returncode == 1 and "scheme must be mqtt:// or mqtts://" in r.stderr, r.stderr


def test_the_ingesters_broker_password_never_falls_back_to_the_devices(monkeypatch) -> None:
    from edge_device.telemetry import MqttConfig
    from edge_device.telemetry._mqtt import _read_password

    monkeypatch.setenv("EDGE_MQTT_PASSWORD", "device-secret")
    monkeypatch.delenv("EDGE_CLOUD_MQTT_PASSWORD", raising=False)
    device = MqttConfig(url="mqtt://u@broker:1883")
    ingester = MqttConfig(url="mqtt://u@broker:1883", password_env="EDGE_CLOUD_MQTT_PASSWORD")
    assert _read_password(device) == "device-secret"
    assert _read_password(ingester) is None
    monkeypatch.setenv("EDGE_CLOUD_MQTT_PASSWORD", "cloud-secret")
    assert _read_password(ingester) == "cloud-secret"
