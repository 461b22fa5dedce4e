"""The installed product, end to end: the wheel in a fresh virtual environment, and nothing else.

A wheel is built from this checkout and installed (not editable) into a new venv together with the
locked cloud dependencies; from then on only that venv's ``edge`` script runs, from a directory
outside the checkout, so a file missing from the wheel (the dashboard, the installer) or an import
that only works from the source tree fails here. The journey is an operator's first day: keys, two
signed releases, the cloud service, a registered device, publish and promote, the device agent
following its channel from v1 to v2.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from tests.support.data import IMAGENET_LABELS as LABELS
from tests.support.data import IMAGES_DIR as IMAGES
from tests.support.data import MOBILENET_MODEL as MODEL
from tests.support.data import MOBILENET_TOP1, REFERENCE_IMAGES, ROOT
from tests.support.net import free_port

ADMIN_TOKEN = "journey-admin-token-0123456789abcdef"
NAME = "mobilenet_v2"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def wait_for(cond: Callable[[], Any], timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None,
             log: Path | None = None) -> Any:
    """Poll ``cond`` until it returns something truthy; fail naming ``what`` (and the process's log)."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        died = proc is not None and proc.poll() is not None
        if died or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
            why = f"exited with {proc.returncode}" if died and proc is not None else f"{timeout:.0f} s passed"
            pytest.fail(f"{why} while waiting for {what}\n{tail}")
        time.sleep(0.2)


def get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5)
    except httpx.TransportError:
        return None


