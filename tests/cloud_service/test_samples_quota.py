"""Per-device samples quota (EDGE_CLOUD_SAMPLES_MAX_PER_DEVICE, _MAX_BYTES_PER_DEVICE) with
retention: a new sample past either bound drops the device's oldest samples (rows and images);
one image larger than the whole byte quota is a 413 that changes nothing; devices do not share.
A rate limit (EDGE_CLOUD_SAMPLES_MAX_PER_MINUTE): past it a 429 that stores nothing."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from cloud_sync.service import ServiceSettings
from tests.support.service import ADMIN_TOKEN, Running, run_service

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MAX_BYTES = 4000


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    settings = ServiceSettings(data_dir=tmp_path_factory.mktemp("svc-quota"), admin_token=ADMIN_TOKEN,
                               samples_max_per_device=3, samples_max_bytes_per_device=MAX_BYTES)
    with run_service(settings) as running:
        yield running


def _device(url: str, device_id: str) -> dict[str, str]:
    r = httpx.post(f"{url}/api/v1/devices", headers=ADMIN, json={"id": device_id}, timeout=30)
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def _png(side: int, seed: int, noise: bool) -> bytes:
    rng = random.Random(seed)
    im = Image.new("RGB", (side, side), (seed % 256, 0, 0))
    if noise:
        im = Image.frombytes("RGB", (side, side), bytes(rng.randrange(256) for _ in range(side * side * 3)))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _send(url: str, auth: dict[str, str], data: bytes) -> httpx.Response:
    return httpx.post(f"{url}/api/v1/device/samples", headers=auth, timeout=30,
                      files={"image": ("s.png", data, "image/png")}, data={"metadata": "{}"})


def _kept(url: str, device_id: str) -> list[dict]:
    r = httpx.get(f"{url}/api/v1/samples", headers=ADMIN, params={"device_id": device_id}, timeout=30)
    return list(r.json())


def test_count_quota_drops_the_oldest(service: Running) -> None:
    auth = _device(service.url, "quota-count")
    other = _device(service.url, "quota-other")
    assert _send(service.url, other, _png(8, 999, noise=False)).status_code == 201
    ids = []
    for i in range(5):
        r = _send(service.url, auth, _png(8, i, noise=False))
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    kept = _kept(service.url, "quota-count")
    assert [s["id"] for s in kept] == ids[2:]
    for dropped in ids[:2]:
        assert httpx.get(f"{service.url}/api/v1/samples/{dropped}/image", headers=ADMIN, timeout=30).status_code == 404
    assert httpx.get(f"{service.url}/api/v1/samples/{ids[4]}/image", headers=ADMIN, timeout=30).status_code == 200
    store = Path(service.settings.resolved_storage_dir)
    assert len(list((store / "samples" / "quota-count").glob("*.png"))) == 3  # the images went too
    assert len(_kept(service.url, "quota-other")) == 1  # another device's samples are its own


def test_byte_quota_drops_the_oldest_and_refuses_one_larger_than_all(service: Running) -> None:
    auth = _device(service.url, "quota-bytes")
    sizes = []
    for i in range(3):
        data = _png(22, 100 + i, noise=True)  # ~1.3 KB each, incompressible
        sizes.append(len(data))
        assert _send(service.url, auth, data).status_code == 201
    assert sum(sizes) > MAX_BYTES  # the third one pushed the first out
    kept = _kept(service.url, "quota-bytes")
    assert sum(s["size"] for s in kept) <= MAX_BYTES
    assert [s["size"] for s in kept] == sizes[1:]
    before = [s["id"] for s in kept]
    big = _png(64, 7, noise=True)
    assert len(big) > MAX_BYTES
    r = _send(service.url, auth, big)
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "sample_quota" and str(MAX_BYTES) in r.json()["error"]["message"]
    assert [s["id"] for s in _kept(service.url, "quota-bytes")] == before  # nothing changed


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_rate_limit_is_a_429_that_stores_nothing(tmp_path: Path, request: pytest.FixtureRequest, db: str) -> None:
    url = request.getfixturevalue("postgres")() if db == "postgresql" else None
    settings = ServiceSettings(data_dir=tmp_path, database_url=url, admin_token=ADMIN_TOKEN, samples_max_per_minute=2)
    with run_service(settings) as svc:
        auth = _device(svc.url, "rate-1")
        other = _device(svc.url, "rate-2")
        first = _png(8, 1, noise=False)
        assert _send(svc.url, auth, first).status_code == 201
        assert _send(svc.url, auth, _png(8, 2, noise=False)).status_code == 201
        r = _send(svc.url, auth, _png(8, 3, noise=False))
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "rate_limited" and "a minute" in r.json()["error"]["message"]
        assert len(_kept(svc.url, "rate-1")) == 2
        # a resend of a stored sample is still answered (not new), and other devices are not limited
        again = _send(svc.url, auth, first)
        assert again.status_code == 200 and again.json()["duplicate"] is True
        assert _send(svc.url, other, _png(8, 3, noise=False)).status_code == 201
