"""`edge publish`, `edge registry list|promote|rollback` and the `serve` command, as subprocesses
against a real service."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from edge_device.client import CloudClient
from tests.support.cli import edge_against as edge
from tests.support.keys import Keys
from tests.support.net import free_port
from tests.support.paths import SHARED as DATA
from tests.support.service import ADMIN_TOKEN, MakeSigned, Running

ROOT = Path(__file__).resolve().parents[2]


def test_publish_list_promote_rollback(service: Running, make_signed: MakeSigned, tmp_path: Path) -> None:
    url = service.url
    r = edge("publish", str(make_signed(1)), "--registry", url, "--channel", "stable")
    assert r.returncode == 0, r.stderr
    assert "published mobilenet_v2 v1 on channel stable" in r.stdout
    # a bundle directory is packed on the way
    d = tmp_path / "v2"
    import tarfile

    with tarfile.open(make_signed(2)) as tf:
        tf.extractall(d, filter="data")
    r = edge("publish", str(d), "--registry", url, "--json", "--channel", "beta")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["version"] == 2
    r = edge("registry", "list", "--json", url=url)
    assert json.loads(r.stdout)[0]["channels"] == {"stable": 1, "beta": 2}
    r = edge("registry", "promote", "mobilenet_v2", "2", "--channel", "stable", url=url)
    assert r.returncode == 0 and "stable -> v2" in r.stdout
    r = edge("registry", "list", "mobilenet_v2", url=url)
    assert "v2" in r.stdout and "stable" in r.stdout
    r = edge("registry", "rollback", "mobilenet_v2", "--channel", "stable", url=url)
    assert r.returncode == 0 and "rolled back to v1" in r.stdout
    r = edge("registry", "rollback", "mobilenet_v2", "--channel", "stable", url=url)
    assert r.returncode == 1
    assert r.stderr.strip().startswith("error: HTTP 409 nothing_to_roll_back")
    assert "Traceback" not in r.stderr


def test_cli_errors_are_one_line(service: Running, make_signed: MakeSigned, tmp_path: Path) -> None:
    r = edge("publish", str(make_signed(3)), "--registry", service.url, token="wrong")
    assert r.returncode == 1 and "HTTP 401" in r.stderr and "Traceback" not in r.stderr
    assert "wrong" not in r.stderr
    r = edge("publish", str(make_signed(3)), "--registry", "http://127.0.0.1:1")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    unsigned = tmp_path / "u"
    import tarfile

    with tarfile.open(make_signed(3)) as tf:
        tf.extractall(unsigned, filter="data")
    (unsigned / "manifest.sig").unlink()
    r = edge("publish", str(unsigned), "--registry", service.url)
    assert r.returncode != 0 and "not signed" in r.stderr


def _serve(tmp_path: Path, keys: Keys, *extra: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    cfg = tmp_path / "cloud.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "data"}"\ntrusted_keys = ["{keys.public}"]\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGE_CLOUD_ADMIN_TOKEN": ADMIN_TOKEN}
    proc = subprocess.Popen([sys.executable, "-m", "edge_cli", "cloud", "serve", "--config", str(cfg),
                             "--port", str(port), "--log-level", "warning", *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 60
    while time.monotonic() < end and proc.poll() is None:
        try:
            if httpx.get(url + "/v2/health/ready", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    return proc, url


def test_edge_cloud_serve_runs_the_service(tmp_path: Path, keys: Keys, make_signed: MakeSigned) -> None:
    proc, url = _serve(tmp_path, keys)
    try:
        r = edge("publish", str(make_signed(1)), "--registry", url)
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "data" / "edge-cloud.db").exists()
        assert any((tmp_path / "data" / "bundles").rglob("*.tar.gz"))
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "dashboard /" in err


def test_edge_cloud_serve_with_several_workers(tmp_path: Path, keys: Keys, make_signed: MakeSigned) -> None:
    """Two worker processes (replicas) built from the same file and variables serve one registry."""
    proc, url = _serve(tmp_path, keys, "--workers", "2")
    try:
        r = edge("publish", str(make_signed(1)), "--registry", url, "--channel", "stable")
        assert r.returncode == 0, r.stderr
        client = CloudClient(url, ADMIN_TOKEN, timeout=60)
        for _ in range(6):  # whichever worker answers knows the model
            assert client.list_models()[0]["channels"] == {"stable": 1}
        assert client.classify(DATA / "images" / "cat.png", "mobilenet_v2")["top_k"][0]["label"] == "Egyptian cat"
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
