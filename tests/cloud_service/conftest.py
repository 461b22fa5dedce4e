"""Fixtures for the cloud service tests: real uvicorn on a free port, real PostgreSQL (a throwaway
cluster), real signed bundles of the shared MobileNet V2, real images."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import edge_runtime
from cloud_sync.service import ServiceSettings
from edge_runtime import generate_keypair, load_private_key, load_public_key

MakeSigned = Callable[..., Path]
NewDatabase = Callable[[], str]

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
MODEL = DATA / "models" / "mobilenet_v2_1.0_224_quant.tflite"
LABELS = DATA / "labels" / "imagenet_labels.txt"
IMAGES = {
    "cat.png": "Egyptian cat",
    "grace_hopper.png": "military uniform",
    "sunflower.png": "daisy",
    "potato_chips.png": "packet",
}
ADMIN_TOKEN = "admin-token-for-tests-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Keys:
    private: Path
    public: Path


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    d = tmp_path_factory.mktemp("keys")
    priv, pub = generate_keypair(d)
    return Keys(priv, pub)


@pytest.fixture(scope="session")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    d = tmp_path_factory.mktemp("otherkeys")
    priv, pub = generate_keypair(d)
    return Keys(priv, pub)


@pytest.fixture(scope="session")
def labels() -> list[str]:
    return LABELS.read_text().splitlines()


@pytest.fixture(scope="session")
def make_signed(tmp_path_factory: pytest.TempPathFactory, keys: Keys, labels: list[str]) -> Callable[..., Path]:
    """A signed MobileNet V2 bundle archive with the given version (and name)."""
    out_dir = tmp_path_factory.mktemp("bundles")
    cache: dict[tuple[str, int, str], Path] = {}

    def make(version: int = 1, name: str = "mobilenet_v2", key: Path | None = None) -> Path:
        k = (name, version, str(key or keys.private))
        if k not in cache:
            out = out_dir / f"{name}-v{version}-{len(cache)}.tar.gz"
            edge_runtime.make_bundle(MODEL, out, name=name, version=version, labels=labels,
                                     preprocess={"size": (224, 224)}, sign_key=load_private_key(key or keys.private))
            cache[k] = out
        return cache[k]

    return make


@dataclass
class Running:
    url: str
    settings: ServiceSettings
    server: object
    thread: threading.Thread


@contextlib.contextmanager
def run_service(settings: ServiceSettings, *, log_level: str = "warning") -> Iterator[Running]:
    """The real app under a real uvicorn server on a free port, in a thread."""
    import httpx
    import uvicorn

    from cloud_sync.service import create_app

    app = create_app(settings)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level=log_level, lifespan="on")
    server = uvicorn.Server(config)
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/v2/health/live", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or not t.is_alive():
            raise RuntimeError("service did not start")
        time.sleep(0.05)
    try:
        yield Running(url, settings, server, t)
    finally:
        server.should_exit = True
        t.join(timeout=20)


# -- PostgreSQL ----------------------------------------------------------------------------------
def _pg_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    for cand in (shutil.which(name), f"/usr/local/bin/{name}", *found):
        if cand and Path(cand).exists():
            return str(cand)
    raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install -y postgresql)")


@pytest.fixture(scope="session")
def postgres() -> Iterator[Callable[[], str]]:
    """A throwaway PostgreSQL cluster on a free port, run as the 'postgres' user (it refuses root).
    Yields a function that creates a fresh database and returns its URL."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    base = Path(tempfile.mkdtemp(prefix="edge-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    user = "postgres"
    runas: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, user)
        shutil.chown(sock, user)
        os.chmod(base, 0o700)
        runas = ["runuser", "-u", user, "--"]
    port = free_port()
    subprocess.run([*runas, initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
                   check=True, capture_output=True)
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run([*runas, pg_ctl, "-D", str(data), "-o", opts, "-w", "-l", str(base / "log"), "start"],
                   check=True, capture_output=True)
    try:
        import psycopg

        made = [0]

        def new_db() -> str:
            made[0] += 1
            name = f"edge{made[0]}"
            with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres",
                                 autocommit=True) as c:
                c.execute(f"CREATE DATABASE {name}")
            return f"postgresql+psycopg://postgres@127.0.0.1:{port}/{name}"

        yield new_db
    finally:
        subprocess.run([*runas, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def public_key(keys: Keys) -> object:
    return load_public_key(keys.public)


# -- Mosquitto -----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A real Mosquitto broker on a free loopback port (apt-get install -y mosquitto)."""
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(exe).exists():
        raise RuntimeError("mosquitto is not installed (apt-get install -y mosquitto)")
    d = tmp_path_factory.mktemp("mosquitto")
    port = free_port()
    conf = d / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            break
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("mosquitto did not start")
        time.sleep(0.05)
    try:
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# -- S3-compatible object store --------------------------------------------------------------------
@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server as a real HTTP endpoint on loopback (MinIO binaries cannot be fetched here)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            break
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("moto server did not start")
        time.sleep(0.1)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def make_bucket(endpoint: str, name: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=name)
