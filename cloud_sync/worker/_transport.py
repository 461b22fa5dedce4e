"""The one interface between the worker and a message broker.

The worker (:mod:`._worker`) knows nothing of AMQP: it receives :class:`Delivery` objects from
``consume`` and answers each with ``publish`` (the result, then) ``ack``, or ``reject`` (dead-letter
it, with the error). A transport guarantees at-least-once delivery: a message neither acked nor
rejected when the worker stops or dies is given again, to this worker or another.

RabbitMQ (AMQP 0-9-1) is :mod:`._amqp`. A Kafka transport (confluent-kafka) fits as one module:

- ``consume``: a ``Consumer`` in a consumer group (``group.id`` = the queue name, so several workers
  share the topic's partitions as several AMQP consumers share a queue), ``enable.auto.commit=False``,
  polling ``poll(timeout)`` until ``stop()``; a Delivery's ``tag`` is ``(partition, offset)``,
  ``headers`` the record headers, ``reply_to`` / ``correlation_id`` read from headers of those names
  (Kafka has no such properties).
- ``ack``: ``commit(offsets=[TopicPartition(topic, partition, offset + 1)], asynchronous=False)``. Kafka
  acknowledges by offset, in order per partition, so the worker must ack in order (it does: one
  message at a time) and the prefetch becomes ``max.poll.records``-like batching.
- ``reject``: ``produce`` the record to ``<topic>.dead`` with the error in headers, ``flush``, then commit
  its offset (Kafka has no broker-side dead-lettering).
- ``publish``: ``Producer.produce(destination, value, headers={"correlation_id": ...})`` with
  ``enable.idempotence=True`` and a ``flush()`` (or a delivery callback) before the ack.
- ``stop``: set a flag; ``close`` calls ``Consumer.close()``, which leaves the group so its partitions
  are reassigned; uncommitted offsets are consumed again by whoever gets the partition.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["Delivery", "Handler", "Transport"]


@dataclass(frozen=True)
class Delivery:
    """One message as the worker sees it, whatever the broker."""

    #: the transport's own handle, for ack/reject (AMQP: the delivery tag)
    tag: Any
    body: bytes
    content_type: str | None = None
    #: where the answer goes (AMQP ``reply_to``); None: the worker's results destination
    reply_to: str | None = None
    correlation_id: str | None = None
    message_id: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    #: the broker gave this message before (to a worker that did not ack it)
    redelivered: bool = False


#: what ``consume`` calls for each delivery; it acks or rejects it before returning
Handler = Callable[[Delivery], None]


@runtime_checkable
class Transport(Protocol):
    """A broker connection that feeds one queue to one worker."""

    def consume(self, handler: Handler) -> None:
        """Call ``handler`` for each delivery, one at a time, until :meth:`stop`; then return.

        Deliveries the broker sent ahead (prefetch) but the handler has not started are given back
        to the broker before returning, so another worker takes them."""

    def ack(self, delivery: Delivery) -> None:
        """The message is done (its result was published): the broker forgets it."""

    def reject(self, delivery: Delivery, error: str, code: str) -> None:
        """The message can never be answered: move it to the dead-letter destination with ``error``
        and ``code``, and take it off the queue, so it blocks nothing."""

    def publish(self, destination: str, body: bytes, *, correlation_id: str | None = None,
                content_type: str = "application/json", headers: Mapping[str, Any] | None = None) -> None:
        """Send ``body`` to ``destination`` (a queue name) and return once the broker has it."""

    def stop(self) -> None:
        """Ask :meth:`consume` to return after the delivery in hand; safe from a signal handler."""

    def close(self) -> None:
        """Close the connection (idempotent)."""
