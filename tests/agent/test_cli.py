"""`edge agent install | status | rollback`: every kind of bad bundle is refused with its reason and
the device keeps what it had; a rollback by hand reaches the running agent between two frames."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

from edge_runtime import pack_bundle, safe_extract
from tests.support.agent import agent_config, write_config
from tests.support.net import wait_for
from tests.support.paths import ROOT, env_with_project


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_cli", "agent", *args], capture_output=True, text=True,
                          env=env_with_project(), cwd=ROOT, timeout=120)


def status(config: Path) -> dict:
    r = cli("status", "--config", str(config), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def tampered(src: Path, tmp: Path, name: str, change) -> Path:  # type: ignore[no-untyped-def]
    d = tmp / f"{name}.d"
    safe_extract(src, d)
    change(d)
    return pack_bundle(d, tmp / f"{name}.tar.gz")


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01
    path.write_bytes(bytes(data))


def bump_version(d: Path) -> None:
    m = json.loads((d / "manifest.json").read_text())
    m["version"] = 99
    (d / "manifest.json").write_text(json.dumps(m))


def escaping_archive(tmp: Path) -> Path:
    out = tmp / "escape.tar.gz"
    with tarfile.open(out, "w:gz") as tf:
        data = b"owned"
        info = tarfile.TarInfo("../../outside.txt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return out


def test_install_refuses_every_kind_of_bad_bundle_and_keeps_serving(tmp_path: Path, keys, release,
                                                                    images_dir: Path) -> None:
    config = write_config(tmp_path / "agent.toml", agent_config(
        tmp_path, device_id="cli-1", bundle=release(1), keys=keys, source=str(images_dir)))
    ok = cli("install", str(release(2)), "--config", str(config))
    assert ok.returncode == 0, ok.stderr
    assert "installed v2" in ok.stdout
    cases = {
        "a file changed after signing": (tampered(release(3), tmp_path, "file", lambda d: flip_byte(d / "labels.txt")),
                                         "integrity", "labels.txt sha256"),
        "the manifest changed after signing": (tampered(release(3), tmp_path, "manifest", bump_version),
                                               "signature", "signature does not match"),
        "unsigned": (release(3, kind="unsigned"), "signature", "is not signed"),
        "signed by another key": (release(3, key="other"), "signature", "signature does not match"),
        "expired": (release(3, expires="2001-01-01T00:00:00Z"), "expired", "expired at 2001-01-01"),
        "no expiry date": (release(3, expires=None), "expired", "has no expiry date"),
        "no samples to check": (release(3, kind="no-samples"), "no-samples", "has no sample inputs"),
        "wrong answer on its sample": (release(4, kind="bad-labels"), "health", "its manifest expects 'Egyptian cat'"),
        "older": (release(1), "downgrade", "version 1 is not newer than version 2"),
        "the same version again": (release(2), "downgrade", "version 2 is not newer than version 2"),
        "an archive escaping its folder": (escaping_archive(tmp_path), "integrity", "escapes the target directory"),
        "not an archive": (tmp_path / "junk.tar.gz", "integrity", "not a readable .tar.gz"),
    }
    (tmp_path / "junk.tar.gz").write_bytes(b"\x1f\x8b this is not gzip data at all")
    for what, (bundle, reason, text) in cases.items():
        r = cli("install", str(bundle), "--config", str(config))
        assert r.returncode == 1, (what, r.stdout, r.stderr)
        assert f"refused ({reason})" in r.stderr and text in r.stderr, (what, r.stderr)
        assert "Traceback" not in r.stderr, what
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path.parent / "outside.txt").exists()
    st = status(config)
    assert st["current"] == {"dir": "v2", "version": 2} and st["previous"] == {"dir": "v1", "version": 1}
    assert st["startup"]["version"] == 2 and st["startup"]["fallbacks"] == []
    # only the bundle that failed its health check is remembered as bad (its signed content never
    # changes); the others, refused by policy (no samples, no expiry) or for a broken copy, may come
    # back fixed under the same version. Nothing was left behind.
    assert set(st["bad_versions"]) == {"4"}
    assert st["installed"] == ["v1", "v2"]
    staging = Path(st["state_dir"]) / "staging"
    assert not [p for p in staging.iterdir() if not p.name.startswith(".")]


def test_rollback_by_hand_reaches_the_running_agent(tmp_path: Path, keys, release, images_dir: Path) -> None:
    out = tmp_path / "records.jsonl"
    cfg = agent_config(tmp_path, device_id="cli-2", bundle=release(1), keys=keys, source=str(images_dir),
                       outputs=[str(out)], updates={"enabled": False, "probation_frames": 1_000_000})
    cfg["source"] = {"spec": str(images_dir), "repeat": True}
    config = write_config(tmp_path / "agent.toml", cfg)
    assert cli("install", str(release(2)), "--config", str(config)).returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "edge_cli", "agent", "--config", str(config)],
                            env=env_with_project(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(proc.stderr or []), daemon=True).start()
    try:
        wait_for(lambda: any("event agent_started" in line for line in log) or proc.poll() is not None, 60, "start")
        assert status(config)["agent_pid"] == proc.pid
        wait_for(lambda: out.exists() and len(out.read_text().splitlines()) > 10, 30, "frames on v2")
        r = cli("rollback", "--config", str(config), "--reason", "wrong labels in the field")
        assert r.returncode == 0, r.stderr
        assert f"rolled back from v2 to v1; v2 is marked bad; agent pid {proc.pid} told to switch" in r.stdout
        wait_for(lambda: any("event rolled_back" in line for line in log), 30, "the agent to switch")

        def versions() -> list[int]:
            return [json.loads(line)["model"]["version"] for line in out.read_text().splitlines() if line]

        wait_for(lambda: versions().count(1) > 10, 30, "frames on v1")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(len(records)))  # not a frame lost in the switch
    v = [r["model"]["version"] for r in records]
    k = v.index(1)
    assert set(v[:k]) == {2} and set(v[k:]) == {1}
    st = status(config)
    assert st["current"]["version"] == 1
    assert st["bad_versions"] == {"2": "rolled back by hand: wrong labels in the field"}
    assert st["agent_pid"] is None and st["installed"] == ["v1"]
    # nothing left to roll back to: a clear error, not a traceback
    again = cli("rollback", "--config", str(config))
    assert again.returncode == 1 and "nothing to roll back to" in again.stderr and "Traceback" not in again.stderr
    # and v2 is never installed again
    refused = cli("install", str(release(2)), "--config", str(config))
    assert refused.returncode == 1 and "refused (bad-version)" in refused.stderr


def test_status_without_a_state_directory_and_with_a_missing_bundle(tmp_path: Path, keys, release,
                                                                    images_dir: Path) -> None:
    config = write_config(tmp_path / "agent.toml", agent_config(
        tmp_path, device_id="cli-3", bundle=release(1), keys=keys, source=str(images_dir)))
    st = status(config)  # a first start would adopt the configured bundle
    assert st["current"] is None and st["startup"]["chosen"] == "config" and st["startup"]["version"] == 1
    broken = write_config(tmp_path / "broken.toml", agent_config(
        tmp_path, device_id="cli-4", bundle=tmp_path / "gone.tar.gz", keys=keys, source=str(images_dir)))
    r = cli("status", "--config", str(broken))
    assert r.returncode == 1 and "gone.tar.gz: no such bundle" in r.stderr and "Traceback" not in r.stderr
