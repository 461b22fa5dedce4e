"""`edge worker` against a real RabbitMQ (one broker for this module, started by the test on free
ports): images and OIP JSON tensors in, records out to reply_to with the correlation id, poison
messages to the dead-letter queue, two workers on one queue, SIGTERM mid-stream losing nothing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pika.exceptions
import pytest

from tests.support.data import MOBILENET_TOP1
from tests.support.net import wait_for
from tests.support.paths import ROOT
from tests.support.rabbitmq import RabbitMQ, Requester, consumer_count, declare_queue, drain, queue_depth


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQ]:
    with RabbitMQ(tmp_path_factory.mktemp("rabbitmq")) as r:
        yield r


StartWorker = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def start_worker(rabbit: RabbitMQ, mobilenet_bundle: Path, tmp_path: Path) -> Iterator[StartWorker]:
    """`edge worker` processes on a queue, waited for until they consume; stopped (SIGTERM) at the end."""
    procs: list[subprocess.Popen[str]] = []

    def start(queue: str, *extra: str, wait_consumers: int = 1, declare: bool = True) -> subprocess.Popen[str]:
        if declare:  # or the worker declares it (its own kind) and the wait below needs it to exist
            declare_queue(rabbit.url, queue)
        err = (tmp_path / f"worker{len(procs)}.err").open("w")
        p = subprocess.Popen([sys.executable, "-m", "edge_cli", "worker", str(mobilenet_bundle),
                              "--broker", rabbit.url, "--queue", queue, *extra],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, text=True)
        err.close()
        p.err_path = Path(err.name)  # type: ignore[attr-defined]
        procs.append(p)

        def consuming() -> bool:
            if p.poll() is not None:
                raise AssertionError(f"edge worker exited: {Path(err.name).read_text()}")
            try:
                return consumer_count(rabbit.url, queue) >= wait_consumers
            except pika.exceptions.ChannelClosedByBroker:  # not declared yet
                return False

        wait_for(consuming, 120, f"a worker consuming {queue}", interval=0.2)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.fixture(scope="module")
def image_bytes(reference_images: dict[str, Path]) -> dict[str, bytes]:
    return {name: p.read_bytes() for name, p in reference_images.items()}


def oip_request(mobilenet_bundle: Path, image: Path) -> bytes:
    """The model's own input tensor for ``image`` (preprocessed by the runtime), as OIP JSON."""
    from edge_runtime import Model, load_image

    with Model.load(mobilenet_bundle) as m:
        (t,) = m.preprocess(load_image(image))
        spec = m.manifest.inputs[0]
    assert t.dtype.name == "uint8"
    return json.dumps({"id": "r1", "inputs": [{"name": spec.name, "datatype": "UINT8", "shape": list(t.shape),
                                                "data": t.reshape(-1).tolist()}]}).encode()


def test_images_are_answered_with_their_labels_and_correlation_ids(
        rabbit: RabbitMQ, start_worker: StartWorker, image_bytes: dict[str, bytes]) -> None:
    start_worker("images")
    client = Requester(rabbit.url, "images")
    ids = {f"corr-{name}": name for name in image_bytes}
    for cid, name in ids.items():
        client.send(image_bytes[name], cid, content_type="image/png")
    replies = client.collect(len(ids))
    client.close()
    assert sorted(r.correlation_id or "" for r in replies) == sorted(ids)
    for r in replies:
        rec = r.json()
        assert r.content_type == "application/json"
        assert rec["top_k"][0]["label"] == MOBILENET_TOP1[ids[r.correlation_id or ""]], rec
        assert rec["model"] == {"name": "mobilenet_v2", "version": 1}
        assert rec["path"] == "local" and "error" not in rec
        assert set(rec["latency_ms"]) >= {"preprocess", "inference", "postprocess", "total"}


def test_without_reply_to_the_result_goes_to_the_results_queue_and_a_vanished_reply_to_blocks_nothing(
        rabbit: RabbitMQ, start_worker: StartWorker, image_bytes: dict[str, bytes]) -> None:
    worker = start_worker("noreply")
    client = Requester(rabbit.url, "noreply")
    # A requester whose reply queue is gone: the answer cannot be delivered, the message is still done.
    client.send(image_bytes["cat.png"], "left", reply_to="amq.gen-no-such-queue")
    client.send(image_bytes["sunflower.png"], "sun", reply=False)
    wait_for(lambda: queue_depth(rabbit.url, "noreply.results") == 1, 60, "a result on noreply.results")
    (msg,) = drain(rabbit.url, "noreply.results")
    client.close()
    assert msg.correlation_id == "sun"
    assert msg.json()["top_k"][0]["label"] == "daisy"
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    stats = json.loads(Path(worker.err_path).read_text().strip().splitlines()[-1])  # type: ignore[attr-defined]
    assert stats == {"worker": "noreply", "answered": 2, "dead": 0, "unroutable": 1, "reconnects": 0}
    assert queue_depth(rabbit.url, "noreply") == 0


