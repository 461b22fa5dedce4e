"""Real servers for the agent tests: Mosquitto, the cloud service under uvicorn (a subprocess, so a
test can SIGKILL it and start it again on the same port), and a small TCP proxy that puts latency,
resets, black holes and a bandwidth limit between the agent and the service.

Waits poll a condition with a bounded timeout; nothing relies on a fixed sleep to be correct.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

# One Mosquitto harness for every test folder (the telemetry tests own it).
from tests.telemetry.servers import Mosquitto, free_port, port_open, wait_for

ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "agent-tests-admin-token-0123456789"

__all__ = ["ADMIN_TOKEN", "CloudService", "Mosquitto", "env_with_project", "free_port", "port_open", "wait_for"]


def env_with_project() -> dict[str, str]:
    # Hermetic: no EDGE_* override from the machine running the tests leaks into what they start.
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    return env


class CloudService:
    """``uvicorn --factory cloud_sync.service:create_app_from_env`` on a fixed port, restartable."""

    def __init__(self, data_dir: Path, trusted_keys: list[Path], *, mqtt_port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        # Settings as EDGE_* variables: what the service's factory reads under uvicorn --factory.
        self.env = env_with_project()
        self.env.update({"EDGE_DATA_DIR": str(data_dir), "EDGE_ADMIN_TOKEN": ADMIN_TOKEN,
                         "EDGE_TRUSTED_KEYS": json.dumps([str(k) for k in trusted_keys]),
                         "EDGE_MAX_BATCH_WAIT_MS": "1"})
        if mqtt_port is not None:
            self.env.update({"EDGE_MQTT_HOST": "127.0.0.1", "EDGE_MQTT_PORT": str(mqtt_port)})
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> CloudService:
        log = (self.data_dir.parent / f"service-{self.port}.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "cloud_sync.service:create_app_from_env",
             "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.data_dir.parent)
        log.close()
        self.starts += 1
        wait_for(self._live, 60, f"the cloud service on port {self.port}", interval=0.05)
        return self

    def _live(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"the cloud service exited with {self.proc.returncode}")
        try:
            with urllib.request.urlopen(self.url + "/v2/health/live", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: the service vanishes mid-whatever, as a crashed host would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None
        wait_for(lambda: not port_open(self.port), 10, "the killed service's port to close")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class TcpProxy:
    """Forwards 127.0.0.1:<port> to the service, misbehaving as told. ``mode`` applies to each new
    connection: ``pass``, ``delay`` (hold the connection ``delay_s`` before forwarding), ``reset``
    (answer with a TCP RST), ``blackhole`` (accept, read, never answer). ``rate`` (bytes/s) limits
    the answers' bandwidth."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.mode = "pass"
        self.delay_s = 0.0
        self.rate: float | None = None
        self.connections = 0
        self.bytes_down = 0  # bytes sent from the service to the client
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = int(self._sock.getsockname()[1])
        self._closing = threading.Event()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set(self, mode: str, *, delay_s: float = 0.0) -> None:
        self.mode, self.delay_s = mode, delay_s

    def _track(self, s: socket.socket) -> None:
        with self._lock:
            self._conns.append(s)

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            self._track(conn)
            threading.Thread(target=self._handle, args=(conn, self.mode, self.delay_s), daemon=True).start()

    def _handle(self, conn: socket.socket, mode: str, delay_s: float) -> None:
        try:
            if mode == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                return
            if mode == "blackhole":
                with contextlib.suppress(OSError):
                    while conn.recv(65536):
                        pass
                conn.close()
                return
            if mode == "delay" and self._closing.wait(delay_s):
                conn.close()
                return
            try:
                up = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                conn.close()  # the service is down: the client sees the connection closed
                return
            self._track(up)
            threading.Thread(target=self._pump, args=(conn, up, None), daemon=True).start()
            self._pump(up, conn, self.rate, count=True)
        except OSError:
            conn.close()

    def _pump(self, src: socket.socket, dst: socket.socket, rate: float | None, count: bool = False) -> None:
        try:
            while True:
                data = src.recv(16384)
                if not data:
                    break
                if rate:
                    time.sleep(len(data) / rate)
                dst.sendall(data)
                if count:
                    self.bytes_down += len(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._closing.set()
        self._sock.close()
        with self._lock:
            for c in self._conns:
                with contextlib.suppress(OSError):
                    c.close()


def toml_dumps(data: dict[str, object]) -> str:
    """Just enough TOML for agent.toml: scalars, lists of scalars, nested tables."""

    def scalar(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (str, Path)):
            return json.dumps(str(v))
        if isinstance(v, list):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        raise TypeError(f"cannot write {type(v).__name__} as TOML")

    lines: list[str] = []

    def table(d: dict[str, object], prefix: str) -> None:
        subs = []
        for k, v in d.items():
            if isinstance(v, dict):
                subs.append((k, v))
            elif v is not None:
                lines.append(f"{k} = {scalar(v)}")
        for k, v in subs:
            name = f"{prefix}.{k}" if prefix else k
            lines.append(f"\n[{name}]")
            table(v, name)

    table(data, "")
    return "\n".join(lines) + "\n"


class Subscriber:
    """A paho client that keeps every message of the given topics (retained ones included)."""

    def __init__(self, port: int, *topics: str) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self._cond = threading.Condition()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{time.monotonic_ns()}")
        subscribed = threading.Event()

        def on_connect(client, userdata, flags, reason, props=None):  # type: ignore[no-untyped-def]
            for t in topics:
                client.subscribe(t, qos=1)
            subscribed.set()

        def on_message(client, userdata, msg):  # type: ignore[no-untyped-def]
            with self._cond:
                self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
                self._cond.notify_all()

        self._client.on_connect = on_connect
        self._client.on_message = on_message
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        if not subscribed.wait(10):
            raise TimeoutError("test subscriber did not connect")
        time.sleep(0.2)  # let the SUBACKs come back before the test publishes

    def payloads(self, topic: str) -> list[dict[str, object]]:
        with self._cond:
            return [json.loads(p) for t, p, _ in self.messages if t == topic and p]

    def records(self, topic: str) -> list[dict[str, object]]:
        """The records inside the telemetry envelopes published on ``topic``."""
        out: list[dict[str, object]] = []
        for env in self.payloads(topic):
            out.extend(env.get("records", []))  # type: ignore[arg-type]
        return out

    def wait(self, pred: Callable[[], bool], timeout: float, what: str) -> None:
        with self._cond:
            if not self._cond.wait_for(pred, timeout):
                raise TimeoutError(f"timed out after {timeout} s waiting for {what}")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
