"""The telemetry ingester: MQTT (QoS 1, persistent session, manual ack) → SQLAlchemy tables.

Two threads::

    paho's network thread ── on_message: append to a queue, nothing else (never blocks the socket)
    writer thread ────────── takes what is queued, parses, commits one transaction, then acks each
                             message to the broker (PUBACK) and confirms seqs to each device

Guarantees and why they hold:

* Nothing acknowledged is lost: the PUBACK goes out only after the commit, and the session is
  persistent (``clean_session=False``, fixed client id), so whatever was not acknowledged when the
  ingester died is redelivered by the broker.
* Exactly once in the database: ``telemetry_messages`` is unique on ``(device_id, seq)`` and records
  are only written for messages whose row was inserted, with ``INSERT .. ON CONFLICT DO NOTHING
  RETURNING``, so redeliveries and device resends are dropped even with several ingesters.
* Flow control: with manual acks the broker has at most ``max_inflight_messages`` unacknowledged
  messages out to us, so memory here is bounded and the broker queues the rest in the session.
  The devices' own window (confirmations) bounds what the broker has to queue, and a message the
  broker dropped anyway is resent by its device because it is never confirmed.
* A bad payload never blocks the ones behind it: it is recorded in ``telemetry_rejects`` with the
  reason, counted, logged, acknowledged; a message the database refuses (e.g. PostgreSQL rejects
  ``\\u0000`` in jsonb) is isolated from its batch and rejected the same way. Only a database that
  cannot be reached stops progress, and then nothing is acknowledged until it is back.
* paho's message ids belong to one connection: each message remembers its connection's generation
  and is acknowledged only on that same connection (after a reconnect the broker resends it).
* Devices know that an ingester serves them: after committing a device's first message on each
  connection (its retained status comes first, at every subscribe), the ingester publishes a
  retained :class:`~edge_device.telemetry.IngestAnnouncement` on ``edge/D/cmd/ingest``. Devices with
  ``confirm="auto"`` then keep rows until this ingester confirms them, and delete at the broker's
  PUBACK where no ingester announced itself (a plain broker). Stopping the ingester leaves the
  announcements in place (devices keep their rows until it is back; they also remember it, in case
  the broker loses its retained messages); :func:`retire` replaces them with a retirement notice and
  drops the ingester's session when the service is removed for good.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import queue
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import to_json
from sqlalchemy import Connection, Engine, case, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from edge_device.telemetry import (
    INGEST_ANNOUNCE_LEAF,
    SCHEMA_VERSION,
    IngestAnnouncement,
    MqttConfig,
    TelemetryError,
    backoff_delay,
    create_client,
    topic_for,
    validate_device_id,
)
from edge_runtime import first_line, utc_now, validated

from .._errors import DatabaseError, IngestError, PayloadError
from ..db import (
    fleet_devices,
    make_engine,
    telemetry_detections,
    telemetry_devices,
    telemetry_events,
    telemetry_messages,
    telemetry_metrics,
    telemetry_records,
    telemetry_rejects,
)
from ._parse import ROW_BUILDERS, Parsed, Rejected, as_time, detection_rows, parse_message, salvage_key

if TYPE_CHECKING:
    from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessage, MQTTMessageInfo
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

__all__ = ["ANNOUNCE_FILTER", "IngestConfig", "IngestStats", "Ingester", "retire"]

log = logging.getLogger(__name__)

SUBSCRIPTIONS = ("edge/+/telemetry", "edge/+/metrics", "edge/+/events", "edge/+/status")
#: every device's retained announcement (read only by :func:`retire`)
ANNOUNCE_FILTER = topic_for("+", INGEST_ANNOUNCE_LEAF)
_TABLES = {"telemetry": telemetry_records, "metrics": telemetry_metrics, "events": telemetry_events}
# The typed columns each row builder fills, in its order (the record tables' columns between
# idx and record); checked here so a new column cannot silently shift the values.
_ROW_COLUMNS = {kind: list(ROW_BUILDERS[kind]({}).keys()) for kind in _TABLES}
for _kind, _table in _TABLES.items():
    _expected = [c.name for c in _table.columns][4:-1]  # id, device_id, seq, idx ... record
    if _ROW_COLUMNS[_kind] != _expected:
        raise ImportError(f"{_table.name}: row builder columns {_ROW_COLUMNS[_kind]} != table {_expected}")
#: the order of the telemetry_detections rows _write builds
_DETECTION_COLUMNS = ["device_id", "seq", "idx", "obj", "ts", "model_name", "model_version", "label", "score",
                      "x1", "y1", "x2", "y2"]
if set(_DETECTION_COLUMNS) != {c.name for c in telemetry_detections.columns}:
    raise ImportError(f"telemetry_detections: columns {_DETECTION_COLUMNS} != the table's")
_SAMPLE_BYTES = 64 * 1024


class IngestConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mqtt: MqttConfig
    db_url: str = "sqlite:///edge-telemetry.db"
    #: fixed, so the broker keeps our session (subscriptions and queued messages) across restarts
    client_id: str = Field("edge-ingest", min_length=1, max_length=64)
    #: several ingesters share the load with ``$share/GROUP/...`` subscriptions
    share_group: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    max_payload_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    batch_max_messages: int = Field(500, ge=1, le=100_000)
    #: publish confirmations on edge/D/cmd/ack after each commit, and announce on edge/D/cmd/ingest that
    #: this ingester serves D (devices with confirm="auto" then wait for the confirmations)
    confirm: bool = True
    #: devices to announce to as soon as the subscriptions stand, before hearing from them (e.g. the
    #: broker's devices file): a new device then waits for confirmations from its first message on,
    #: even while this ingester is down; the others are announced to when their first message arrives
    devices: tuple[str, ...] = ()
    #: how often the device registry's revocations (``fleet_devices.revoked_at``, the table the
    #: service writes in the same database) are re-read; a revoked device's messages are rejects
    revoked_refresh_s: float = Field(2.0, ge=0, le=3600)

    @field_validator("devices")
    @classmethod
    def _device_ids(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for device_id in v:
            validate_device_id(device_id)
        return v

    @field_validator("client_id")
    @classmethod
    def _no_wildcards(cls, v: str) -> str:
        if any(c in v for c in "+#/"):
            raise ValueError("client_id must not contain '+', '#' or '/'")
        return v

    @classmethod
    def build(cls, **data: Any) -> IngestConfig:
        return validated(cls, data, "ingester settings", IngestError)

    @property
    def service_name(self) -> str:
        """The name in this ingester's announcements: the share group (one service of several
        processes), else the client id."""
        return self.share_group or self.client_id


@dataclass(slots=True)
class IngestStats:
    received: int = 0
    messages: int = 0
    records: int = 0
    duplicates: int = 0
    statuses: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    confirms_sent: int = 0
    announcements: int = 0
    db_retries: int = 0
    connects: int = 0
    connected: bool = False
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"received": self.received, "messages": self.messages, "records": self.records,
                "duplicates": self.duplicates, "statuses": self.statuses,
                "rejected": dict(self.rejected), "rejected_total": sum(self.rejected.values()),
                "confirms_sent": self.confirms_sent, "announcements": self.announcements,
                "db_retries": self.db_retries, "connects": self.connects,
                "connected": self.connected, "last_error": self.last_error}


@dataclass(slots=True)
class _Incoming:
    gen: int
    mid: int
    qos: int
    topic: str
    payload: bytes
    received: datetime


class Ingester:
    """Subscribe, write, acknowledge. ``start()`` returns at once; ``stop()`` finishes the current batch."""

    def __init__(self, config: IngestConfig, *, engine: Engine | None = None) -> None:
        self.config = config
        self.engine = engine or make_engine(config.db_url)
        self.stats = IngestStats()
        self._dialect = self.engine.dialect.name
        if self._dialect not in ("sqlite", "postgresql"):
            raise DatabaseError(f"the ingester supports SQLite and PostgreSQL, not {self._dialect}")
        self._queue: queue.Queue[_Incoming] = queue.Queue()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._gen_lock = threading.Lock()
        self._gen = 0
        self._client: Client | None = None
        self._writer = threading.Thread(target=self._write_loop, name="edge-ingest-writer", daemon=True)
        self._rng = random.Random()
        self._logged_rejects = 0
        # devices announced to on the current connection; replaced (not cleared) on each connect, so
        # the writer thread never sees a set being emptied under it
        self._announced: set[str] = set()
        self._announce_listed = threading.Event()
        self._announcing: list[MQTTMessageInfo] = []
        self._revoked: frozenset[str] = frozenset()
        self._revoked_read = -math.inf

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        cfg = self.config.mqtt
        try:
            client = create_client(cfg, client_id=self.config.client_id, clean_session=False)
        except TelemetryError as exc:
            raise IngestError(str(exc)) from exc
        client.manual_ack_set(True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.reconnect_delay_set(min_delay=max(1, int(cfg.reconnect_min_s)),
                                   max_delay=max(1, int(cfg.reconnect_max_s)))
        self._client = client
        self._writer.start()
        # connect_async + loop_start: paho keeps retrying if the broker is not up yet.
        client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        client.loop_start()
        log.info("ingest: connecting to %s as %s, writing to %s", cfg.safe_url, self.config.client_id,
                 self.engine.url.render_as_string())

    def wait_connected(self, timeout: float) -> bool:
        """Wait until connected and subscribed (the broker has acknowledged the subscriptions)."""
        return self._connected.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking messages, finish (commit and ack) what is queued, disconnect."""
        self._stop.set()
        if self._writer.is_alive():
            self._writer.join(timeout)
        if self._client is not None:
            # An announcement still on its way must reach the broker: its devices rely on it to
            # keep their rows while this ingester is away.
            for info in self._announcing:
                if self._client.is_connected():
                    with contextlib.suppress(RuntimeError, ValueError):  # not sent at all: nothing to wait for
                        info.wait_for_publish(min(timeout, 5.0))
            self._client.disconnect()
            self._client.loop_stop()
        self.stats.connected = False

    def __enter__(self) -> Ingester:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ paho callbacks (network thread)

    def _on_connect(self, client: Client, userdata: Any, flags: ConnectFlags, reason: ReasonCode,
                    properties: Properties | None) -> None:
        if reason.is_failure:
            self.stats.last_error = f"broker refused the connection: {reason}"
            log.error("ingest: %s", self.stats.last_error)
            return
        prefix = f"$share/{self.config.share_group}/" if self.config.share_group else ""
        # Subscribe on every connect: a broker that lost its state (no persistence, crash before
        # its autosave) comes back without our subscriptions.
        client.subscribe([(prefix + t, 1) for t in SUBSCRIPTIONS])
        # A broker that lost its state lost the retained announcements too: announce again (each
        # device's retained status arrives with the subscription and triggers it).
        self._announced = set()
        self.stats.connects += 1
        self.stats.connected = True
        log.info("ingest: connected (session present: %s)", flags.session_present)

    def _on_subscribe(self, client: Client, userdata: Any, mid: int, reasons: list[ReasonCode],
                      properties: Properties | None) -> None:
        refused = [t for t, r in zip(SUBSCRIPTIONS, reasons, strict=False) if r.is_failure]
        if refused:
            self.stats.last_error = f"the broker refused the subscription to {', '.join(refused)} (check the ACL)"
            log.error("ingest: %s", self.stats.last_error)
        self._connected.set()
        self._announce_listed.set()

    def _on_disconnect(self, client: Client, userdata: Any, flags: DisconnectFlags, reason: ReasonCode,
                       properties: Properties | None) -> None:
        with self._gen_lock:
            self._gen += 1  # acks for messages of the old connection must not reach the new one
        self._connected.clear()
        self.stats.connected = False
        if not self._stop.is_set():
            log.warning("ingest: disconnected (%s); paho reconnects", reason)

    def _on_message(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        with self._gen_lock:
            gen = self._gen
        self.stats.received += 1
        self._queue.put(_Incoming(gen, message.mid, message.qos, message.topic, bytes(message.payload),
                                  datetime.now(UTC)))

    # ------------------------------------------------------------------ writer thread

    def _write_loop(self) -> None:
        while True:
            if self._announce_listed.is_set():
                self._announce_listed.clear()
                self._announce(self.config.devices)
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._stop.is_set() and not self._announce_listed.is_set():
                    return
                continue
            batch = [first]
            while len(batch) < self.config.batch_max_messages:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if not self._process(batch):
                return  # stopping while the database is down: the broker keeps the messages

    def _process(self, batch: list[_Incoming]) -> bool:
        revoked = self._revoked_devices()
        items: list[tuple[_Incoming, Parsed | Rejected]] = [(m, self._refuse_revoked(m, self._parse(m), revoked))
                                                            for m in batch]
        confirms = self._commit(items)
        if confirms is None:
            return False
        self._ack([m for m, _ in items])
        self._confirm(confirms)
        self._announce(p.device_id for _, p in items if isinstance(p, Parsed))
        return True

    def _parse(self, m: _Incoming) -> Parsed | Rejected:
        try:
            return parse_message(m.topic, m.payload, max_payload_bytes=self.config.max_payload_bytes)
        except PayloadError as exc:
            oversized = exc.category == "oversized"
            device_id, seq = salvage_key(m.topic, m.payload[:_SAMPLE_BYTES] if oversized else m.payload)
            # An oversized payload is kept only in part, so it is not confirmed: the device keeps it.
            return Rejected(topic=m.topic, reason=str(exc), category=exc.category, device_id=device_id,
                            seq=None if oversized else seq,
                            payload=m.payload[:_SAMPLE_BYTES] if oversized else m.payload, truncated=oversized)

    def _revoked_devices(self) -> frozenset[str]:
        """The registry's revoked device ids, re-read every ``revoked_refresh_s`` seconds. A database
        without the registry's rows (an ingester on its own database) revokes nobody."""
        now = time.monotonic()
        if now - self._revoked_read < self.config.revoked_refresh_s:
            return self._revoked
        try:
            with self.engine.connect() as conn:
                ids = conn.execute(select(fleet_devices.c.id).where(fleet_devices.c.revoked_at.is_not(None)))
                self._revoked = frozenset(str(i) for i in ids.scalars())
            self._revoked_read = now
        except SQLAlchemyError as exc:
            # keep the last known set; the write below meets the same database and retries
            log.warning("ingest: cannot read revoked devices (%s); using the last known %d",
                        first_line(exc, typed=True), len(self._revoked))
        return self._revoked

    @staticmethod
    def _refuse_revoked(m: _Incoming, p: Parsed | Rejected, revoked: frozenset[str]) -> Parsed | Rejected:
        if isinstance(p, Rejected) or p.device_id not in revoked:
            return p
        seq = p.envelope.seq if p.envelope is not None else None
        return Rejected(topic=m.topic, reason=f"revoked: device {p.device_id!r} is revoked in the registry",
                        category="revoked", device_id=p.device_id, seq=seq, payload=m.payload, truncated=False)

    def _commit(self, items: list[tuple[_Incoming, Parsed | Rejected]]) -> dict[str, set[int]] | None:
        """Write the batch in one transaction; returns the seqs to confirm per device, None if stopping.

        A batch the database refuses is split until the refused message is alone; that one becomes a
        reject. A database that cannot be reached is retried with backoff, acknowledging nothing.
        """
        attempt = 0
        while True:
            try:
                with self.engine.begin() as conn:
                    outcome = self._write(conn, items)
                self._count(outcome)
                return outcome.confirms
            except (OperationalError, InterfaceError) as exc:
                # Connection trouble or a locked SQLite file: transient, retry the same batch.
                self.stats.db_retries += 1
                self.stats.last_error = f"database: {first_line(exc, typed=True)}"
                delay = backoff_delay(attempt, 0.2, 10.0, self._rng)
                attempt += 1
                log.error("ingest: database unavailable (%s); retrying in %.1f s", first_line(exc, typed=True), delay)
                if self._stop.wait(delay):
                    return None
            except DBAPIError as exc:
                if len(items) > 1:
                    merged: dict[str, set[int]] = defaultdict(set)
                    for item in items:
                        part = self._commit([item])
                        if part is None:
                            return None
                        for dev, seqs in part.items():
                            merged[dev] |= seqs
                    return merged
                m, parsed = items[0]
                if isinstance(parsed, Rejected):
                    # Even the reject row was refused: nothing more can be stored; say so loudly.
                    log.error("ingest: cannot store the rejected payload from %s either (%s); dropping it",
                              m.topic, first_line(exc, typed=True))
                    self.stats.rejected["unstorable"] += 1
                    return {}
                device_id, seq = salvage_key(m.topic, m.payload)
                items = [(m, Rejected(topic=m.topic, reason=f"the database refused it: {first_line(exc, typed=True)}",
                                      category="database", device_id=device_id, seq=seq, payload=m.payload,
                                      truncated=False))]

    @dataclass(slots=True)
    class _Outcome:
        messages: int = 0
        records: int = 0
        duplicates: int = 0
        statuses: int = 0
        rejected: list[Rejected] = field(default_factory=list)
        confirms: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))

    def _insert(self, table: Any) -> Any:
        return (pg_insert if self._dialect == "postgresql" else sqlite_insert)(table)

    def _write(self, conn: Connection, items: list[tuple[_Incoming, Parsed | Rejected]]) -> Ingester._Outcome:
        out = Ingester._Outcome()
        now = datetime.now(UTC)
        msg_rows: list[dict[str, Any]] = []
        envelopes: dict[tuple[str, int], Parsed] = {}
        devices: dict[str, dict[str, Any]] = {}

        def seen(device_id: str) -> dict[str, Any]:
            return devices.setdefault(device_id, {"device_id": device_id, "first_seen": now, "last_seen": now,
                                                  "last_seq": None, "status": None, "status_at": None,
                                                  "runtime": None})

        for _m, p in items:
            if isinstance(p, Rejected):
                out.rejected.append(p)
                if p.device_id is not None and p.seq is not None:
                    out.confirms[p.device_id].add(p.seq)
                continue
            if p.status is not None:
                d = seen(p.device_id)
                d["status"], d["status_at"] = p.status.state, as_time(p.status.ts) or now
                d["runtime"] = p.status.runtime
                out.statuses += 1
                continue
            env = p.envelope
            assert env is not None
            key = (env.device_id, env.seq)
            out.confirms[env.device_id].add(env.seq)
            if key in envelopes:
                out.duplicates += 1
                continue
            envelopes[key] = p
            msg_rows.append({"device_id": env.device_id, "seq": env.seq, "uuid": str(env.uuid), "kind": env.kind,
                             "created": as_time(env.created), "received_at": now, "n_records": len(env.records)})
        if msg_rows:
            stmt = self._insert(telemetry_messages).on_conflict_do_nothing(
                index_elements=["device_id", "seq"]).returning(telemetry_messages.c.device_id,
                                                               telemetry_messages.c.seq)
            fresh = {(r[0], r[1]) for r in conn.execute(stmt, msg_rows)}
            out.duplicates += len(msg_rows) - len(fresh)
            rows: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
            objects: list[tuple[Any, ...]] = []  # telemetry_detections, after their records
            for key in fresh:
                env = envelopes[key].envelope
                assert env is not None
                build = ROW_BUILDERS[env.kind]
                t = self._time
                for idx, rec in enumerate(env.records):
                    extracted = build(rec)
                    extracted["ts"] = t(extracted["ts"])
                    # pydantic-core's encoder: several times faster than json.dumps on the hot path
                    rows[env.kind].append((env.device_id, env.seq, idx, *extracted.values(),
                                           to_json(rec).decode("utf-8")))
                    if env.kind == "telemetry" and "detections" in rec:
                        # telemetry_detections' column order: the key, obj, the record's ts and
                        # model, then label, score, x1, y1, x2, y2
                        objects.extend((env.device_id, env.seq, idx, o[0], extracted["ts"],
                                        extracted["model_name"], extracted["model_version"], *o[1:])
                                       for o in detection_rows(rec))
                d = seen(env.device_id)
                d["last_seq"] = max(env.seq, d["last_seq"] or 0)
                out.messages += 1
            for kind, kind_rows in rows.items():
                conn.exec_driver_sql(self._insert_sql(kind), kind_rows)
                out.records += len(kind_rows)
            if objects:
                conn.exec_driver_sql(self._insert_sql("detections"), objects)
        if out.rejected:
            conn.execute(insert(telemetry_rejects), [
                {"received_at": now, "topic": r.topic, "device_id": r.device_id, "seq": r.seq,
                 "reason": r.reason.replace("\x00", "\\0"), "size": len(r.payload), "payload": r.payload,
                 "truncated": int(r.truncated)} for r in out.rejected])
        for dev in devices.values():
            self._upsert_device(conn, dev)
        return out

    def _insert_sql(self, kind: str) -> str:
        """One INSERT per record table for the driver's executemany.

        Record rows are the bulk of the work; SQLAlchemy's per-row parameter processing cost more
        than the database itself, so these rows go to the driver directly (the column order is
        the row builder's, checked against the table at import).
        """
        if kind == "detections":
            cols = _DETECTION_COLUMNS
            marks = ", ".join(("%s" if self._dialect == "postgresql" else "?") for _ in cols)
            return f"INSERT INTO {telemetry_detections.name} ({', '.join(cols)}) VALUES ({marks})"
        cols = ["device_id", "seq", "idx", *_ROW_COLUMNS[kind], "record"]
        if self._dialect == "postgresql":
            marks = ", ".join("CAST(%s AS JSONB)" if c == "record" else "%s" for c in cols)
        else:
            marks = ", ".join("?" for _ in cols)
        return f"INSERT INTO {_TABLES[kind].name} ({', '.join(cols)}) VALUES ({marks})"

    def _time(self, t: datetime | None) -> Any:
        if t is None or self._dialect != "sqlite":
            return t
        # SQLAlchemy's own SQLite DATETIME text form (UTC), so reads through the Table work as usual.
        if t.utcoffset():
            t = t.astimezone(UTC)
        return t.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")

    def _upsert_device(self, conn: Connection, row: dict[str, Any]) -> None:
        t = telemetry_devices
        stmt = self._insert(t).values(**row)
        ex = stmt.excluded
        conn.execute(stmt.on_conflict_do_update(index_elements=["device_id"], set_={
            "last_seen": ex.last_seen,
            "last_seq": case((t.c.last_seq.is_(None), ex.last_seq), (ex.last_seq > t.c.last_seq, ex.last_seq),
                             else_=t.c.last_seq),
            "status": func.coalesce(ex.status, t.c.status),
            "status_at": func.coalesce(ex.status_at, t.c.status_at),
            "runtime": func.coalesce(ex.runtime, t.c.runtime),
        }))

    def _count(self, out: Ingester._Outcome) -> None:
        self.stats.messages += out.messages
        self.stats.records += out.records
        self.stats.duplicates += out.duplicates
        self.stats.statuses += out.statuses
        for r in out.rejected:
            self.stats.rejected[r.category] += 1
            self._logged_rejects += 1
            # Log the first ones and then one in a hundred, so a flood cannot fill the disk with logs.
            if self._logged_rejects <= 20 or self._logged_rejects % 100 == 0:
                log.warning("ingest: rejected a %d-byte payload on %s: %s (%d rejected so far)",
                            len(r.payload), r.topic, r.reason, sum(self.stats.rejected.values()))

    def _ack(self, batch: list[_Incoming]) -> None:
        client = self._client
        assert client is not None
        with self._gen_lock:
            current = self._gen
            for m in batch:
                if m.qos > 0 and m.gen == current:
                    client.ack(m.mid, m.qos)

    def _confirm(self, confirms: dict[str, set[int]]) -> None:
        if not self.config.confirm or self._client is None:
            return
        for device_id, seqs in confirms.items():
            if not seqs:
                continue
            payload = json.dumps({"schema": SCHEMA_VERSION, "device_id": device_id, "seqs": sorted(seqs)},
                                 separators=(",", ":"))
            self._client.publish(f"edge/{device_id}/cmd/ack", payload, qos=1)
            self.stats.confirms_sent += 1

    def _announce(self, device_ids: Iterable[str]) -> None:
        """Tell each device, once per connection, that this ingester serves it: those of a batch
        just committed, and the configured ones once the subscriptions stand.

        Only then: the subscriptions are in place, so a device that switches to
        waiting for confirmations is one whose messages reach this ingester's session.
        """
        if not self.config.confirm or self._client is None:
            return
        announced = self._announced
        for device_id in dict.fromkeys(device_ids):
            if device_id in announced:
                continue
            payload = IngestAnnouncement.model_validate(
                {"schema": SCHEMA_VERSION, "ingester": self.config.service_name, "ts": utc_now()})
            info = self._client.publish(topic_for(device_id, INGEST_ANNOUNCE_LEAF),
                                        payload.model_dump_json(by_alias=True), qos=1, retain=True)
            if info.rc != 0:
                # Not connected at this instant (paho refuses rather than queues): not announced, so
                # the next commit or connection tries again. paho's is_published() would raise on such
                # an info and take the writer thread down with it.
                log.debug("ingest: announcement to %s deferred (%s)", device_id, info.rc)
                continue
            self._announcing = [i for i in self._announcing if i.rc == 0 and not i.is_published()] + [info]
            announced.add(device_id)
            self.stats.announcements += 1
            log.debug("ingest: announced on %s", topic_for(device_id, INGEST_ANNOUNCE_LEAF))




