"""Hybrid routing against the real cloud service, through a TCP proxy that adds latency, resets
and black holes, while the service itself is SIGKILLed and started again.

Frames are fed one at a time, so each record can be checked against the network's state at that
moment: every frame answered, by the right path, for the right reason, and no frame waiting on
the network longer than its deadline.
"""

from __future__ import annotations

import queue
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_device.agent import Agent, BreakerConfig, CircuitBreaker, load_config
from edge_runtime import load_image
from edge_runtime.sources import Frame, Source
from tests.support.agent import IMAGES, ListSink, admin, agent_config, register, start_service
from tests.support.net import wait_for
from tests.support.servers import TcpProxy
from tests.support.service import CloudService

CAT, SUNFLOWER = IMAGES / "cat.png", IMAGES / "sunflower.png"
DEADLINE_MS = 700.0
# Scheduling noise on a shared 2-core machine; the faults injected are seconds long, so a frame
# that really waited on the network would be far over this.
SLACK_MS = 300.0


class FeedSource(Source):
    """Frames of real image files, one each time the test says so."""

    live = True
    name = "feed"

    def __init__(self) -> None:
        self.q: queue.Queue[Path | None] = queue.Queue()

    def __iter__(self) -> Iterator[Frame]:
        i = 0
        while True:
            p = self.q.get()
            if p is None:
                return
            yield Frame(index=i, source=str(p), loader=lambda p=p: load_image(p))
            i += 1

    def close(self) -> None:
        self.q.put(None)


class Running:
    def __init__(self, agent: Agent, src: FeedSource, sink: ListSink) -> None:
        self.agent, self.src, self.sink = agent, src, sink

    def feed(self, path: Path) -> dict[str, Any]:
        n = len(self.sink.records)
        self.src.q.put(path)
        return self.sink.wait(n + 1)[-1]

    @property
    def breaker(self) -> CircuitBreaker:
        assert self.agent.router is not None
        return self.agent.router.breaker

    def wait_probe(self) -> None:
        wait_for(lambda: self.breaker.retry_in() == 0.0, 10, "the breaker's next probe")


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory, keys, release) -> Iterator[CloudService]:
    tmp = tmp_path_factory.mktemp("routing")
    svc = start_service(tmp, [keys[1]])
    admin(svc).publish(release(1), channel="stable")
    warm(svc)
    yield svc
    svc.stop()


def warm(svc: CloudService) -> None:
    """Load the model in the service, so that no deadline below is spent on a cold start."""
    res = admin(svc).classify(CAT, "mobilenet_v2", deadline=120)
    assert res["top_k"][0]["label"] == "Egyptian cat"


@pytest.fixture()
def proxy(cloud: CloudService) -> Iterator[TcpProxy]:
    p = TcpProxy(cloud.port)
    yield p
    p.close()


def start_agent(tmp_path: Path, keys, release, cloud: CloudService, proxy: TcpProxy, device: str,
                **router: Any) -> Running:
    token = register(cloud, device, tmp_path)
    breaker = {"failures": 2, "backoff_s": 0.4, "backoff_max_s": 0.8, "jitter": 0.5}
    cfg = load_config(data=agent_config(
        tmp_path, device_id=device, bundle=release(1), keys=keys, source="unused",
        router={"deadline_ms": DEADLINE_MS, "breaker": breaker, **router},
        cloud={"url": proxy.url, "token_file": str(token)}), environ={})
    src, sink = FeedSource(), ListSink()
    agent = Agent(cfg, source=src, extra_sinks=[sink])
    t = threading.Thread(target=agent.run, daemon=True)
    t.start()
    wait_for(lambda: agent.phase == "running", 60, "the agent to start")
    run = Running(agent, src, sink)
    run.thread = t  # type: ignore[attr-defined]
    return run


def stop_agent(run: Running) -> list[dict[str, Any]]:
    run.agent.stop()
    run.src.close()
    run.thread.join(30)  # type: ignore[attr-defined]
    assert run.agent.phase == "stopped"
    return run.sink.records


def check_all(records: list[dict[str, Any]], fed: int) -> None:
    """Every frame answered exactly once, with labels, and no frame waited past its deadline."""
    assert [r["frame"] for r in records] == list(range(fed))
    for r in records:
        assert "error" not in r, r
        assert r["top_k"], r
        assert r["path"] == ("cloud" if r["route"] in ("cloud-ok", "below-threshold") else "local"), r
        if "cloud_wait_ms" in r:
            assert r["cloud_wait_ms"] <= DEADLINE_MS + SLACK_MS, r


def local(r: dict[str, Any], route: str, label: str = "Egyptian cat") -> None:
    assert (r["path"], r["route"], r["top_k"][0]["label"]) == ("local", route, label), r
    assert r["model"] == {"name": "mobilenet_v2", "version": 1} and r["backend"] != "cloud"


def cloud_ok(r: dict[str, Any], route: str = "cloud-ok", label: str = "Egyptian cat") -> None:
    assert (r["path"], r["route"], r["backend"], r["top_k"][0]["label"]) == ("cloud", route, "cloud", label), r
    assert r["cloud_latency_ms"] > 0 and r["model"]["name"] == "mobilenet_v2"


