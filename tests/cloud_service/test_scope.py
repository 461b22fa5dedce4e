"""Device reads are scoped to what the device is assigned: its own model (any other is a 404, as if
it did not exist) and the versions its channel has pointed at (others, e.g. beta for a stable
device, are a 403). The admin reads everything."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from cloud_sync.service import ServiceSettings
from edge_device.client import CloudClient
from tests.support.keys import Keys
from tests.support.service import ADMIN_TOKEN, MakeSigned, Running, run_service

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, keys: Keys, make_signed: MakeSigned) -> Iterator[Running]:
    settings = ServiceSettings(data_dir=tmp_path_factory.mktemp("svc-scope"), admin_token=ADMIN_TOKEN,
                               trusted_keys=[keys.public])
    with run_service(settings) as running:
        admin = CloudClient(running.url, ADMIN_TOKEN, timeout=60)
        admin.publish(make_signed(1, name="m1"), channel="stable")
        admin.publish(make_signed(2, name="m1"), channel="beta")
        admin.publish(make_signed(1, name="m2"), channel="stable")
        yield running


def _device(url: str, device_id: str, model: str | None, channel: str = "stable") -> dict[str, str]:
    r = httpx.post(f"{url}/api/v1/devices", headers=ADMIN, timeout=30,
                   json={"id": device_id, "model": model, "channel": channel})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def _reads(name: str, version: int) -> list[tuple[str, str]]:
    base = f"/api/v1/models/{name}/versions/{version}"
    return [("GET", base), ("GET", base + "/manifest"), ("GET", base + "/bundle"), ("HEAD", base + "/bundle")]


def test_a_device_reads_only_its_own_model(service: Running) -> None:
    a = _device(service.url, "scope-a", "m1")
    for method, path in _reads("m2", 1):
        r = httpx.request(method, service.url + path, headers=a, timeout=30)
        assert r.status_code == 404, (method, path, r.status_code)
        if method == "GET":
            assert r.json()["error"]["code"] == "unknown_model" and "scope-a" in r.json()["error"]["message"]
    for path in ("/api/v1/models", "/api/v1/models/m2", "/api/v1/models/m2/channels"):
        assert httpx.get(service.url + path, headers=a, timeout=30).status_code == 403, path
    # its own model, on its channel: readable
    for method, path in _reads("m1", 1):
        assert httpx.request(method, service.url + path, headers=a, timeout=30).status_code == 200, (method, path)
    assert httpx.get(f"{service.url}/api/v1/models/m1/versions/1/bundle", timeout=30,
                     headers={**a, "Range": "bytes=0-9"}).status_code == 206
    # another channel's version of its own model: refused
    for method, path in _reads("m1", 2):
        r = httpx.request(method, service.url + path, headers=a, timeout=30)
        assert r.status_code == 403, (method, path, r.status_code)
        if method == "GET":
            assert r.json()["error"]["code"] == "not_on_channel"


def test_a_promotion_or_rollback_opens_the_version(service: Running) -> None:
    b = _device(service.url, "scope-b", "m1", channel="canary")
    url = f"{service.url}/api/v1/models/m1/versions/2/bundle"
    assert httpx.get(url, headers=b, timeout=30).status_code == 403
    r = httpx.put(f"{service.url}/api/v1/models/m1/channels/canary", headers=ADMIN, json={"version": 2}, timeout=30)
    assert r.status_code == 200, r.text
    assert httpx.get(url, headers=b, timeout=30).status_code == 200
    upd = httpx.get(f"{service.url}/api/v1/device/update", headers=b, timeout=30).json()
    assert httpx.get(service.url + upd["url"], headers=b, timeout=30).status_code == 200


def test_a_device_without_a_model_reads_none(service: Running) -> None:
    c = _device(service.url, "scope-c", None)
    for method, path in _reads("m1", 1) + _reads("m2", 1):
        assert httpx.request(method, service.url + path, headers=c, timeout=30).status_code == 404, path


def test_the_admin_reads_everything(service: Running) -> None:
    for name, version in (("m1", 1), ("m1", 2), ("m2", 1)):
        for method, path in _reads(name, version):
            assert httpx.request(method, service.url + path, headers=ADMIN, timeout=30).status_code == 200
    names = [m["name"] for m in httpx.get(f"{service.url}/api/v1/models", headers=ADMIN, timeout=30).json()]
    assert names == ["m1", "m2"]
