"""/metrics with several workers: ``edge cloud serve --workers 2`` as a subprocess, many requests
on fresh connections (so both workers answer), /metrics scraped again and again (each scrape
reaches either worker) and parsed with prometheus_client's own parser. Counters never go
backwards and add up to exactly the requests sent; an inference error is counted; every live
worker reports its process_* metrics."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge_device.client import CloudClient
from tests.support.keys import Keys
from tests.support.net import free_port, wait_for
from tests.support.paths import env_with_project
from tests.support.service import ADMIN_TOKEN, MakeSigned

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
LIVE = ("GET", "/v2/health/live", "200")
INFER_OK = ("POST", "/v2/models/{name}/infer", "200")
INFER_BAD = ("POST", "/v2/models/{name}/infer", "400")

_STALE = """
from prometheus_client import Counter
c = Counter("edge_http_requests", "x", ("method", "route", "status"))
c.labels("GET", "/v2/health/live", "200").inc(1000)
"""


@contextlib.contextmanager
def _serve(tmp: Path, keys: Keys, workers: int) -> Iterator[tuple[str, Path]]:
    prom = tmp / "prom"
    prom.mkdir()
    env = {**env_with_project(), "EDGE_CLOUD_ADMIN_TOKEN": ADMIN_TOKEN, "PROMETHEUS_MULTIPROC_DIR": str(prom),
           "EDGE_CLOUD_MAX_BATCH_WAIT_MS": "1"}
    # an earlier run's files: `edge cloud serve` must start from an empty directory
    subprocess.run([sys.executable, "-c", _STALE], env=env, check=True)
    assert list(prom.glob("counter_*.db"))
    port = free_port()
    cfg = tmp / "cloud.toml"
    cfg.write_text(f'data_dir = "{tmp / "data"}"\ntrusted_keys = ["{keys.public}"]\n')
    log = (tmp / "serve.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "edge_cli", "cloud", "serve", "--config", str(cfg),
                             "--port", str(port), "--workers", str(workers), "--log-level", "warning"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, (tmp / "serve.log").read_text()
        try:
            return httpx.get(url + "/v2/health/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(ready, 90, f"edge cloud serve --workers {workers}")
        yield url, prom
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[tuple[str, Path]]:
    with _serve(tmp_path_factory.mktemp("metrics-workers"), keys, 2) as running:
        yield running


def _scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    # a new connection each time: the kernel hands it to either worker
    r = httpx.get(url + "/metrics", timeout=30, headers={"Connection": "close"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def _requests(m: dict[str, dict[tuple[tuple[str, str], ...], float]], key: tuple[str, str, str]) -> float:
    labels = tuple(sorted({"method": key[0], "route": key[1], "status": key[2]}.items()))
    return m.get("edge_http_requests_total", {}).get(labels, 0.0)


def test_counters_add_up_over_workers_and_never_go_backwards(served: tuple[str, Path],
                                                             make_signed: MakeSigned) -> None:
    url, prom = served
    CloudClient(url, ADMIN_TOKEN, timeout=120).publish(make_signed(1), channel="stable")
    x = np.zeros((1, 224, 224, 3), np.uint8)
    good = {"inputs": [{"name": "input", "shape": [1, 224, 224, 3], "datatype": "UINT8",
                        "data": x.reshape(-1).tolist()}]}
    bad = {"inputs": [{"name": "input", "shape": [1, 2, 2, 3], "datatype": "UINT8", "data": [0] * 12}]}
    sent = {LIVE: 0, INFER_OK: 0, INFER_BAD: 0}
    history: list[dict[tuple[str, str, str], float]] = []
    for rnd in range(12):
        for _ in range(5):
            assert httpx.get(url + "/v2/health/live", headers={"Connection": "close"}).status_code == 200
            sent[LIVE] += 1
        r = httpx.post(url + "/v2/models/mobilenet_v2/infer", json=good, timeout=120,
                       headers={**AUTH, "Connection": "close"})
        assert r.status_code == 200, r.text
        sent[INFER_OK] += 1
        if rnd % 4 == 0:
            r = httpx.post(url + "/v2/models/mobilenet_v2/infer", json=bad, timeout=120,
                           headers={**AUTH, "Connection": "close"})
            assert r.status_code == 400
            sent[INFER_BAD] += 1
        for _ in range(3):
            m = _scrape(url)
            history.append({k: _requests(m, k) for k in sent})
    # never backwards, scrape after scrape, whichever worker answered
    for before, after in itertools.pairwise(history):
        for k in sent:
            assert after[k] >= before[k], (k, before, after)

    # once the last responses are counted: exactly what was sent (the stale run's 1000 is gone)
    def settled() -> bool:
        m = _scrape(url)
        return all(_requests(m, k) == n for k, n in sent.items())

    wait_for(settled, 30, "the request counters to settle")
    m = _scrape(url)
    assert {k: _requests(m, k) for k in sent} == {k: float(n) for k, n in sent.items()}
    # inference: items and errors (by model and error code)
    assert m["edge_inference_items_total"][(("model", "mobilenet_v2"),)] == sent[INFER_OK]
    assert m["edge_inference_errors_total"][(("code", "bad_shape"), ("model", "mobilenet_v2"))] == sent[INFER_BAD]
    # process_* metrics, one series per live worker
    workers = {dict(k)["worker"] for k in m["process_cpu_seconds_total"]}
    assert len(workers) == 2, workers
    assert all(int(w) != os.getpid() for w in workers)
    assert all(v > 0 for v in m["process_resident_memory_bytes"].values())
    # the workers wrote their files where `edge cloud serve` was told to
    assert {p.name.rsplit("_", 1)[1].removesuffix(".db") for p in prom.glob("counter_*.db")} >= workers


def test_a_killed_worker_keeps_its_counts_and_leaves_the_live_series(served: tuple[str, Path]) -> None:
    """SIGKILL one worker (uvicorn starts another): what it counted stays in the sums, its
    process_* series and its live gauge go."""
    url, prom = served
    for _ in range(4):
        assert httpx.get(url + "/v2/health/live", headers={"Connection": "close"}).status_code == 200
    wait_for(lambda: len({dict(k)["worker"] for k in _scrape(url)["process_cpu_seconds_total"]}) == 2, 30,
             "both workers")
    before = _scrape(url)
    workers = {dict(k)["worker"] for k in before["process_cpu_seconds_total"]}
    victim = int(sorted(workers)[0])
    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        now = {dict(k)["worker"] for k in _scrape(url)["process_cpu_seconds_total"]}
        return len(now) == 2 and str(victim) not in now

    wait_for(replaced, 60, "uvicorn to replace the killed worker")
    after = _scrape(url)
    assert _requests(after, LIVE) >= _requests(before, LIVE) >= 4  # what the dead worker counted is kept
    assert after["edge_inference_items_total"] == before["edge_inference_items_total"]
    assert not list(prom.glob(f"gauge_livesum_{victim}.db"))
    assert list(prom.glob(f"counter_{victim}.db"))  # its counts are still read


def test_one_worker_with_the_variable_set_starts_from_an_empty_directory(tmp_path: Path, keys: Keys) -> None:
    with _serve(tmp_path, keys, 1) as (url, prom):
        for _ in range(3):
            assert httpx.get(url + "/v2/health/live").status_code == 200
        # 3, not the earlier run's 1000 more
        wait_for(lambda: _requests(_scrape(url), LIVE) == 3, 30, "three requests counted")
        workers = {dict(k)["worker"] for k in _scrape(url)["process_cpu_seconds_total"]}
        assert len(workers) == 1
        assert {f.name.rsplit("_", 1)[1].removesuffix(".db") for f in prom.glob("counter_*.db")} == workers
