"""agent.toml: every kind of mistake gets an error naming the key; EDGE_* overrides; secrets from
files and the environment; `edge agent check-config`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge_device.agent import AgentConfigError, load_config
from tests.support.agent import toml_dumps
from tests.support.paths import ROOT, env_with_project

BASE = {
    "device_id": "dev-1",
    "state_dir": "state",
    "model": {"bundle": "bundle.tar.gz", "trusted_keys": ["keys/release.pub"]},
    "source": {"spec": "0"},
}


def write(tmp_path: Path, data: dict, name: str = "agent.toml") -> Path:
    p = tmp_path / name
    p.write_text(toml_dumps(data))
    return p


def err(tmp_path: Path, data: dict, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(AgentConfigError) as e:
        load_config(write(tmp_path, data), environ=environ or {})
    return str(e.value)


def test_minimal_config_and_paths_relative_to_the_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE), environ={})
    assert cfg.device_id == "dev-1"
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.model.bundle == tmp_path / "bundle.tar.gz"
    assert cfg.model.trusted_keys == [tmp_path / "keys" / "release.pub"]
    assert cfg.router.mode == "offline" and not cfg.updates_active and not cfg.telemetry.active
    assert cfg.outbox_path == tmp_path / "state" / "outbox.db"


@pytest.mark.parametrize(("patch", "expected"), [
    ({"router": {"mode": "fast"}}, "router.mode: Input should be 'offline', 'online' or 'cascade' (got 'fast')"),
    ({"router": {"threshold": 1.5}}, "router.threshold: Input should be less than or equal to 1 (got 1.5)"),
    ({"router": {"mdoe": "online"}}, "router.mdoe: unknown key; did you mean 'mode'?"),
    ({"router": {"breaker": {"backoff_s": 10, "backoff_max_s": 1}}},
     "router.breaker: backoff_max_s must be >= backoff_s"),
    ({"device_id": "a/b"}, "device_id: device id 'a/b' is not valid"),
    ({"router": {"mode": "online"}}, "router.mode = 'online' needs cloud.url"),
    ({"cloud": {"url": "ftp://x"}}, "cloud.url: 'ftp://x' must look like http(s)://host[:port]"),
    ({"cloud": {"url": "http://x", "token": "t", "token_file": "f"}}, "cloud: give token or token_file, not both"),
    ({"cloud": {"url": "http://x"}, "model": {"bundle": "b", "trusted_keys": []}},
     "updates need model.trusted_keys"),
    ({"http": {"port": 70000}}, "http.port: Input should be less than or equal to 65535 (got 70000)"),
    ({"source": {"spec": None, "repeat": "sometimes"}}, "source.repeat: Input should be a valid boolean"),
    ({"updates": {"probation_frames": 0}}, "updates.probation_frames: Input should be greater than or equal to 1"),
    ({"home_assistant": {"enabled": True}}, "home_assistant.enabled needs telemetry.mqtt_url"),
])
def test_each_mistake_names_its_key(tmp_path: Path, patch: dict, expected: str) -> None:
    data = {**BASE, **{k: ({**BASE.get(k, {}), **v} if isinstance(v, dict) and isinstance(BASE.get(k), dict) else v)
                       for k, v in patch.items()}}
    msg = err(tmp_path, data)
    assert expected in msg, msg
    assert "agent.toml: invalid agent config" in msg


def test_unknown_top_level_key_and_missing_sections(tmp_path: Path) -> None:
    msg = err(tmp_path, {**BASE, "routr": {"mode": "online"}})
    assert "routr: unknown key; did you mean 'router'?" in msg
    msg = err(tmp_path, {"device_id": "dev-1", "model": BASE["model"], "source": {}})
    assert "source.spec: missing (required)" in msg


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "agent.toml"
    p.write_text('device_id = "x"\n[model\n')
    with pytest.raises(AgentConfigError, match=r"agent.toml: not valid TOML: .*line 2"):
        load_config(p, environ={})
    with pytest.raises(AgentConfigError, match="no such config file"):
        load_config(tmp_path / "nope.toml", environ={})


def test_environment_overrides_and_names_the_variable(tmp_path: Path) -> None:
    env = {"EDGE_ROUTER__MODE": "cascade", "EDGE_ROUTER__THRESHOLD": "0.8", "EDGE_CLOUD__URL": "http://cloud:8000",
           "EDGE_UPDATES__ENABLED": "false", "EDGE_DEVICE_ID": "dev-2", "EDGE_CLOUD_TOKEN": "s3cret",
           # somebody else's variables are left alone
           "EDGE_OUTBOX": "/tmp/x.db", "EDGE_DATABASE_URL": "sqlite://"}
    cfg = load_config(write(tmp_path, BASE), environ=env)
    assert (cfg.router.mode, cfg.router.threshold, cfg.device_id) == ("cascade", 0.8, "dev-2")
    assert cfg.cloud.url == "http://cloud:8000" and not cfg.updates_active
    assert cfg.cloud_token() == "s3cret"
    msg = err(tmp_path, BASE, environ={"EDGE_ROUTER__DEADLINE_MS": "-5"})
    assert "router.deadline_ms: Input should be greater than 0 (got -5) [from EDGE_ROUTER__DEADLINE_MS]" in msg


def test_secrets_from_files_are_read_at_start_and_never_echoed(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("device-token\n")
    data = {**BASE, "cloud": {"url": "http://x", "token_file": "token"}, "updates": {"enabled": False}}
    cfg = load_config(write(tmp_path, data), environ={})
    assert cfg.cloud_token() == "device-token"
    (tmp_path / "token").unlink()
    with pytest.raises(AgentConfigError, match="cloud.token_file .*token: cannot read"):
        cfg.cloud_token()
    # a wrong token type does not print the secret
    msg = err(tmp_path, {**BASE, "cloud": {"url": "http://x", "token": ["s3cret-value"]}})
    assert "cloud.token" in msg and "s3cret-value" not in msg


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_cli", *args], capture_output=True, text=True,
                          env=env_with_project(), cwd=ROOT, timeout=120)


def test_the_example_config_is_valid(tmp_path: Path) -> None:
    r = run_cli("agent", "example-config")
    assert r.returncode == 0
    p = tmp_path / "agent.toml"
    p.write_text(r.stdout)
    cfg = load_config(p, environ={})
    assert (cfg.device_id, cfg.router.mode, cfg.router.breaker.backoff_max_s) == ("greenhouse-1", "cascade", 120)
    assert cfg.updates_active and cfg.telemetry.active and cfg.http.enabled
    assert cfg.telemetry.password_file == Path("/etc/edge/mqtt.password")


def test_check_config_cli(tmp_path: Path, keys: tuple[Path, Path], release) -> None:
    data = {**BASE, "model": {"bundle": str(release(1)), "trusted_keys": [str(keys[1])]}}
    ok = run_cli("agent", "check-config", "--config", str(write(tmp_path, data)))
    assert ok.returncode == 0, ok.stderr
    assert "ok: device dev-1, offline mode" in ok.stdout
    bad_key = tmp_path / "not-a-key.pub"
    bad_key.write_text("hello")
    data = {**BASE, "model": {"bundle": str(tmp_path / "missing.tar.gz"), "trusted_keys": [str(bad_key)]},
            "router": {"mode": "online"}, "cloud": {"url": "http://x", "token_file": "nope"},
            "updates": {"enabled": False}}
    bad = run_cli("agent", "check-config", "--config", str(write(tmp_path, data, "bad.toml")))
    assert bad.returncode == 1
    assert "not a PEM public key" in bad.stderr and "missing.tar.gz: no such bundle" in bad.stderr
    assert "cloud.token_file" in bad.stderr and "Traceback" not in bad.stderr
    invalid = run_cli("agent", "check-config", "--config", str(write(tmp_path, {**BASE, "router": {"mode": 3}},
                                                                       "invalid.toml")))
    assert invalid.returncode == 1 and "router.mode: Input should be" in invalid.stderr
    assert "Traceback" not in invalid.stderr
