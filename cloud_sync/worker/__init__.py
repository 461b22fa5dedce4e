"""``edge worker``: a bundle answering inference requests from a message queue.

Each message is one request: an encoded image (JPEG, PNG, ...) or one tensor in the Open Inference
Protocol's JSON form (``application/json``, batch 1). The answer is the record JSON of
``edge_runtime.make_record``, published to the message's ``reply_to`` with its ``correlation_id``
(or to ``<queue>.results``). Acks are manual and follow the confirmed publish of the result;
prefetch bounds the messages in hand; a poison message goes to ``<queue>.dead`` with the error in its
headers (``x-error``, ``x-error-code``) and never blocks the queue; SIGTERM finishes the message in
hand, gives back those sent ahead, and exits. Any number of workers may share a queue. A broker lost
while running is reconnected to (with back-off); the broker gives its unacked messages again.

>>> w = Worker.open("mobilenet/", "amqp://guest:guest@localhost:5672/%2F", "images")  # doctest: +SKIP
>>> stop_on_signals(w); w.run()                                                      # doctest: +SKIP

The broker sits behind :class:`Transport` (``_transport.py``, which also says how a Kafka transport
maps onto it); RabbitMQ's is :class:`AmqpTransport`, imported only when used (needs the ``[worker]``
extra: pika).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._host import BundleHost, HostError, RequestError
from ._errors import BrokerUnavailableError, UndeliverableError, WorkerError
from ._transport import Delivery, Handler, Transport
from ._worker import Worker, WorkerStats, results_queue, stop_on_signals

if TYPE_CHECKING:
    from ._amqp import AmqpTransport

__all__ = [
    "AmqpTransport",
    "BrokerUnavailableError",
    "BundleHost",
    "Delivery",
    "Handler",
    "HostError",
    "RequestError",
    "Transport",
    "UndeliverableError",
    "Worker",
    "WorkerError",
    "WorkerStats",
    "dead_letter_queue",
    "results_queue",
    "stop_on_signals",
]


def dead_letter_queue(queue: str) -> str:
    """Where poison messages of ``queue`` go."""
    return f"{queue}.dead"


def __getattr__(name: str) -> Any:
    if name == "AmqpTransport":  # pika is imported only by who uses it
        from ._amqp import AmqpTransport

        return AmqpTransport
    raise AttributeError(name)
