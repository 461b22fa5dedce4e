"""The publishing thread: outbox → MQTT, one thread that owns the paho client.

paho runs here in manual-loop mode (``client.loop()``), not in its own thread: every callback then
runs on this thread, so the outbox is never touched from paho's network thread and no lock is held
across the network. A new paho client is made for each connection: paho's message ids (mids) and its
in-memory queue belong to one connection, and our own ids (the message ``seq``) map to them through
``_mid_to_seq``, rebuilt per connection.

Per sealed message the thread keeps a small state machine::

    QUEUED ──publish──▶ SENT ──PUBACK──▶ AT_BROKER ──confirm on edge/D/cmd/ack──▶ (deleted)
      ▲                  │                   │
      └── connection lost┘                   └── no confirm by its deadline: back to QUEUED (resend)

Whose confirmation counts is the delivery mode: ``ingester`` (the arrow on ``edge/D/cmd/ack``) or
``broker`` (AT_BROKER is the end: the PUBACK deletes the rows). ``confirm="auto"`` picks it per
connection from the retained announcement on ``edge/D/cmd/ingest``: the device subscribes to it,
then publishes its ``online`` status; the broker handles one client's packets in order and sends a
retained message at QoS 0 while it handles the SUBSCRIBE, so by the status's PUBACK the
announcement, if there is one, has arrived. With none, the device still waits ``announce_wait_s``
for a running ingester that has not seen it yet (it announces on the device's first message),
unless it remembers (outbox setting, per broker) an ingester that served it there: a broker that lost
its retained messages must not make it delete rows at the PUBACK. A retirement notice (or a topic
cleared by hand) makes the mode ``broker`` at once and forgets the ingester.
Until then the mode is unknown and acknowledged messages wait in AT_BROKER; when the mode turns out
(or later becomes) ``broker``, every message in AT_BROKER is done. ``window`` bounds SENT + AT_BROKER.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from edge_runtime import __version__

from ._config import TelemetryConfig
from ._errors import OutboxError, TelemetryConfigError
from ._mqtt import backoff_delay, create_client, paho
from ._outbox import Outbox, SealedMessage
from ._schema import (
    INGEST_ANNOUNCE_LEAF,
    SCHEMA_VERSION,
    ConfirmMessage,
    IngestAnnouncement,
    topic_for,
    utc_now_iso,
)

if TYPE_CHECKING:
    from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessage
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

__all__ = ["Publisher", "PublisherStats"]

log = logging.getLogger(__name__)

QUEUED, SENT, AT_BROKER = "queued", "sent", "at_broker"
#: delivery modes: whose acknowledgement deletes a message's rows (None: not known yet)
INGESTER, BROKER = "ingester", "broker"


@dataclass(slots=True)
class _Flight:
    seq: int
    kind: str
    state: str = QUEUED
    mid: int | None = None
    deadline: float = 0.0
    attempts: int = 0


@dataclass(slots=True)
class PublisherStats:
    connected: bool = False
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    published: int = 0
    resent: int = 0
    broker_acked: int = 0
    confirmed_messages: int = 0
    confirmed_records: int = 0
    unconfirmed: int = 0
    #: ``ingester`` or ``broker`` (whose acknowledgement deletes rows), None until known
    delivery_mode: str | None = None
    #: the ingester that announced itself for this device, if any
    ingester: str | None = None
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


class Publisher:
    """Runs in its own daemon thread; :meth:`stop` drains for a while, then says offline and leaves."""

    def __init__(self, outbox: Outbox, config: TelemetryConfig, *,
                 metrics: Callable[[], dict[str, Any]] | None = None,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None) -> None:
        self.outbox = outbox
        self.config = config
        self.device_id = config.device_id
        self.stats = PublisherStats()
        self._metrics = metrics
        self._clock = clock
        self._rng = rng or random.Random()
        self._thread = threading.Thread(target=self._run, name=f"edge-telemetry-{self.device_id}", daemon=True)
        self._stop = threading.Event()
        self._drain_until: float | None = None
        self._draining = False
        self._force_seal = threading.Event()
        self._metrics_now = threading.Event()
        self._idle = threading.Event()
        self._client: Client | None = None
        self._connack: int | None = None
        self._lost = False
        self._flights: dict[int, _Flight] = {}
        self._mid_to_seq: dict[int, int] = {}
        self._pubacks: list[int] = []
        self._confirms: list[int] = []
        self._status_topic = topic_for(self.device_id, "status")
        self._ack_topic = topic_for(self.device_id, "cmd/ack")
        self._ingest_topic = topic_for(self.device_id, INGEST_ANNOUNCE_LEAF)
        # confirm="auto": the announcement seen on this connection, and when the retained messages
        # had all arrived (the PUBACK of the status with mid _sync_mid says so)
        self._ingester: str | None = None
        self._retired = False  # a retirement notice (or a cleared topic) seen on this connection
        self._remembered: str | None = None  # the ingester that served this device on this broker
        self._synced_at: float | None = None
        self._sync_mid: int | None = None
        self._mode: str | None = None
        self._logged_mode: str | None = None
        # Extra retained-status fields (e.g. the running model), set from any thread and
        # published by this one, the only thread that touches the paho client.
        self._status_lock = threading.Lock()
        self._status_extra: dict[str, Any] = {}
        self._status_dirty = threading.Event()
        # Other topics the device reads and retained messages it keeps on the broker (the agent's
        # command topics, Home Assistant discovery), on this same connection: a broker that binds client
        # ids to user names gives each device one connection, so there must be only one.
        self._listen_lock = threading.Lock()
        self._listeners: dict[str, Callable[[str, bytes], None]] = {}
        self._keep_retained: list[tuple[str, bytes]] = []
        self._on_ready: list[Callable[[], None]] = []
        self._listen_dirty = threading.Event()

    # ------------------------------------------------------------------ control (any thread)

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def request_flush(self) -> None:
        """Seal partial batches now instead of waiting for ``linger_s``."""
        self._force_seal.set()

    def request_metrics(self) -> None:
        self._metrics_now.set()

    def set_status(self, **fields: Any) -> None:
        """Merge ``fields`` (e.g. ``model={"name": ..., "version": ...}``) into the retained
        status, republished at once when connected and on every (re)connect. The last will
        carries them from the next connection on."""
        with self._status_lock:
            self._status_extra.update(fields)
        self._status_dirty.set()

    def listen(self, topic: str, handler: Callable[[str, bytes], None],
               retained: Sequence[tuple[str, bytes]] = (), on_ready: Callable[[], None] | None = None) -> None:
        """Subscribe to ``topic`` (QoS 1) on this connection and hand each message to ``handler``
        (called on the publisher's thread: keep it short), and keep ``retained`` published (retained,
        QoS 1) on every (re)connect; ``on_ready`` is called each time the subscription is sent. Takes
        effect at once when connected."""
        with self._listen_lock:
            self._listeners[topic] = handler
            self._keep_retained.extend(retained)
            if on_ready is not None:
                self._on_ready.append(on_ready)
        self._listen_dirty.set()

    def _apply_listeners(self, client: Client) -> None:
        with self._listen_lock:
            topics = list(self._listeners)
            retained = list(self._keep_retained)
            ready = list(self._on_ready)
        for topic in topics:
            client.subscribe(topic, qos=1)
        for topic, payload in retained:
            client.publish(topic, payload, qos=1, retain=True)
        for callback in ready:
            callback()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is pending, sealed or in flight (everything confirmed)."""
        self._idle.clear()
        self._force_seal.set()
        return self._idle.wait(timeout)

    def stop(self, drain_s: float = 0.0) -> None:
        """Keep publishing for up to ``drain_s`` while there is work, then disconnect cleanly."""
        self._drain_until = self._clock() + max(0.0, drain_s)
        self._draining = drain_s > 0
        self._force_seal.set()
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(drain_s + self.config.delivery.announce_wait_s + self.config.mqtt.connect_timeout_s + 5.0)

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        if self.config.delivery.confirm == "auto":
            self._recall()
        try:
            for seq in self.outbox.sealed_seqs():
                self._flights[seq] = _Flight(seq=seq, kind="?")
        except OutboxError as exc:
            log.error("telemetry: cannot read sealed messages: %s", exc)
        interval = self.config.metrics_interval_s
        self._next_metrics = self._clock() + interval
        self._next_expire = self._clock()
        attempt = 0
        reconnect_at = self._clock()
        while True:
            now = self._clock()
            if self._stop.is_set() and (self._drain_until is None or (now >= self._drain_until and not self._deciding())
                                        or self._client is None or self._is_empty()):
                break
            self._housekeeping(now)
            if self._client is None:
                if now < reconnect_at:
                    self._stop.wait(min(reconnect_at - now, 1.0))
                    continue
                if self._connect():
                    attempt = 0
                else:
                    delay = backoff_delay(attempt, self.config.mqtt.reconnect_min_s,
                                          self.config.mqtt.reconnect_max_s, self._rng)
                    attempt += 1
                    reconnect_at = self._clock() + delay
                    log.info("telemetry: next connection attempt in %.1f s", delay)
                continue
            try:
                self._step()
            except OutboxError as exc:
                # Disk full or I/O error: keep the connection, retry shortly; nothing is deleted.
                self.stats.last_error = str(exc)
                log.error("telemetry: %s", exc)
                self._stop.wait(1.0)
        self._shutdown()

    def _deciding(self) -> bool:
        """Draining while still learning whether an ingester serves this device (at most
        ``announce_wait_s``), with acknowledged messages whose fate depends on it: leaving now would
        keep them, and the next run would send them to a plain broker's consumers a second time."""
        return (self._draining and self._client is not None and self._mode is None and self._synced_at is not None
                and any(f.state == AT_BROKER for f in self._flights.values()))

    def _is_empty(self) -> bool:
        return not self._flights and self.outbox.pending_rows() == 0

    def _housekeeping(self, now: float) -> None:
        try:
            if now >= self._next_expire:
                self._next_expire = now + min(30.0, self.outbox.ttl_s / 4)
                dropped = self.outbox.expire()
                if dropped:
                    log.warning("telemetry: %d record(s) older than the TTL were dropped", dropped)
            if self._metrics is not None and (now >= self._next_metrics or self._metrics_now.is_set()):
                self._metrics_now.clear()
                self._next_metrics = now + self.config.metrics_interval_s
                self.outbox.append_report(self._metrics, "metrics")
            for seq in self.outbox.take_dropped_seqs():
                flight = self._flights.pop(seq, None)
                if flight is not None and flight.mid is not None:
                    self._mid_to_seq.pop(flight.mid, None)
        except OutboxError as exc:
            self.stats.last_error = str(exc)
            log.error("telemetry: %s", exc)

    # ------------------------------------------------------------------ connecting

    def _status_payload(self, state: str) -> bytes:
        with self._status_lock:
            extra = dict(self._status_extra)
        return json.dumps({"schema": SCHEMA_VERSION, "device_id": self.device_id, "state": state,
                           "ts": utc_now_iso(), "runtime": __version__, **extra}, separators=(",", ":")).encode()

    def _connect(self) -> bool:
        mqtt = paho()
        cfg = self.config.mqtt
        try:
            client = create_client(cfg, client_id=f"edge-{self.device_id}", clean_session=True,
                                   will=(self._status_topic, self._status_payload("offline")))
        except TelemetryConfigError as exc:
            self._fail(f"{exc}")
            return False
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        # Our window is the flow control; paho must never hold back (or silently queue) beyond it.
        client.max_inflight_messages_set(self.config.delivery.window + 4)
        client.max_queued_messages_set(0)
        self._connack = None
        self._lost = False
        try:
            client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._fail(f"cannot connect to {cfg.safe_url}: {exc}")
            return False
        deadline = self._clock() + cfg.connect_timeout_s
        while self._connack is None and not self._lost and self._clock() < deadline:
            if self._stop.is_set():  # closing: do not hold `edge run` up for a dead uplink
                self._close_socket(client)
                return False
            if client.loop(0.05) != mqtt.MQTT_ERR_SUCCESS:
                break
        if self._connack != 0:
            reason = ("timed out waiting for CONNACK" if self._connack is None and not self._lost
                      else self._connack_reason or "connection closed")
            self._fail(f"{cfg.safe_url} refused the connection: {reason}")
            self._close_socket(client)
            return False
        self._client = client
        self._mid_to_seq.clear()
        for f in self._flights.values():
            if f.state == SENT:  # lost with the previous connection; resend
                f.state, f.mid = QUEUED, None
        confirm = self.config.delivery.confirm
        if confirm != BROKER:
            client.subscribe(self._ack_topic, qos=1)
        self._ingester, self._retired, self._synced_at, self._sync_mid = None, False, None, None
        if confirm == "auto":
            # QoS 0: the broker writes a retained QoS 0 message out while handling the SUBSCRIBE,
            # never held back behind its in-flight limit, so it precedes the status's PUBACK.
            client.subscribe(self._ingest_topic, qos=0)
        self._listen_dirty.clear()
        self._apply_listeners(client)
        self._status_dirty.clear()
        info = client.publish(self._status_topic, self._status_payload("online"), qos=1, retain=True)
        self._sync_mid = info.mid
        self._update_mode()
        self.stats.connected = True
        self.stats.connects += 1
        self._metrics_now.set()  # report at once what happened while offline (drops, depth)
        log.info("telemetry: connected to %s as %s", cfg.safe_url, self.device_id)
        return True

    def _fail(self, message: str) -> None:
        self.stats.connect_failures += 1
        self.stats.last_error = message
        log.warning("telemetry: %s", message)

    @staticmethod
    def _close_socket(client: Client) -> None:
        sock = client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def _drop_connection(self, why: str) -> None:
        if self._client is not None:
            self._close_socket(self._client)
        self._client = None
        self._mid_to_seq.clear()
        for f in self._flights.values():
            if f.state == SENT:
                f.state, f.mid = QUEUED, None
        self.stats.connected = False
        self.stats.disconnects += 1
        self.stats.last_error = why
        log.warning("telemetry: connection lost (%s); records stay in the outbox", why)

    # ------------------------------------------------------------------ paho callbacks (this thread)

    _connack_reason: str | None = None

    def _on_connect(self, client: Client, userdata: Any, flags: ConnectFlags, reason: ReasonCode,
                    properties: Properties | None) -> None:
        self._connack = reason.value
        self._connack_reason = str(reason)

    def _on_disconnect(self, client: Client, userdata: Any, flags: DisconnectFlags, reason: ReasonCode,
                       properties: Properties | None) -> None:
        self._lost = True
        self._connack_reason = self._connack_reason or str(reason)

    def _on_publish(self, client: Client, userdata: Any, mid: int, reason: ReasonCode,
                    properties: Properties | None) -> None:
        self._pubacks.append(mid)

    def _on_message(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        with self._listen_lock:
            handler = self._listeners.get(message.topic)
        if handler is not None:
            try:
                handler(message.topic, bytes(message.payload))
            except Exception:  # a listener's bug must not take the telemetry connection down
                log.exception("telemetry: the handler for %s failed", message.topic)
            return
        if message.topic == self._ingest_topic:
            self._on_announcement(bytes(message.payload))
            return
        try:
            confirm = ConfirmMessage.model_validate_json(message.payload)
        except ValidationError as exc:
            log.warning("telemetry: ignoring a malformed confirmation on %s: %s", message.topic,
                        exc.errors()[0]["msg"] if exc.errors() else exc)
            return
        if confirm.device_id != self.device_id:
            log.warning("telemetry: ignoring a confirmation for device %s", confirm.device_id)
            return
        self._confirms.extend(confirm.seqs)

    def _on_announcement(self, payload: bytes) -> None:
        try:
            announcement: IngestAnnouncement | None = IngestAnnouncement.model_validate_json(payload)
        except ValidationError:
            announcement = None
        if not payload or (announcement is not None and announcement.retired):
            # Retired (or the topic cleared by hand): no ingester serves this device any more.
            self._ingester, self._retired = None, True
            self._remember(None)
        else:
            # Any other payload means an ingester serves this device, even one this version cannot
            # parse (a newer schema): keeping rows a little longer is safe, deleting them is not.
            if announcement is None:
                log.warning("telemetry: the announcement on %s is not one this version reads; "
                            "waiting for ingester confirmations anyway", self._ingest_topic)
            self._ingester = announcement.ingester if announcement is not None else "?"
            self._retired = False
            self._remember(self._ingester)
        self._update_mode()

    def _broker_key(self) -> str:
        return f"{self.config.mqtt.host}:{self.config.mqtt.port}"

    def _remember(self, ingester: str | None) -> None:
        """Keep, with the outbox, which ingester serves this device on this broker: a broker that
        lost its retained messages (a crash before it saved them) must not turn the device into one
        that deletes rows at the PUBACK while its ingester cannot receive them."""
        if ingester == self._remembered:
            return
        self._remembered = ingester
        try:
            self.outbox.set_setting("ingester", ingester)
            self.outbox.set_setting("ingester_broker", self._broker_key() if ingester is not None else None)
        except OutboxError as exc:
            log.error("telemetry: cannot keep the ingester's name: %s", exc)

    def _recall(self) -> None:
        try:
            name, broker = self.outbox.setting("ingester"), self.outbox.setting("ingester_broker")
        except OutboxError as exc:
            log.error("telemetry: cannot read the ingester's name: %s", exc)
            return
        # another broker (the device was moved) has its own ingester, or none
        self._remembered = str(name) if name is not None and broker == self._broker_key() else None

    def _update_mode(self) -> None:
        """Work out whose acknowledgement deletes rows now; log when that changes."""
        confirm = self.config.delivery.confirm
        if confirm != "auto":
            mode: str | None = confirm
        elif self._ingester is not None:
            mode = INGESTER
        elif self._retired:
            mode = BROKER
        elif self._synced_at is not None and self._remembered is not None:
            # No announcement although an ingester served this device here: the broker lost it.
            # The ingester announces again when it hears from the device; until then, keep the rows.
            mode = INGESTER
            if self._logged_mode != INGESTER:
                log.warning("telemetry: %s has no announcement from ingester %r any more (broker state lost?); "
                            "keeping rows for it (`edge cloud ingest --retire` says it is gone)",
                            self.config.mqtt.safe_url, self._remembered)
        else:
            # A running ingester that has never seen this device announces itself within moments of
            # its status: wait that long before settling for the broker's word.
            wait = self.config.delivery.announce_wait_s
            mode = BROKER if self._synced_at is not None and self._clock() >= self._synced_at + wait else None
        if mode is not None and mode != self._logged_mode:
            self._logged_mode = mode
            if confirm == "auto" and mode == INGESTER:
                log.info("telemetry: ingester %r serves %s: rows leave the outbox at its confirmation",
                         self._ingester, self.device_id)
            elif confirm == "auto":
                log.info("telemetry: no ingester announced on %s: rows leave the outbox at the broker's "
                         "PUBACK", self._ingest_topic)
        self._mode = mode
        self.stats.delivery_mode = mode
        self.stats.ingester = self._ingester

    # ------------------------------------------------------------------ one turn of the loop

    def _step(self) -> None:
        mqtt = paho()
        client = self._client
        assert client is not None
        busy = self.outbox.pending_rows() > 0 and self._in_flight() < self.config.delivery.window
        rc = client.loop(0.01 if busy else 0.05)
        if rc != mqtt.MQTT_ERR_SUCCESS or self._lost:
            self._take_acks()  # PUBACKs that arrived before the loss still count
            self._drop_connection(f"{mqtt.error_string(rc)}" if rc else "disconnected by the broker")
            return
        if self._mode is None:
            self._update_mode()
        self._take_acks()
        if self._status_dirty.is_set():
            self._status_dirty.clear()
            client.publish(self._status_topic, self._status_payload("online"), qos=1, retain=True)
        if self._listen_dirty.is_set():
            self._listen_dirty.clear()
            self._apply_listeners(client)
        self._resend_due()
        self._fill_window()
        if not self._flights and self.outbox.pending_rows() == 0:
            self._force_seal.clear()
            self._idle.set()

    def _in_flight(self) -> int:
        return sum(1 for f in self._flights.values() if f.state != QUEUED)

    def _take_acks(self) -> None:
        now = self._clock()
        delivery = self.config.delivery
        done: list[int] = []
        acks, self._pubacks = self._pubacks, []
        for mid in acks:
            if mid == self._sync_mid:  # every retained message of this connection is in
                self._sync_mid, self._synced_at = None, now
                self._update_mode()
                continue
            seq = self._mid_to_seq.pop(mid, None)
            flight = self._flights.get(seq) if seq is not None else None
            if flight is None or flight.state != SENT:
                continue
            self.stats.broker_acked += 1
            flight.state = AT_BROKER
            timeout = min(delivery.confirm_timeout_max_s, delivery.confirm_timeout_s * 2 ** flight.attempts)
            flight.deadline = now + timeout
        if self._mode == BROKER:
            # Also the messages acknowledged before the mode was known, or while an ingester that
            # has since been retired was still announced: the broker has them, that is delivery now.
            done.extend(f.seq for f in self._flights.values() if f.state == AT_BROKER)
        confirms, self._confirms = self._confirms, []
        taken = set(done)
        done.extend(s for s in dict.fromkeys(confirms) if s in self._flights and s not in taken)
        if done:
            removed = self.outbox.confirm(done)
            for seq in done:
                flight = self._flights.pop(seq, None)
                if flight is not None and flight.mid is not None:
                    self._mid_to_seq.pop(flight.mid, None)
            self.stats.confirmed_messages += len(done)
            self.stats.confirmed_records += removed
        self.stats.unconfirmed = len(self._flights)

    def _resend_due(self) -> None:
        if self._mode != INGESTER:
            return
        now = self._clock()
        for f in self._flights.values():
            if f.state == AT_BROKER and now >= f.deadline:
                # The broker took it but the cloud never confirmed: the broker may have crashed or
                # dropped it from a full queue. Same seq and uuid, so a duplicate is harmless.
                f.state, f.mid = QUEUED, None
                f.attempts += 1
                self.stats.resent += 1
                log.info("telemetry: no confirmation for message %d, sending it again", f.seq)

    def _fill_window(self) -> None:
        window = self.config.delivery.window
        in_flight = self._in_flight()
        for f in sorted((f for f in self._flights.values() if f.state == QUEUED), key=lambda f: f.seq):
            if in_flight >= window or self._client is None:
                return
            msg = self.outbox.load_message(f.seq)
            if msg is None:  # confirmed or dropped meanwhile
                self._flights.pop(f.seq, None)
                continue
            if not self._publish(f, msg):
                return
            in_flight += 1
        batch = self.config.batch
        if in_flight >= window or self._client is None:
            return
        # Everything the window has room for in one transaction: one fsync, not one per message.
        for msg in self.outbox.seal_many(window - in_flight, max_records=batch.max_records,
                                         max_bytes=batch.max_bytes, linger_s=batch.linger_s,
                                         force=self._force_seal.is_set()):
            f = _Flight(seq=msg.seq, kind=msg.kind)
            self._flights[msg.seq] = f
            if self._client is None or not self._publish(f, msg):
                continue  # sealed and durable: sent after the reconnect

    def _publish(self, flight: _Flight, msg: SealedMessage) -> bool:
        mqtt = paho()
        assert self._client is not None
        flight.kind = msg.kind
        info = self._client.publish(topic_for(self.device_id, msg.kind), msg.payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self._drop_connection(f"publish failed: {mqtt.error_string(info.rc)}")
            return False
        flight.state, flight.mid = SENT, info.mid
        self._mid_to_seq[info.mid] = flight.seq
        self.stats.published += 1
        return True

    # ------------------------------------------------------------------ leaving

    def _shutdown(self) -> None:
        client = self._client
        if client is None:
            return
        mqtt = paho()
        # A clean DISCONNECT suppresses the last will, so say "offline" ourselves first.
        info = client.publish(self._status_topic, self._status_payload("offline"), qos=1, retain=True)
        deadline = self._clock() + 2.0
        while not info.is_published() and self._clock() < deadline:
            if client.loop(0.05) != mqtt.MQTT_ERR_SUCCESS:
                break
        self._take_acks()
        client.disconnect()
        client.loop(0.05)
        self._close_socket(client)
        self._client = None
        self.stats.connected = False
