"""`edge worker`: answer inference requests from a RabbitMQ queue."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from edge_runtime import load_public_key

from ._common import CliError

__all__ = ["worker_cmd"]

log = logging.getLogger(__name__)


@click.command("worker")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("--broker", required=True, envvar="EDGE_WORKER_BROKER", metavar="URL",
              help="AMQP URL, amqp://USER:PASS@HOST:5672/VHOST (amqps:// for TLS) (or EDGE_WORKER_BROKER).")
@click.option("--queue", required=True, envvar="EDGE_WORKER_QUEUE", help="Queue of requests (declared durable).")
@click.option("--prefetch", type=click.IntRange(1, 1000), default=4, show_default=True,
              help="Messages in hand at once (AMQP basic.qos); the rest stay in the queue for other workers.")
@click.option("--queue-type", type=click.Choice(["classic", "quorum"]), default="classic", show_default=True,
              help="Declare the queue as a quorum queue: replicated, and the broker dead-letters a message that "
                   "crashed the workers --delivery-limit times.")
@click.option("--delivery-limit", type=click.IntRange(min=1),
              help="Deliveries of one message before the broker dead-letters it (quorum queues) [default: 5].")
@click.option("--results", metavar="QUEUE",
              help="Where results of messages without reply_to go [default: QUEUE.results].")
@click.option("--backend", help="Backend to run the model on (default: the device profile's best).")
@click.option("--threads", type=click.IntRange(min=1), help="Backend threads.")
@click.option("--pubkey", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Trusted public key: the bundle must be signed by it (repeatable).")
def worker_cmd(bundle: Path, broker: str, queue: str, prefetch: int, queue_type: str, delivery_limit: int | None,
               results: str | None, backend: str | None, threads: int | None, pubkey: tuple[Path, ...]) -> None:
    """Answer inference requests from a RabbitMQ queue with records.

    A message is an image (JPEG, PNG, ...) or an Open Inference Protocol JSON tensor
    (application/json, batch 1). The record JSON goes to the message's reply_to with its
    correlation_id (or to --results). Messages are acked after their result is published; one that
    cannot be answered goes to QUEUE.dead with the error in its x-error header. Run as many workers
    on one queue as you like. SIGTERM finishes the message in hand and exits 0. A broker lost while
    running is reconnected to; it gives the unacked messages again.
    """
    from cloud_sync.worker import Worker, stop_on_signals

    try:  # before any work: a machine without the extra hears it at once
        import pika  # noqa: F401
    except ImportError as exc:
        raise CliError("edge worker needs pika (the AMQP client): pip install 'edge-runtime[worker]'") from exc
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # pika logs every failed connection attempt with a traceback; the worker's error says it once.
        logging.getLogger("pika").setLevel(logging.CRITICAL)
    keys = [load_public_key(p) for p in pubkey] or None
    if delivery_limit is not None and queue_type != "quorum":
        raise CliError("--delivery-limit needs --queue-type quorum (classic queues do not count deliveries)")
    worker = Worker.open(bundle, broker, queue, prefetch=prefetch, results=results, queue_type=queue_type,
                         delivery_limit=delivery_limit, backend=backend, threads=threads, pubkey=keys)
    stop_on_signals(worker)
    m = worker.host.model
    click.echo(f"worker: {m.name} v{m.version} on {m.backend_name}, queue {queue} (prefetch {prefetch}), "
               f"results to reply_to or {worker.results}, dead letters to {queue}.dead", err=True)
    try:
        stats = worker.run()
    finally:
        worker.close()
    click.echo(json.dumps({"worker": queue, **stats.as_dict()}), err=True)