@dataclass
class Installed:
    """A venv holding only the wheel and its locked dependencies, and a work directory outside the repo."""

    venv: Path
    work: Path
    env: dict[str, str]

    @property
    def edge_script(self) -> Path:
        return self.venv / "bin" / "edge"

    def edge(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(self.edge_script), *args], cwd=self.work, env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"edge {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}"
        return proc

    def start(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        out: IO[bytes] = log.open("wb")
        try:
            return subprocess.Popen([str(self.edge_script), *args], cwd=self.work, env={**self.env, **(env or {})},
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        finally:
            out.close()  # the child holds its own copy


def _pins(path: Path, keep: Callable[[str], bool]) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip() and keep(line)]


def _pip(python: Path, *args: str) -> None:
    proc = subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", *args], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"pip {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    from edge_deploy import build_wheel

    base = tmp_path_factory.mktemp("journey")
    wheel = build_wheel(base / "dist", root=ROOT)

    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
    python = venv / "bin" / "python"
    # The lock files pin every package, so nothing is resolved: the cloud set without its editable
    # checkout line, plus what the device agent needs beyond it (psutil; paho-mqtt is in both).
    reqs = _pins(ROOT / "requirements/cloud.txt", lambda line: not line.startswith(("-e", "#")))
    have = {line.split("==")[0] for line in reqs}
    reqs += _pins(ROOT / "requirements/test.txt",
                  lambda line: line.startswith(("paho-mqtt==", "psutil==")) and line.split("==")[0] not in have)
    (base / "requirements.txt").write_text("\n".join(reqs) + "\n")
    _pip(python, "install", "--quiet", "--no-deps", "-r", str(base / "requirements.txt"))
    _pip(python, "install", "--quiet", "--no-deps", str(wheel))
    # The wheel's own requirements are all met by the locked set.
    _pip(python, "check")

    work = base / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("EDGE_", "PYTHON", "VIRTUAL_ENV", "NOTIFY_SOCKET", "WATCHDOG_"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    inst = Installed(venv, work, env)

    # Proof that the checkout is out of reach: the packages come from the venv's site-packages.
    where = subprocess.run([str(python), "-c", "import edge_runtime, edge_cli, cloud_sync, edge_device; "
                            "print(edge_runtime.__file__); print(cloud_sync.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True)
    for line in where.stdout.splitlines():
        assert Path(line).is_relative_to(venv), line
    # What `edge pi` writes onto a card and install-on-pi.sh installs comes from the installed package.
    data = subprocess.run([str(python), "-c", "from edge_deploy import agent_unit, install_script; "
                           "print(install_script().splitlines()[0]); print(agent_unit().count('ExecStart='))"],
                          cwd=work, env=env, capture_output=True, text=True, check=True)
    assert data.stdout.split() == ["#!/usr/bin/env", "bash", "1"]
    return inst


@contextmanager
def running(proc: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def release(inst: Installed, version: int, key: Path) -> Path:
    out = inst.work / f"{NAME}-v{version}.tar.gz"
    inst.edge("bundle", str(MODEL), "--labels", str(LABELS), "--name", NAME, "--version", str(version),
              "--sample", str(IMAGES / "cat.png"), "--expires", "90d", "--sign-key", str(key), "-o", str(out))
    return out


def test_the_installed_wheel_takes_a_model_from_the_desk_to_a_device(installed: Installed) -> None:
    inst, work = installed, installed.work

    # -- keys and two signed releases ------------------------------------------------------------
    inst.edge("keys", "generate", "--out", str(work / "keys"))
    private, public = work / "keys/edge_signing.key", work / "keys/edge_signing.pub"
    v1, v2 = release(inst, 1, private), release(inst, 2, private)
    inst.edge("verify", str(v1), "--pubkey", str(public))

    # -- the cloud service, from the installed package ---------------------------------------------
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve_log = work / "serve.log"
    # The admin token in the service's config file, where an operator keeps it out of the process list.
    cloud_toml = work / "cloud.toml"
    cloud_toml.write_text(f'admin_token = "{ADMIN_TOKEN}"\n')
    cloud_toml.chmod(0o600)
    serve = inst.start(["cloud", "serve", "--config", str(cloud_toml), "--host", "127.0.0.1", "--port", str(port),
                        "--data-dir", str(work / "cloud"), "--trusted-key", str(public), "--log-level", "warning"],
                       serve_log)
    admin = {"EDGE_REGISTRY_URL": url, "EDGE_REGISTRY_TOKEN": ADMIN_TOKEN}
    with running(serve):
        wait_for(lambda: (r := get(url + "/v2/health/live")) is not None and r.status_code == 200, 120,
                 "the cloud service to answer", serve, serve_log)
        page = httpx.get(url + "/", timeout=10)
        assert page.status_code == 200 and "<html" in page.text.lower()
        for asset in ("/static/dashboard.js", "/static/dashboard.css"):
            assert asset in page.text, asset
            r = httpx.get(url + asset, timeout=10)
            assert r.status_code == 200 and r.content, asset
        docs = httpx.get(url + "/docs", timeout=10)
        assert docs.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in docs.text
        assert httpx.get(url + "/docs-assets/swagger-ui-bundle.js", timeout=10).status_code == 200
        assert httpx.get(url + "/openapi.json", timeout=10).json()["paths"]

        # -- a device, v1 on its channel -----------------------------------------------------------
        added = inst.edge("devices", "add", "dev1", "--channel", "stable", "--model", NAME, "--json", env=admin)
        device = json.loads(added.stdout)
        assert (device["id"], device["channel"], device["model"]) == ("dev1", "stable", NAME)
        token_file = work / "device.token"
        token_file.write_text(device["token"] + "\n")
        token_file.chmod(0o600)

        inst.edge("publish", str(v1), env=admin)
        inst.edge("registry", "promote", NAME, "1", "--channel", "stable", env=admin)

        # -- the device agent ------------------------------------------------------------------------
        frames = work / "frames"
        frames.mkdir()
        for name in REFERENCE_IMAGES:
            shutil.copy(IMAGES / name, frames / name)
        http_port = free_port()
        records = work / "records.jsonl"
        config = work / "agent.toml"
        config.write_text(f"""\
device_id = "dev1"
state_dir = "state"
outputs = ["{records}"]

[model]
bundle = "{v1}"
trusted_keys = ["{public}"]
threads = 1

[source]
spec = "{frames}"
repeat = true

[cloud]
url = "{url}"
token_file = "{token_file}"
timeout_s = 30

[telemetry]
enabled = false

[updates]
poll_interval_s = 0.5
probation_frames = 5

[http]
enabled = true
port = {http_port}
""")
        inst.edge("agent", "check-config", "--config", str(config))
        agent_log = work / "agent.log"
        agent = inst.start(["agent", "--config", str(config)], agent_log)
        health_url = f"http://127.0.0.1:{http_port}/health"

        def serving() -> int | None:
            r = get(health_url)
            if r is None or r.status_code != 200:
                return None
            model = r.json().get("model") or {}
            return model.get("version")

        with running(agent):
            assert wait_for(serving, 180, "the agent to serve v1", agent, agent_log) == 1

            # -- v2 goes out on the channel; the agent follows it --------------------------------------
            inst.edge("publish", str(v2), env=admin)
            inst.edge("registry", "promote", NAME, "2", "--channel", "stable", env=admin)
            wait_for(lambda: serving() == 2, 180, "the agent to switch to v2", agent, agent_log)

            status = json.loads(inst.edge("agent", "status", "--config", str(config), "--json").stdout)
            assert status["current"]["version"] == 2 and status["agent_pid"] == agent.pid

            def cat_on_v2() -> dict[str, Any] | None:
                rows = [json.loads(line) for line in records.read_text().splitlines() if line.strip()]
                return next((r for r in rows if (r.get("model") or {}).get("version") == 2
                             and str(r.get("source", "")).endswith("cat.png") and r.get("top_k")), None)

            cat = wait_for(cat_on_v2, 60, "v2 to classify cat.png", agent, agent_log)
            assert cat["top_k"][0]["label"] == MOBILENET_TOP1["cat.png"] and cat["path"] == "local"

            agent.terminate()
            assert agent.wait(timeout=60) == 0, agent_log.read_text(errors="replace")[-3000:]