def test_online_mode_through_latency_resets_blackholes_and_a_killed_service(
        tmp_path: Path, keys, release, cloud: CloudService, proxy: TcpProxy) -> None:
    run = start_agent(tmp_path, keys, release, cloud, proxy, "route-online", mode="online")
    fed = 0

    def feed(p: Path = CAT) -> dict[str, Any]:
        nonlocal fed
        fed += 1
        return run.feed(p)

    try:
        cloud_ok(feed())
        # latency: the cloud answers after 3 s; the frame waits its deadline, then answers locally
        proxy.set("delay", delay_s=3.0)
        local(feed(), "cloud-timeout")
        local(feed(SUNFLOWER), "cloud-timeout", "daisy")
        assert run.breaker.state == "open"
        before = proxy.connections
        local(feed(), "breaker-open")
        local(feed(SUNFLOWER), "breaker-open", "daisy")
        assert proxy.connections == before, "an open breaker must not touch the network"
        assert "cloud_wait_ms" not in run.sink.records[-1]
        # the cloud is back: the next probe closes the breaker
        proxy.set("pass")
        run.wait_probe()
        cloud_ok(feed())
        assert run.breaker.state == "closed"
        cloud_ok(feed(SUNFLOWER), label="daisy")
        # connection resets
        proxy.set("reset")
        local(feed(), "cloud-error")
        local(feed(), "cloud-error")
        local(feed(), "breaker-open")
        proxy.set("pass")
        run.wait_probe()
        cloud_ok(feed())
        # the service is killed: the probe fails, the breaker opens again for longer
        cloud.kill()
        local(feed(), "cloud-error")
        local(feed(), "cloud-error")
        local(feed(), "breaker-open")
        run.wait_probe()
        local(feed(), "cloud-error")  # the half-open probe
        assert run.breaker.state == "open"
        # ... and started again on the same port
        cloud.start()
        warm(cloud)
        run.wait_probe()
        cloud_ok(feed())
        # a black hole: accepts, never answers
        proxy.set("blackhole")
        local(feed(), "cloud-timeout")
        local(feed(), "cloud-timeout")
        local(feed(), "breaker-open")
        proxy.set("pass")
        run.wait_probe()
        cloud_ok(feed())
    finally:
        records = stop_agent(run)
    check_all(records, fed)
    routes = {r["route"] for r in records}
    assert routes == {"cloud-ok", "cloud-timeout", "cloud-error", "breaker-open"}


def test_cascade_asks_the_cloud_only_below_the_threshold(tmp_path: Path, keys, release, cloud: CloudService,
                                                          proxy: TcpProxy) -> None:
    run = start_agent(tmp_path, keys, release, cloud, proxy, "route-cascade", mode="cascade", threshold=0.9)
    fed = 0

    def feed(p: Path = CAT) -> dict[str, Any]:
        nonlocal fed
        fed += 1
        return run.feed(p)

    try:
        before = proxy.connections
        r = feed(SUNFLOWER)  # local top score 0.99
        local(r, "confident", "daisy")
        assert proxy.connections == before and "cloud_wait_ms" not in r
        r = feed(CAT)  # local top score 0.79 < 0.9: the cloud answers
        cloud_ok(r, "below-threshold")
        assert r["local_score"] == pytest.approx(0.789, abs=0.01)
        cloud.kill()
        local(feed(), "cloud-error")
        local(feed(), "cloud-error")
        local(feed(), "breaker-open")
        local(feed(SUNFLOWER), "confident", "daisy")
        cloud.start()
        warm(cloud)
        run.wait_probe()
        cloud_ok(feed(), "below-threshold")
    finally:
        records = stop_agent(run)
    check_all(records, fed)


def test_offline_mode_never_touches_the_network(tmp_path: Path, keys, release, cloud: CloudService,
                                                proxy: TcpProxy) -> None:
    run = start_agent(tmp_path, keys, release, cloud, proxy, "route-offline", mode="offline")
    try:
        for p in (CAT, SUNFLOWER, CAT):
            r = run.feed(p)
            assert (r["path"], r["route"]) == ("local", "offline-mode")
            lat = r["latency_ms"]  # decode and preprocessing are counted, as in `edge run`
            assert lat["preprocess"] > 0 and lat["total"] >= lat["preprocess"] + lat["inference"]
    finally:
        records = stop_agent(run)
    assert proxy.connections == 0
    assert [r["top_k"][0]["label"] for r in records] == ["Egyptian cat", "daisy", "Egyptian cat"]


# -- the breaker on its own: a clock the test turns -------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_breaker_opens_probes_once_and_backs_off_exponentially_with_jitter() -> None:
    clock = Clock()
    cfg = BreakerConfig(failures=3, backoff_s=2.0, backoff_max_s=8.0, jitter=0.5)
    b = CircuitBreaker(cfg, clock=clock, rng=random.Random(7))
    for _ in range(2):
        assert b.allow()
        b.failure()
    assert b.state == "closed"
    b.failure()
    assert b.state == "open" and not b.allow()
    first = b.retry_in()
    assert 1.0 <= first <= 2.0  # half fixed, half random
    clock.t += first
    assert b.allow()  # the probe
    assert b.state == "half-open" and not b.allow()  # only one probe at a time
    b.failure()
    second = b.retry_in()
    assert 2.0 <= second <= 4.0  # doubled
    clock.t += second
    assert b.allow()
    b.failure()
    clock.t += b.retry_in()
    assert b.allow()
    b.failure()
    assert 4.0 <= b.retry_in() <= 8.0  # capped at backoff_max_s
    clock.t += b.retry_in()
    assert b.allow()
    b.success()
    assert b.state == "closed" and b.allow() and b.retry_in() == 0.0
    # after a success the count starts over, and the backoff is short again
    for _ in range(3):
        b.failure()
    assert 1.0 <= b.retry_in() <= 2.0
    # a probe that was allowed but never made releases its slot
    clock.t += 2.0
    assert b.allow()
    b.release()
    assert b.allow()