def retire(config: IngestConfig, *, timeout: float = 30.0) -> list[str]:
    """Remove an ingester for good: clear its announcements and drop its session on the broker.

    Every retained announcement naming ``config.service_name`` is replaced by a retained retirement
    notice (``retired: true``), so its devices go back to deleting rows at the broker's PUBACK (and
    delete the messages they were keeping for it: the broker has them); a device that is offline
    now reads the notice when it connects (an empty message would leave nothing to read, and the
    device, which remembers its ingester, would keep waiting). An ingester that starts later
    replaces the notice with its announcement. Then connecting with the ingester's client id and
    a clean session makes the broker forget the session, which would otherwise queue messages for a
    consumer that never comes back. Stop the ingester first: the broker lets one client use a client
    id at a time. Returns the device ids whose announcement was cleared.
    """
    cfg = config.mqtt
    try:
        client = create_client(cfg, client_id=config.client_id, clean_session=True)
    except TelemetryError as exc:
        raise IngestError(str(exc)) from exc
    found: dict[str, IngestAnnouncement] = {}
    subacks: list[list[ReasonCode]] = []
    connected = threading.Event()
    synced = threading.Event()
    refused: list[str] = []

    def on_connect(c: Client, u: Any, flags: ConnectFlags, reason: ReasonCode, p: Properties | None) -> None:
        if reason.is_failure:
            refused.append(str(reason))
        connected.set()

    def on_subscribe(c: Client, u: Any, mid: int, reasons: list[ReasonCode], p: Properties | None) -> None:
        subacks.append(reasons)
        if len(subacks) == 2:
            synced.set()

    def on_message(c: Client, u: Any, message: MQTTMessage) -> None:
        if not message.retain or not message.payload:
            return
        try:
            found[message.topic] = IngestAnnouncement.model_validate_json(message.payload)
        except ValidationError:
            log.warning("ingest: ignoring an announcement this version cannot read on %s", message.topic)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    try:
        client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
    except OSError as exc:
        raise IngestError(f"cannot connect to {cfg.safe_url}: {exc}") from exc
    client.loop_start()
    try:
        if not connected.wait(timeout) or refused:
            raise IngestError(f"{cfg.safe_url} refused the connection: {refused[0] if refused else 'timed out'}")
        # QoS 0: the broker writes the retained messages out while it handles the first SUBSCRIBE,
        # so once the second SUBACK is in, every announcement has arrived.
        client.subscribe(ANNOUNCE_FILTER, qos=0)
        client.subscribe(ANNOUNCE_FILTER, qos=0)
        if not synced.wait(timeout):
            raise IngestError(f"{cfg.safe_url} did not answer the subscription to {ANNOUNCE_FILTER}")
        if any(r.is_failure for reasons in subacks for r in reasons):
            raise IngestError(f"the broker refused the subscription to {ANNOUNCE_FILTER}: the ingester's ACL "
                              "must allow reading it (run `edge cloud broker-config` again)")
        client.unsubscribe(ANNOUNCE_FILTER)
        mine = sorted(t for t, a in found.items() if a.ingester == config.service_name and not a.retired)
        notice = IngestAnnouncement.model_validate({"schema": SCHEMA_VERSION, "ingester": config.service_name,
                                                    "ts": utc_now(), "retired": True})
        infos = [client.publish(t, notice.model_dump_json(by_alias=True), qos=1, retain=True) for t in mine]
        for info in infos:
            info.wait_for_publish(timeout)
            if not info.is_published():
                raise IngestError(f"{cfg.safe_url} did not acknowledge clearing the announcements")
    finally:
        client.disconnect()
        client.loop_stop()
    cleared = [t.split("/")[1] for t in mine]  # edge/D/cmd/ingest
    log.info("ingest: retired %s: cleared %d announcement(s), session dropped", config.service_name, len(cleared))
    return cleared
