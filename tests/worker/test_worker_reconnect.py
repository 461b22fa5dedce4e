"""`edge worker` outlives its broker: RabbitMQ (this module's own, restartable on the same ports and
data) goes away and comes back; the same worker process answers again, and the message that was
waiting in the durable queue meanwhile is answered, not lost."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.net import wait_for
from tests.support.paths import ROOT
from tests.support.rabbitmq import RabbitMQ, Requester, consumer_count, declare_queue


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQ]:
    r = RabbitMQ(tmp_path_factory.mktemp("rabbitmq-restart")).start()
    yield r
    r.stop()


def test_the_worker_reconnects_after_a_broker_restart(rabbit: RabbitMQ, mobilenet_bundle: Path, tmp_path: Path,
                                                      reference_images: dict[str, Path]) -> None:
    cat = reference_images["cat.png"].read_bytes()
    declare_queue(rabbit.url, "r")
    err_path = tmp_path / "worker.err"
    with err_path.open("w") as err:
        worker = subprocess.Popen([sys.executable, "-m", "edge_cli", "worker", str(mobilenet_bundle), "--broker",
                                   rabbit.url, "--queue", "r"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for(lambda: consumer_count(rabbit.url, "r") == 1, 120, "the worker consuming", interval=0.2)
        client = Requester(rabbit.url, "r")
        client.send(cat, "before")
        (before,) = client.collect(1)
        client.close()

        rabbit.stop()
        rabbit.start()
        assert worker.poll() is None, err_path.read_text()
        # Published while the worker may still be reconnecting: it waits in the durable queue.
        client = Requester(rabbit.url, "r")
        client.send(cat, "after")
        (after,) = client.collect(1)
        client.close()
        assert after.correlation_id == "after"
        assert after.json()["top_k"][0]["label"] == "Egyptian cat"
        assert after.headers["x-worker"] == before.headers["x-worker"]  # the same process
    finally:
        worker.send_signal(signal.SIGTERM)
        rc = worker.wait(60)
    assert rc == 0, err_path.read_text()
    stats = json.loads(err_path.read_text().strip().splitlines()[-1])
    assert stats["answered"] == 2 and stats["reconnects"] >= 1, stats
