"""MQTT clients for the tests: a subscriber that keeps what it hears, and a raw client that
stands in for a device (or an attacker) sending whatever it likes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from tests.support.net import wait_for

__all__ = ["RawClient", "Subscriber"]


class RawClient:
    """A plain paho client standing in for a device (or an attacker) that sends whatever it likes."""

    def __init__(self, port: int, client_id: str = "", *, username: str | None = None,
                 password: str | None = None, tls: dict[str, Any] | None = None) -> None:
        import paho.mqtt.client as mqtt

        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        if username:
            self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set(**tls)
        self.received: list[tuple[str, bytes]] = []
        self.connack: Any = None
        self._suback: dict[int, list[Any]] = {}
        self.client.on_message = lambda c, u, m: self.received.append((m.topic, bytes(m.payload)))
        self.client.on_subscribe = lambda c, u, mid, codes, p: self._suback.__setitem__(mid, list(codes))
        connected = threading.Event()

        def on_connect(c: Any, u: Any, f: Any, rc: Any, p: Any) -> None:
            self.connack = rc
            connected.set()
        self.client.on_connect = on_connect
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert connected.wait(10), "no CONNACK"

    def publish(self, topic: str, payload: bytes | str) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(10)
        assert info.is_published()

    def subscribe(self, topic: str) -> list[Any]:
        _, mid = self.client.subscribe(topic, qos=1)
        assert mid is not None
        wait_for(lambda: mid in self._suback, 10, f"SUBACK for {topic}")
        return self._suback[mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


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
