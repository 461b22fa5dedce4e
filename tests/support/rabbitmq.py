"""A throwaway RabbitMQ of the test's own: free ports, its own epmd, every file in a temporary
directory, never the system service. Used by tests/worker and scripts/bench_worker.py.

    with RabbitMQ(tmp_path) as rabbit:
        pika.BlockingConnection(pika.URLParameters(rabbit.url))

The node name is unique, the AMQP, distribution and epmd ports are free ones, HOME (the Erlang
cookie) is in the directory, and no plugin is enabled. ``stop()`` sends SIGTERM (the broker shuts
down cleanly), then stops the epmd it started.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.net import free_port, port_open, stop_process, wait_for

__all__ = ["RABBITMQ_SERVER", "RabbitMQ", "Requester", "consumer_count", "declare_queue", "drain", "queue_depth"]

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
EPMD = shutil.which("epmd") or "/usr/bin/epmd"


class RabbitMQ:
    def __init__(self, workdir: Path | None = None) -> None:
        self._tmp = None if workdir is not None else tempfile.TemporaryDirectory(prefix="rabbitmq-")
        self.workdir = Path(workdir if workdir is not None else self._tmp.name)  # type: ignore[union-attr]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.node = f"edge{uuid.uuid4().hex[:10]}@localhost"
        self.log_path = self.workdir / "rabbitmq.out"
        self.proc: subprocess.Popen[bytes] | None = None
        self.epmd: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def env(self) -> dict[str, str]:
        d = self.workdir
        for sub in ("home", "mnesia", "log"):
            (d / sub).mkdir(exist_ok=True)
        (d / "enabled_plugins").write_text("[].\n")
        (d / "rabbitmq.conf").write_text("loopback_users.guest = false\n")
        (d / "rabbitmq-env.conf").write_text("")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update({
            "HOME": str(d / "home"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_LOGS": "-",
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(d / "rabbitmq.pid"),
        })
        return env

    def start(self, timeout: float = 120) -> RabbitMQ:
        if not Path(RABBITMQ_SERVER).exists():
            raise RuntimeError(f"{RABBITMQ_SERVER} is missing: apt-get install rabbitmq-server")
        env = self.env()
        # Our own epmd on its own port, in the foreground, so that we can stop exactly it.
        self.epmd = subprocess.Popen([EPMD, "-port", str(self.epmd_port)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: port_open(self.epmd_port) or self.epmd is None or self.epmd.poll() is not None, 15,
                 f"epmd on port {self.epmd_port}")
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([RABBITMQ_SERVER], env=env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        wait_for(lambda: self._ready() or self.proc is None or self.proc.poll() is not None, timeout,
                 f"RabbitMQ on port {self.port}")
        if self.proc.poll() is not None:
            self._stop_epmd()
            raise RuntimeError(f"rabbitmq-server exited: {self.log_text()[-3000:]}")
        return self

    def _ready(self) -> bool:
        return port_open(self.port) and "Server startup complete" in self.log_text()

    def stop(self) -> None:
        # SIGTERM to the script's process group: the Erlang VM shuts the node down cleanly.
        stop_process(self.proc, grace=60, group=True)
        self._stop_epmd()
        if self._tmp is not None:
            self._tmp.cleanup()

    def _stop_epmd(self) -> None:
        stop_process(self.epmd, grace=10)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> RabbitMQ:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _declare_ok(url: str, queue: str) -> Any:
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return conn.channel().queue_declare(queue, passive=True).method
    finally:
        conn.close()


def queue_depth(url: str, queue: str) -> int:
    """Messages ready in ``queue`` (not counting those delivered and unacked), from a passive declare."""
    return int(_declare_ok(url, queue).message_count)


def consumer_count(url: str, queue: str) -> int:
    return int(_declare_ok(url, queue).consumer_count)


def declare_queue(url: str, queue: str) -> None:
    """Declare ``queue`` durable, as ``edge worker`` does (so that both may declare it first)."""
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        conn.channel().queue_declare(queue, durable=True)
    finally:
        conn.close()


@dataclass
class Message:
    body: bytes
    correlation_id: str | None
    headers: dict[str, Any]
    content_type: str | None

    def json(self) -> Any:
        return json.loads(self.body)


def drain(url: str, queue: str) -> list[Message]:
    """Take (and ack) every message ready in ``queue``."""
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(url))
    out: list[Message] = []
    try:
        ch = conn.channel()
        while True:
            method, props, body = ch.basic_get(queue, auto_ack=True)
            if method is None:
                return out
            out.append(Message(body, props.correlation_id, dict(props.headers or {}), props.content_type))
    finally:
        conn.close()


class Requester:
    """A client of the worker: publishes requests with ``reply_to`` (its own exclusive queue) and a
    ``correlation_id``, and collects the answers."""

    def __init__(self, url: str, queue: str, *, declare: bool = True) -> None:
        import pika

        self._pika = pika
        self.queue = queue
        self.conn = pika.BlockingConnection(pika.URLParameters(url))
        self.ch = self.conn.channel()
        if declare:  # durable, as `edge worker` declares a classic queue
            self.ch.queue_declare(queue, durable=True)
        self.reply_to = self.ch.queue_declare("", exclusive=True).method.queue
        self.ch.confirm_delivery()

    def send(self, body: bytes, correlation_id: str | None, *, content_type: str | None = None,
             reply: bool = True, reply_to: str | None = None, queue: str | None = None) -> None:
        """Publish a request; its ``reply_to`` is this client's queue, ``reply_to`` if given, or none
        with ``reply=False``."""
        props = self._pika.BasicProperties(correlation_id=correlation_id, content_type=content_type,
                                           reply_to=(reply_to or self.reply_to) if reply else None, delivery_mode=2)
        self.ch.basic_publish("", queue or self.queue, body, props)

    def collect(self, n: int, timeout: float = 120) -> list[Message]:
        """Wait (bounded) for ``n`` answers; returns what came (maybe fewer: the caller asserts).
        Polls with basic.get: a consumer cancelled between calls would drop answers in flight."""
        got: list[Message] = []
        deadline = time.monotonic() + timeout
        while len(got) < n and time.monotonic() < deadline:
            method, props, body = self.ch.basic_get(self.reply_to, auto_ack=True)
            if method is None:
                self.conn.sleep(0.05)
                continue
            got.append(Message(body, props.correlation_id, dict(props.headers or {}), props.content_type))
        return got

    def close(self) -> None:
        if self.conn.is_open:
            self.conn.close()