def test_an_oip_json_tensor_is_answered(rabbit: RabbitMQ, start_worker: StartWorker, mobilenet_bundle: Path,
                                        reference_images: dict[str, Path]) -> None:
    start_worker("tensors")
    client = Requester(rabbit.url, "tensors")
    body = oip_request(mobilenet_bundle, reference_images["cat.png"])
    client.send(body, "t1", content_type="application/json")
    client.send(body, "t2")  # no content type: a body starting with '{' is JSON
    replies = client.collect(2)
    client.close()
    assert sorted(r.correlation_id or "" for r in replies) == ["t1", "t2"]
    for r in replies:
        rec = r.json()
        assert rec["top_k"][0]["label"] == "Egyptian cat", rec
        assert rec["latency_ms"]["preprocess"] == 0.0


def test_poison_messages_go_to_the_dead_letter_queue_and_the_queue_moves_on(
        rabbit: RabbitMQ, start_worker: StartWorker, image_bytes: dict[str, bytes], mobilenet_bundle: Path,
        reference_images: dict[str, Path]) -> None:
    worker = start_worker("mixed", "--prefetch", "1")
    client = Requester(rabbit.url, "mixed")
    good = json.loads(oip_request(mobilenet_bundle, reference_images["cat.png"]))
    wrong_shape = {"inputs": [{**good["inputs"][0], "shape": [1, 112, 112, 3],
                               "data": good["inputs"][0]["data"][: 112 * 112 * 3]}]}
    client.send(b"\x00\x01 this is not an image", "garbage")
    client.send(json.dumps(wrong_shape).encode(), "shape", content_type="application/json")
    client.send(b"{not json", "badjson", content_type="application/json")
    client.send(image_bytes["grace_hopper.png"], "good1")
    client.send(image_bytes["potato_chips.png"], "good2")
    replies = {r.correlation_id: r for r in client.collect(5)}
    client.close()
    assert set(replies) == {"garbage", "shape", "badjson", "good1", "good2"}
    assert replies["good1"].json()["top_k"][0]["label"] == "military uniform"
    assert replies["good2"].json()["top_k"][0]["label"] == "packet"
    # The requester of a poison message hears why, instead of waiting forever ...
    assert "not an image" in replies["garbage"].json()["error"]
    assert "takes shape [1, 224, 224, 3], got [1, 112, 112, 3]" in replies["shape"].json()["error"]
    assert replies["shape"].headers["x-error-code"] == "bad_shape"
    # ... and the message itself is in the dead-letter queue, untouched, with the error in its headers.
    wait_for(lambda: queue_depth(rabbit.url, "mixed.dead") == 3, 30, "three dead letters")
    dead = {m.correlation_id: m for m in drain(rabbit.url, "mixed.dead")}
    assert set(dead) == {"garbage", "shape", "badjson"}
    assert dead["garbage"].body == b"\x00\x01 this is not an image"
    assert dead["garbage"].headers["x-error-code"] == "bad_image"
    assert dead["shape"].headers["x-error-code"] == "bad_shape"
    assert "112" in dead["shape"].headers["x-error"]
    assert dead["badjson"].headers["x-error-code"] == "bad_json"
    assert dead["badjson"].headers["x-original-queue"] == "mixed"
    assert queue_depth(rabbit.url, "mixed") == 0
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    stats = json.loads(Path(worker.err_path).read_text().strip().splitlines()[-1])  # type: ignore[attr-defined]
    assert stats == {"worker": "mixed", "answered": 2, "dead": 3, "unroutable": 0, "reconnects": 0}


def test_two_workers_share_one_queue(rabbit: RabbitMQ, start_worker: StartWorker,
                                     image_bytes: dict[str, bytes]) -> None:
    start_worker("shared", "--prefetch", "1")
    start_worker("shared", "--prefetch", "1", wait_consumers=2)
    client = Requester(rabbit.url, "shared")
    names = list(image_bytes)
    n = 24
    for i in range(n):
        client.send(image_bytes[names[i % len(names)]], f"m{i}")
    replies = client.collect(n)
    client.close()
    assert sorted(r.correlation_id or "" for r in replies) == sorted(f"m{i}" for i in range(n))
    by_worker = Counter(r.headers["x-worker"] for r in replies)
    assert len(by_worker) == 2 and all(c > 0 for c in by_worker.values()), by_worker
    for r in replies:
        i = int((r.correlation_id or "m0")[1:])
        assert r.json()["top_k"][0]["label"] == MOBILENET_TOP1[names[i % len(names)]]


