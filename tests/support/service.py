"""The cloud service under uvicorn, two ways: in a thread of the test process (``run_service``:
fast, the test can look at the app's settings) and as a subprocess (``CloudService``: a test can
SIGKILL it and start it again on the same port, as a crashed host would)."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Self

from tests.support.net import free_port, port_open, stop_process, wait_for
from tests.support.paths import env_with_project

if TYPE_CHECKING:
    from cloud_sync.service import ServiceSettings

__all__ = ["ADMIN_TOKEN", "CloudService", "MakeSigned", "NewDatabase", "Running", "make_bucket", "run_service"]

ADMIN_TOKEN = "admin-token-for-tests-0123456789"

#: the ``make_signed`` fixture: ``make_signed(version=1, name="mobilenet_v2", key=None)`` -> a .tar.gz
MakeSigned = Callable[..., Path]
#: the ``postgres`` fixture called: a fresh database's URL
NewDatabase = Callable[[], str]


def _live(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/v2/health/live", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@dataclass
class Running:
    url: str
    settings: ServiceSettings
    server: object
    thread: threading.Thread


@contextlib.contextmanager
def run_service(settings: ServiceSettings, *, log_level: str = "warning") -> Iterator[Running]:
    """The real app under a real uvicorn server on a free port, in a thread."""
    import uvicorn

    from cloud_sync.service import create_app

    app = create_app(settings)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level=log_level, lifespan="on")
    server = uvicorn.Server(config)
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if not t.is_alive():
            raise RuntimeError("service did not start")
        return _live(url)

    wait_for(up, 30, f"the cloud service on port {port}")
    try:
        yield Running(url, settings, server, t)
    finally:
        server.should_exit = True
        t.join(timeout=20)


class CloudService:
    """``uvicorn --factory cloud_sync.service:create_app_from_env`` on a fixed port, restartable."""

    description = "the cloud service"

    def __init__(self, data_dir: Path, trusted_keys: list[Path], *, mqtt_port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        from cloud_sync.service import ENV_PREFIX

        # Settings as variables: what the service's factory reads under uvicorn --factory.
        settings = {"data_dir": str(data_dir), "admin_token": ADMIN_TOKEN,
                    "trusted_keys": json.dumps([str(k) for k in trusted_keys]), "max_batch_wait_ms": "1"}
        if mqtt_port is not None:
            settings.update({"mqtt_host": "127.0.0.1", "mqtt_port": str(mqtt_port)})
        self.env = env_with_project()
        self.env.update({f"{ENV_PREFIX}{name.upper()}": value for name, value in settings.items()})
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log_path = data_dir.parent / f"service-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "uvicorn", "--factory", "cloud_sync.service:create_app_from_env",
                "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]

    def start(self) -> Self:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.command(), env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     cwd=self.data_dir.parent)
        log.close()
        self.starts += 1
        wait_for(self._live, 60, f"{self.description} on port {self.port}", interval=0.05)
        return self

    def _live(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"the cloud service exited with {self.proc.returncode}")
        return _live(self.url)

    def kill(self) -> None:
        """SIGKILL: the service vanishes mid-whatever, as a crashed host would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None
        wait_for(lambda: not port_open(self.port), 10, "the killed service's port to close")

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


def make_bucket(endpoint: str, name: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=name)
