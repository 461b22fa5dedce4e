"""The device's telemetry: a sink for pipeline records, events and metrics, durable and offline-proof.

Threads, and why each exists::

    caller (pipeline sink thread) ── write()/emit(): encode, append to an in-memory list, return
    committer ── moves that list into the outbox in one transaction (group commit: one fsync for
                 everything that arrived during the previous one)
    publisher ── outbox → MQTT (see _publisher); never touched by the caller

So ``write`` costs a JSON encode and a list append: a slow SD card or a dead broker cannot slow
inference. A record is durable once the committer's transaction is done (``commit()`` waits for that);
between the two it lives in memory, a window of one commit (a few milliseconds), bounded by
``max_pending`` records past which the lowest-priority ones are dropped and counted, never blocking.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from edge_runtime import Record

from ._config import KINDS, TelemetryConfig
from ._errors import OutboxError, RecordError, TelemetryError
from ._metrics import MetricsCollector
from ._mqtt import check_mqtt_files
from ._outbox import EncodedRecord, Outbox
from ._publisher import Publisher
from ._schema import utc_now_iso

__all__ = ["Telemetry", "open_telemetry"]

log = logging.getLogger(__name__)
_PRIORITY = {k: i for i, k in enumerate(KINDS)}


class Telemetry:
    """Durable, batched MQTT telemetry for one device. Use as a sink (``write``/``close``)."""

    def __init__(self, config: TelemetryConfig, *, clock: Callable[[], float] = time.time,
                 start: bool = True) -> None:
        check_mqtt_files(config.mqtt)  # a missing certificate fails now, not at the first reconnect
        self.config = config
        self.device_id = config.device_id
        self.outbox = Outbox.from_config(config, clock=clock)
        self.collector = MetricsCollector()
        self._cond = threading.Condition()
        self._buffer: list[EncodedRecord] = []
        self._overflow: Counter[str] = Counter()
        self._accepted = 0  # records taken by emit()
        self._settled = 0  # records committed to the outbox or dropped from the buffer
        self._closing = False
        self._closed = False
        self.rejected = 0
        self._committer = threading.Thread(target=self._commit_loop, name=f"edge-outbox-{self.device_id}",
                                           daemon=True)
        self.publisher = Publisher(self.outbox, config, metrics=self.metrics_record)
        if start:
            self.start()

    def start(self) -> None:
        self._committer.start()
        self.publisher.start()

    # ------------------------------------------------------------------ accepting records

    def write(self, record: Record) -> None:
        """Sink interface: queue one pipeline result (kind ``telemetry``).

        A record that can never be sent (not JSON, too large) is logged and counted in
        ``rejected`` instead of raised: a pipeline disables a sink that raises, and one bad frame
        must not stop the telemetry of all the others.
        """
        try:
            self.emit(record, "telemetry")
        except RecordError as exc:
            if self.rejected <= 10 or self.rejected % 1000 == 0:
                log.warning("telemetry: record not queued (%d so far): %s", self.rejected, exc)

    def event(self, name: str, **fields: Any) -> None:
        """Queue an event (highest priority: dropped last), e.g. ``event("update_started", version=3)``."""
        self.emit({"ts": utc_now_iso(), "event": name, **fields}, "events")

    def emit(self, record: Mapping[str, Any], kind: str = "telemetry") -> None:
        """Queue a record; raises :class:`RecordError` for a record that can never be sent."""
        try:
            encoded = self.outbox.encode(record, kind)
        except TelemetryError:
            self.rejected += 1
            raise
        if kind == "telemetry":
            self.collector.observe(record)
        with self._cond:
            if self._closing:
                raise TelemetryError("telemetry is closed; the record was not queued")
            self._buffer.append(encoded)
            self._accepted += 1
            if len(self._buffer) > self.config.max_pending:
                self._shed_buffer()
            self._cond.notify_all()

    def _shed_buffer(self) -> None:
        # The disk is not keeping up: drop the oldest record of the lowest priority, as the outbox would.
        victim = min(range(len(self._buffer)), key=lambda i: (_PRIORITY[self._buffer[i].kind], i))
        dropped = self._buffer.pop(victim)
        self._overflow[dropped.kind] += 1
        self._settled += 1

    # ------------------------------------------------------------------ the committer thread

    def _commit_loop(self) -> None:
        while True:
            with self._cond:
                while not self._buffer and not self._overflow and not self._closing:
                    self._cond.wait()
                if not self._buffer and not self._overflow and self._closing:
                    return
                items, self._buffer = self._buffer, []
                overflow, self._overflow = self._overflow, Counter()
            try:
                self.outbox.append_encoded(items)
                for kind, n in overflow.items():
                    self.outbox.add_dropped(kind, "overflow", n)
                    log.warning("telemetry: %d %s record(s) dropped: the outbox could not keep up", n, kind)
            except OutboxError as exc:
                log.error("telemetry: %s; retrying", exc)
                with self._cond:
                    # Put them back in front, keeping order; the bound still applies.
                    self._buffer[:0] = items
                    self._overflow.update(overflow)
                    while len(self._buffer) > self.config.max_pending:
                        self._shed_buffer()
                    if self._closing and self._closed:
                        return
                    self._cond.wait(1.0)
                continue
            with self._cond:
                self._settled += len(items)
                self._cond.notify_all()

    def commit(self, timeout: float = 10.0) -> bool:
        """Wait until every record accepted so far is on disk (or counted as dropped)."""
        with self._cond:
            target = self._accepted
            return self._cond.wait_for(lambda: self._settled >= target, timeout)

    def flush(self, timeout: float = 30.0) -> bool:
        """Commit, then wait until the outbox is empty: every record confirmed (cloud) or acknowledged."""
        deadline = time.monotonic() + timeout
        if not self.commit(timeout):
            return False
        return self.publisher.wait_idle(max(0.0, deadline - time.monotonic()))

    def listen(self, topic: str, handler: Callable[[str, bytes], None],
               retained: Sequence[tuple[str, bytes]] = (), on_ready: Callable[[], None] | None = None) -> None:
        """Read ``topic`` and keep ``retained`` messages published, on telemetry's own MQTT
        connection (see :meth:`Publisher.listen`): one connection per device."""
        self.publisher.listen(topic, handler, retained, on_ready)

    def set_status(self, **fields: Any) -> None:
        """Add fields to the retained ``edge/D/status`` message, e.g. the running model:
        ``set_status(model={"name": "mobilenet_v2", "version": 3})``."""
        self.publisher.set_status(**fields)

    def report_metrics(self) -> None:
        """Append a metrics record at the publisher's next turn (otherwise every ``metrics_interval_s``)."""
        self.publisher.request_metrics()

    # ------------------------------------------------------------------ reporting

    def metrics_record(self) -> dict[str, Any]:
        """The record sent on ``edge/D/metrics`` (runs on the publisher thread)."""
        snap = self.collector.snapshot()
        stats = self.outbox.stats()
        pub = self.publisher.stats
        by_kind = {k: sum(r.values()) for k, r in stats.dropped.items()}
        by_reason: Counter[str] = Counter()
        for reasons in stats.dropped.values():
            by_reason.update(reasons)
        return {
            "ts": utc_now_iso(),
            **snap,
            "outbox": {"rows": stats.rows, "bytes": stats.bytes, "pending": stats.pending,
                       "unconfirmed_messages": stats.sealed_messages, "oldest_age_s": stats.oldest_age_s,
                       "appended_total": stats.appended_total, "confirmed_total": stats.confirmed_total},
            "dropped": {"total": stats.dropped_total, "by_kind": by_kind, "by_reason": dict(by_reason),
                        "detail": stats.dropped},
            "mqtt": {"connected": pub.connected, "connects": pub.connects, "disconnects": pub.disconnects,
                     "published": pub.published, "resent": pub.resent,
                     "delivery": pub.delivery_mode, "ingester": pub.ingester},
            "rejected_records": self.rejected,
        }

    def stats(self) -> dict[str, Any]:
        with self._cond:
            buffered = len(self._buffer)
        return {"device_id": self.device_id, "buffered": buffered, "rejected": self.rejected,
                "outbox": self.outbox.stats().as_dict(), "mqtt": self.publisher.stats.as_dict(),
                "publisher_alive": self.publisher.is_alive()}

    # ------------------------------------------------------------------ closing

    def close(self, drain_s: float = 2.0) -> None:
        """Commit what was accepted, publish for up to ``drain_s`` more, then disconnect.

        Whatever is not delivered by then stays in the outbox for the next run.
        """
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify_all()
        if self._committer.is_alive():
            self._committer.join(30.0)
        self.publisher.stop(drain_s)
        with self._cond:
            self._closed = True
        self.outbox.close()

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_telemetry(
    mqtt_url: str,
    device_id: str,
    outbox: str | Path | None = None,
    *,
    username: str | None = None,
    password: str | None = None,
    password_file: str | Path | None = None,
    ca_file: str | Path | None = None,
    cert_file: str | Path | None = None,
    key_file: str | Path | None = None,
    start: bool = True,
    **settings: Any,
) -> Telemetry:
    """Build a :class:`Telemetry` sink from flat options (what ``edge run --mqtt`` uses).

    ``settings`` takes the other :class:`TelemetryConfig` sections as dicts (``batch={...}``,
    ``delivery={...}``, ``outbox_limits={...}``, ``metrics_interval_s=...``, ``mqtt_options={...}``).
    """
    mqtt: dict[str, Any] = {"url": mqtt_url, **settings.pop("mqtt_options", {})}
    for key, value in (("username", username), ("password", password), ("password_file", password_file),
                       ("ca_file", ca_file), ("cert_file", cert_file), ("key_file", key_file)):
        if value is not None:
            mqtt[key] = value
    outbox_cfg: dict[str, Any] = dict(settings.pop("outbox_limits", {}))
    if outbox is not None:
        outbox_cfg["path"] = outbox
    config = TelemetryConfig.build(device_id=device_id, mqtt=mqtt, outbox=outbox_cfg, **settings)
    return Telemetry(config, start=start)