def test_sigterm_mid_stream_loses_nothing(rabbit: RabbitMQ, start_worker: StartWorker,
                                          image_bytes: dict[str, bytes]) -> None:
    worker = start_worker("drain", "--prefetch", "8")
    client = Requester(rabbit.url, "drain")
    n = 300
    body = image_bytes["sunflower.png"]
    sent = [f"{i}-{uuid.uuid4().hex[:6]}" for i in range(n)]
    for cid in sent:
        client.send(body, cid)
    first = client.collect(5)
    assert len(first) == 5
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    stats = json.loads(Path(worker.err_path).read_text().strip().splitlines()[-1])  # type: ignore[attr-defined]
    answered = stats["answered"]
    rest = client.collect(answered - len(first), timeout=30) if answered > len(first) else []
    client.close()
    replied = [r.correlation_id for r in [*first, *rest]]
    assert len(replied) == answered and len(set(replied)) == answered  # every result once
    assert 0 < answered < n, "the worker must have been stopped mid-stream"
    # Everything not answered is back in the queue (the prefetched ones too), none lost, none twice.
    left = [m.correlation_id for m in drain(rabbit.url, "drain")]
    assert sorted([*replied, *left]) == sorted(sent)
    assert stats["dead"] == 0


def test_a_killed_worker_loses_nothing_another_worker_answers_its_messages(
        rabbit: RabbitMQ, start_worker: StartWorker, image_bytes: dict[str, bytes]) -> None:
    victim = start_worker("killed", "--prefetch", "4")
    client = Requester(rabbit.url, "killed")
    n = 60
    sent = [f"k{i}" for i in range(n)]
    for cid in sent:
        client.send(image_bytes["grace_hopper.png"], cid)
    first = client.collect(3)
    victim.send_signal(signal.SIGKILL)  # no goodbye: its unacked messages must come back
    victim.wait(30)
    start_worker("killed")
    rest = client.collect(n - len(first), timeout=300)
    extra = client.collect(4, timeout=2)  # at-least-once: a result published just before the kill may repeat
    client.close()
    answered = [r.correlation_id for r in [*first, *rest, *extra]]
    assert set(answered) == set(sent)
    assert len(answered) - len(set(answered)) <= 1  # at most the one in hand when it died
    assert queue_depth(rabbit.url, "killed") == 0


def test_a_quorum_queue_dead_letters_a_message_that_keeps_killing_workers(
        rabbit: RabbitMQ, start_worker: StartWorker, image_bytes: dict[str, bytes]) -> None:
    import pika

    quorum = ("--queue-type", "quorum", "--delivery-limit", "2")
    first = start_worker("crashy", *quorum, declare=False)
    first.send_signal(signal.SIGTERM)
    assert first.wait(60) == 0
    client = Requester(rabbit.url, "crashy", declare=False)
    client.send(b"a message that crashes whoever takes it", "boom")
    # What a crashing worker does: take the message and vanish without ack or reject.
    takes = 0
    for _ in range(10):
        conn = pika.BlockingConnection(pika.URLParameters(rabbit.url))
        method, _props, _body = conn.channel().basic_get("crashy", auto_ack=False)
        conn.close()
        if method is None:
            break
        takes += 1
    assert takes == 3  # the first delivery and two more: then the broker gives up on it
    wait_for(lambda: queue_depth(rabbit.url, "crashy.dead") == 1, 30, "the broker's dead letter")
    (dead,) = drain(rabbit.url, "crashy.dead")
    assert dead.correlation_id == "boom"
    assert dead.headers["x-death"][0]["reason"] == "delivery_limit"
    # The queue is not blocked: a worker on it answers what comes next.
    start_worker("crashy", *quorum, declare=False)
    client.send(image_bytes["cat.png"], "next")
    (reply,) = client.collect(1)
    client.close()
    assert reply.correlation_id == "next" and reply.json()["top_k"][0]["label"] == "Egyptian cat"


def test_asking_for_a_quorum_queue_where_a_classic_one_exists_is_an_error(rabbit: RabbitMQ,
                                                                          mobilenet_bundle: Path) -> None:
    declare_queue(rabbit.url, "classic")
    proc = subprocess.run([sys.executable, "-m", "edge_cli", "worker", str(mobilenet_bundle), "--broker", rabbit.url,
                           "--queue", "classic", "--queue-type", "quorum"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1
    assert "queue 'classic' exists with other settings than asked" in proc.stderr.strip().splitlines()[-1]
