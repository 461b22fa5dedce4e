"""The worker: deliveries in, records out, whatever the transport."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType

from edge_runtime import PublicKey

from .._host import BundleHost, RequestError
from ._errors import BrokerUnavailableError, UndeliverableError
from ._transport import Delivery, Transport

__all__ = ["Worker", "WorkerStats", "results_queue", "stop_on_signals"]

log = logging.getLogger(__name__)


def results_queue(queue: str) -> str:
    """Where results go when a request names no ``reply_to``."""
    return f"{queue}.results"


@dataclass
class WorkerStats:
    answered: int = 0       # results published and acked
    dead: int = 0           # poison messages moved to the dead-letter queue
    unroutable: int = 0     # results whose reply_to queue did not exist (the message is still acked)
    reconnects: int = 0     # times the connection to the broker was lost and made again

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Worker:
    """Answers each delivery with a record (``edge_runtime.make_record``) as JSON.

    The result goes to the message's ``reply_to`` with its ``correlation_id``, or to ``results``
    when it names none; the message is acked only after the broker has the result. A message that
    cannot be answered (not an image, malformed JSON, a tensor of the wrong shape) goes to the
    dead-letter queue with the error; a requester waiting on ``reply_to`` also gets an error record,
    so it never waits for an answer that will not come.
    """

    def __init__(self, host: BundleHost, transport: Transport, *, results: str, name: str = "worker",
                 reconnect: Callable[[], Transport] | None = None, reconnect_min_s: float = 0.5,
                 reconnect_max_s: float = 15.0) -> None:
        self.host = host
        self.transport = transport
        self.results = results
        self.name = name
        #: makes a new transport when the broker is lost (None: a lost broker ends :meth:`run`)
        self.reconnect = reconnect
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self._stopping = False
        #: sent with every result (header ``x-worker``), so a client can tell the workers apart
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.stats = WorkerStats()

    @classmethod
    def open(cls, bundle: str | Path, broker: str, queue: str, *, prefetch: int = 4, results: str | None = None,
             queue_type: str = "classic", delivery_limit: int | None = None, backend: str | None = None,
             threads: int | None = None, pubkey: PublicKey | list[PublicKey] | None = None) -> Worker:
        """Load the bundle, connect to the AMQP ``broker`` and declare the queues."""
        from ._amqp import AmqpTransport

        host = BundleHost.open(bundle, backend=backend, threads=threads, pubkey=pubkey)
        results = results or results_queue(queue)

        def connect() -> Transport:
            return AmqpTransport(broker, queue, prefetch=prefetch, results=results, queue_type=queue_type,
                                 delivery_limit=delivery_limit)

        try:
            transport = connect()  # the first connection fails fast: a wrong URL is said at once
        except BaseException:
            host.close()
            raise
        return cls(host, transport, results=results, name=queue, reconnect=connect)

    def run(self) -> WorkerStats:
        """Consume until :meth:`stop`; the delivery in hand is finished first. A lost broker is
        reconnected to (backing off up to ``reconnect_max_s``); its unacked messages come again."""
        while not self._stopping:
            try:
                self.transport.consume(self.handle)
                break
            except BrokerUnavailableError as exc:
                if self.reconnect is None or self._stopping:
                    raise
                log.warning("%s; reconnecting", exc)
                self.transport.close()
                if not self._reconnect():
                    break
        log.info("worker %s done: %s", self.name, self.stats.as_dict())
        return self.stats

    def _reconnect(self) -> bool:
        assert self.reconnect is not None
        delay = self.reconnect_min_s
        while not self._stopping:
            deadline = time.monotonic() + delay
            while not self._stopping and time.monotonic() < deadline:
                time.sleep(0.05)  # short naps: a signal's stop() is seen at once
            if self._stopping:
                break
            try:
                self.transport = self.reconnect()
            except BrokerUnavailableError as exc:
                log.warning("%s; next attempt in %.1f s", exc, min(delay * 2, self.reconnect_max_s))
                delay = min(delay * 2, self.reconnect_max_s)
                continue
            self.stats.reconnects += 1
            log.warning("reconnected to the broker")
            return True
        return False

    def stop(self) -> None:
        """Stop after the delivery in hand; safe from a signal handler."""
        self._stopping = True
        self.transport.stop()

    def close(self) -> None:
        self.transport.close()
        self.host.close()

    def handle(self, d: Delivery) -> None:
        n = self.stats.answered + self.stats.dead
        source = f"{self.name}:{d.message_id or d.correlation_id or n}"
        try:
            record = self.host.answer(d.body, content_type=d.content_type, source=source, frame=n)
        except RequestError as exc:
            self._dead(d, source, n, exc, exc.code)
            return
        except Exception as exc:  # a model that throws on one message must not stop the queue
            log.exception("unexpected error answering %s", source)
            self._dead(d, source, n, exc, "internal")
            return
        self._send(d.reply_to or self.results, json.dumps(record).encode(), d.correlation_id, {})
        self.transport.ack(d)
        self.stats.answered += 1

    def _dead(self, d: Delivery, source: str, n: int, exc: Exception, code: str) -> None:
        log.warning("dead-lettering %s: %s", source, exc)
        if d.reply_to:
            rec = self.host.error(exc, source=source, frame=n)
            self._send(d.reply_to, json.dumps(rec).encode(), d.correlation_id, {"x-error-code": code})
        self.transport.reject(d, str(exc), code)
        self.stats.dead += 1

    def _send(self, dest: str, body: bytes, correlation_id: str | None, headers: dict[str, str]) -> None:
        try:
            self.transport.publish(dest, body, correlation_id=correlation_id,
                                   headers={**headers, "x-worker": self.worker_id})
        except UndeliverableError as exc:
            # The requester left (its exclusive reply queue is gone): nobody can take this answer.
            log.warning("result for %s not delivered: %s", correlation_id or "a message", exc)
            self.stats.unroutable += 1


def stop_on_signals(worker: Worker, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
    """Make SIGTERM/SIGINT stop ``worker`` gracefully (from the main thread only)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: finishing the message in hand", signum)
        worker.stop()

    for s in signals:
        signal.signal(s, handler)
