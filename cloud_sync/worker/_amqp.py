"""The RabbitMQ transport (AMQP 0-9-1, pika's BlockingConnection).

- The request queue is declared durable (a queue that exists with other arguments is used as it
  is); ``<queue>.dead`` (dead letters) and the results queue are declared durable beside it. As a
  quorum queue (``queue_type="quorum"``) it also has a delivery limit and the broker's own
  dead-lettering to ``<queue>.dead``: a message that crashes every worker taking it is dead-lettered
  by the broker after ``delivery_limit`` deliveries. (Messages given back at a graceful stop count as
  deliveries too, so keep the limit above the number of restarts one message may live through.)
- ``basic.qos`` bounds the deliveries in hand to ``prefetch``; acks are manual and sent only after
  the result is published and confirmed by the broker (publisher confirms), so a worker that dies at
  any instant loses nothing: its unacked messages go back to the queue.
- A poison message is republished to ``<queue>.dead`` with the error in its headers (``x-error``,
  ``x-error-code``, ``x-original-queue``, and the original ``reply_to`` / ``correlation_id``), then acked.
- ``stop()`` only sets a flag (safe in a signal handler): the delivery in hand finishes, those sent
  ahead are nacked with requeue (``basic.cancel`` of a manual-ack consumer), the connection closes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

from ._errors import BrokerUnavailableError, UndeliverableError, WorkerError
from ._transport import Delivery, Handler

__all__ = ["DEFAULT_DELIVERY_LIMIT", "QUEUE_TYPES", "AmqpTransport", "dead_letter_queue"]

log = logging.getLogger(__name__)

_PRECONDITION_FAILED = 406
QUEUE_TYPES = ("classic", "quorum")
#: deliveries of one message a quorum queue allows before the broker dead-letters it
DEFAULT_DELIVERY_LIMIT = 5


def dead_letter_queue(queue: str) -> str:
    return f"{queue}.dead"


class AmqpTransport:
    """One connection, one channel, one consumer on ``queue``."""

    def __init__(self, url: str, queue: str, *, prefetch: int = 4, results: str | None = None,
                 queue_type: str = "classic", delivery_limit: int | None = None, poll_s: float = 0.2) -> None:
        if not queue:
            raise WorkerError("the queue name is empty")
        if not 1 <= prefetch <= 1000:
            raise WorkerError(f"prefetch must be between 1 and 1000, not {prefetch}")
        if queue_type not in QUEUE_TYPES:
            raise WorkerError(f"queue type {queue_type!r} is not one of {', '.join(QUEUE_TYPES)}")
        if delivery_limit is not None and (queue_type != "quorum" or delivery_limit < 1):
            raise WorkerError("a delivery limit needs --queue-type quorum and is at least 1")
        self.url = url
        self.queue = queue
        self.dead = dead_letter_queue(queue)
        self.results = results
        self.prefetch = prefetch
        self._poll_s = poll_s
        self._stopping = False
        self._consumer_tag: str | None = None
        try:
            params = pika.URLParameters(url)
        except (ValueError, TypeError) as exc:
            raise WorkerError(f"broker URL {_safe(url)} is invalid: {exc}") from exc
        try:
            self._conn = pika.BlockingConnection(params)
        except pika.exceptions.AMQPError as exc:
            raise BrokerUnavailableError(f"cannot connect to the broker {_safe(url)}: {exc!r}") from exc
        try:
            self._ch = self._open_channel()
            self._declare(queue, self._queue_arguments(queue_type, delivery_limit), strict=queue_type != "classic")
            self._declare(self.dead)
            if results:
                self._declare(results)
        except pika.exceptions.ChannelClosedByBroker as exc:  # access refused, ...: settings, not weather
            self.close()
            raise WorkerError(f"cannot set up the queues on {_safe(url)}: {exc!r}") from exc
        except pika.exceptions.AMQPError as exc:
            self.close()
            raise BrokerUnavailableError(f"lost the broker {_safe(url)} while declaring the queues: {exc!r}") from exc
        except BaseException:
            self.close()
            raise

    # -- setup -------------------------------------------------------------------------------
    def _open_channel(self) -> BlockingChannel:
        ch = self._conn.channel()
        ch.confirm_delivery()
        ch.basic_qos(prefetch_count=self.prefetch)
        return ch

    def _queue_arguments(self, queue_type: str, delivery_limit: int | None) -> dict[str, Any] | None:
        if queue_type == "classic":
            return None
        # A message that kills every worker that takes it (a crash in the backend, out of memory) is
        # never acked nor rejected: the quorum queue counts its deliveries and, past the limit, the
        # broker itself dead-letters it to <queue>.dead, so it cannot crash-loop the workers.
        return {"x-queue-type": "quorum", "x-delivery-limit": delivery_limit or DEFAULT_DELIVERY_LIMIT,
                "x-dead-letter-exchange": "", "x-dead-letter-routing-key": self.dead}

    def _declare(self, name: str, arguments: dict[str, Any] | None = None, *, strict: bool = False) -> None:
        try:
            self._ch.queue_declare(name, durable=True, arguments=arguments)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != _PRECONDITION_FAILED:
                raise
            if strict:  # asked for a quorum queue: a classic one would silently lose the delivery limit
                raise WorkerError(f"queue {name!r} exists with other settings than asked ({exc.reply_text}); "
                                  "delete it or drop --queue-type/--delivery-limit") from exc
            # It exists with other arguments (a quorum queue, a TTL, its own dead-lettering): use it.
            log.info("queue %s exists with other settings (%s); using it as it is", name, exc.reply_text)
            self._ch = self._open_channel()
            self._ch.queue_declare(name, passive=True)

    # -- Transport ---------------------------------------------------------------------------
    def consume(self, handler: Handler) -> None:
        def on_message(ch: BlockingChannel, method: Basic.Deliver, props: BasicProperties, body: bytes) -> None:
            if self._stopping:
                # Sent ahead, not started: back to the queue for another worker.
                ch.basic_nack(method.delivery_tag, requeue=True)
                return
            handler(Delivery(tag=method.delivery_tag, body=body, content_type=props.content_type,
                             reply_to=props.reply_to, correlation_id=props.correlation_id,
                             message_id=props.message_id, headers=dict(props.headers or {}),
                             redelivered=bool(method.redelivered)))

        try:
            self._consumer_tag = self._ch.basic_consume(self.queue, on_message, auto_ack=False)
            log.info("consuming %s on %s (prefetch %d)", self.queue, _safe(self.url), self.prefetch)
            while not self._stopping:
                self._conn.process_data_events(time_limit=self._poll_s)
            # Manual-ack consumer: pika nacks (requeue) whatever was delivered but not dispatched.
            self._ch.basic_cancel(self._consumer_tag)
        except pika.exceptions.AMQPError as exc:
            raise BrokerUnavailableError(f"lost the broker {_safe(self.url)}: {exc!r}; unacked messages go "
                                         "back to the queue") from exc
        log.info("stopped consuming %s", self.queue)

    def ack(self, delivery: Delivery) -> None:
        try:
            self._ch.basic_ack(delivery.tag)
        except pika.exceptions.AMQPError as exc:
            raise BrokerUnavailableError(f"cannot ack a message on {self.queue}: {exc!r}") from exc

    def reject(self, delivery: Delivery, error: str, code: str) -> None:
        headers = {**delivery.headers, "x-error": error[:4000], "x-error-code": code,
                   "x-original-queue": self.queue}
        if delivery.reply_to:
            headers["x-original-reply-to"] = delivery.reply_to
        self.publish(self.dead, delivery.body, correlation_id=delivery.correlation_id,
                     content_type=delivery.content_type or "application/octet-stream", headers=headers)
        self.ack(delivery)

    def publish(self, destination: str, body: bytes, *, correlation_id: str | None = None,
                content_type: str = "application/json", headers: Mapping[str, Any] | None = None) -> None:
        props = BasicProperties(content_type=content_type, correlation_id=correlation_id, delivery_mode=2,
                                headers=dict(headers) if headers else None)
        try:
            # mandatory: a queue that does not exist is said (UnroutableError), not silently dropped;
            # with confirms on, this returns once the broker has taken the message.
            self._ch.basic_publish("", destination, body, props, mandatory=True)
        except pika.exceptions.UnroutableError as exc:
            raise UndeliverableError(f"no queue {destination!r} on the broker") from exc
        except pika.exceptions.NackError as exc:
            raise UndeliverableError(f"the broker refused a message for {destination!r}") from exc
        except pika.exceptions.AMQPError as exc:
            raise BrokerUnavailableError(f"cannot publish to {destination!r}: {exc!r}") from exc

    def stop(self) -> None:
        self._stopping = True

    def close(self) -> None:
        try:
            if self._conn.is_open:
                self._conn.close()
        except pika.exceptions.AMQPError as exc:  # closing a dead connection: nothing left to do
            log.debug("closing the broker connection: %r", exc)


def _safe(url: str) -> str:
    """The URL without its password, for messages and logs."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
