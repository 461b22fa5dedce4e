"""The service end to end under real uvicorn, on SQLite and on PostgreSQL: publish a signed
bundle, download it with a Range resume, classify the shared images online with the device
runtime's top-1, devices and their tokens, channels, promote and roll back."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

import edge_runtime
from cloud_sync.service import ServiceSettings
from edge_device.client import CloudClient, HTTPStatusError
from tests.support.data import MOBILENET_TOP1 as IMAGES
from tests.support.keys import Keys
from tests.support.paths import SHARED as DATA
from tests.support.service import ADMIN_TOKEN, MakeSigned, Running, run_service


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[Running]:
    d = tmp_path_factory.mktemp(f"svc-{request.param}")
    db = request.getfixturevalue("postgres")() if request.param == "postgresql" else None
    settings = ServiceSettings(data_dir=d, database_url=db, admin_token=ADMIN_TOKEN, trusted_keys=[keys.public],
                               max_batch_wait_ms=5)
    with run_service(settings) as running:
        yield running


@pytest.fixture(scope="module")
def published(service: Running, make_signed: MakeSigned) -> dict:
    admin = CloudClient(service.url, ADMIN_TOKEN, timeout=60)
    return admin.publish(make_signed(1), channel="stable")


def test_publish_lists_the_verified_version(service: Running, published: dict, make_signed: MakeSigned) -> None:
    archive = make_signed(1)
    assert published["version"] == 1
    assert published["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    admin = CloudClient(service.url, ADMIN_TOKEN)
    models = admin.list_models()
    assert models == [{"name": "mobilenet_v2", "latest": 1, "versions": 1, "channels": {"stable": 1}}]
    # the same version again is a conflict, not a second copy
    with pytest.raises(HTTPStatusError) as e:
        admin.publish(archive)
    assert e.value.status == 409 and e.value.code == "version_exists"


def test_download_resumes_with_range_and_etag(service: Running, published: dict, make_signed: MakeSigned,
                                              tmp_path: Path) -> None:
    full = make_signed(1).read_bytes()
    url = service.url + published["url"]
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    head = httpx.head(url, headers=auth)
    assert head.status_code == 200
    assert head.headers["etag"] == f'"{published["sha256"]}"'
    assert head.headers["accept-ranges"] == "bytes"
    assert int(head.headers["content-length"]) == len(full)
    # a broken download: the first 1000 bytes arrived, then the client resumes
    part = tmp_path / "b.tar.gz.part"
    part.write_bytes(full[:1000])
    (tmp_path / "b.tar.gz.part.etag").write_text(head.headers["etag"])
    r = httpx.get(url, headers={**auth, "Range": "bytes=1000-", "If-Range": head.headers["etag"]})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes 1000-{len(full) - 1}/{len(full)}"
    assert r.content == full[1000:]
    # the client does the same and verifies the result against the ETag's sha256
    out = CloudClient(service.url, ADMIN_TOKEN).download(published["url"], tmp_path / "b.tar.gz")
    assert out.read_bytes() == full
    assert not part.exists()
    # suffix range, If-None-Match, stale If-Range and an unsatisfiable range
    assert httpx.get(url, headers={**auth, "Range": "bytes=-10"}).content == full[-10:]
    assert httpx.get(url, headers={**auth, "If-None-Match": head.headers["etag"]}).status_code == 304
    stale = httpx.get(url, headers={**auth, "Range": "bytes=5-", "If-Range": '"0000"'})
    assert stale.status_code == 200 and stale.content == full
    bad = httpx.get(url, headers={**auth, "Range": f"bytes={len(full)}-"})
    assert bad.status_code == 416 and bad.headers["content-range"] == f"bytes */{len(full)}"
    assert bad.json()["error"]["code"] == "range_not_satisfiable"
    # what was downloaded is the signed bundle itself
    b = edge_runtime.open_bundle(out, pubkey=edge_runtime.load_public_key(service.settings.trusted_keys[0]))
    assert b.manifest.name == "mobilenet_v2"


def test_client_resume_continues_a_partial_file(service: Running, published: dict, make_signed: MakeSigned,
                                                 tmp_path: Path) -> None:
    full = make_signed(1).read_bytes()
    dest = tmp_path / "r.tar.gz"
    (tmp_path / "r.tar.gz.part").write_bytes(full[:123456])
    (tmp_path / "r.tar.gz.part.etag").write_text(f'"{published["sha256"]}"')
    CloudClient(service.url, ADMIN_TOKEN).download(published["url"], dest, sha256=published["sha256"])
    assert dest.read_bytes() == full
    # a corrupt partial copy is caught by the hash check, not installed
    (tmp_path / "x.tar.gz.part").write_bytes(b"\0" * 5000)
    (tmp_path / "x.tar.gz.part.etag").write_text(f'"{published["sha256"]}"')
    with pytest.raises(Exception, match="sha256"):
        CloudClient(service.url, ADMIN_TOKEN).download(published["url"], tmp_path / "x.tar.gz")
    assert not (tmp_path / "x.tar.gz").exists()


def test_classify_matches_the_device_runtime(service: Running, published: dict, make_signed: MakeSigned) -> None:
    device_model = edge_runtime.Model.load(make_signed(1), threads=2)
    client = CloudClient(service.url, ADMIN_TOKEN, timeout=60)
    for image, label in IMAGES.items():
        local = device_model.predict(edge_runtime.load_image(DATA / "images" / image))
        online = client.classify(DATA / "images" / image, "mobilenet_v2", top_k=3)
        assert online["top_k"][0]["label"] == label == local.label
        assert online["top_k"][0]["score"] == pytest.approx(local.score, abs=1e-6)
        assert len(online["top_k"]) == 3
        assert online["model"] == {"name": "mobilenet_v2", "version": 1}
        assert online["path"] == "cloud"
    device_model.close()


def test_infer_json_and_binary_agree_with_the_backend(service: Running, published: dict,
                                                      make_signed: MakeSigned) -> None:
    model = edge_runtime.Model.load(make_signed(1), threads=2)
    x = model.preprocess(edge_runtime.load_image(DATA / "images" / "grace_hopper.png"))[0]
    want = model.infer([x])[0]
    client = CloudClient(service.url, ADMIN_TOKEN, timeout=60)
    for binary in (False, True):
        res = client.infer("mobilenet_v2", {"input": x}, binary=binary)
        out = res["outputs"][0]
        assert out["datatype"] == "UINT8" and out["shape"] == [1, 1001]
        np.testing.assert_array_equal(np.asarray(out["data"], dtype=np.uint8).reshape(1, 1001), want)
    # a batch of two on a fixed-batch-1 model is split and joined back
    y = model.preprocess(edge_runtime.load_image(DATA / "images" / "cat.png"))[0]
    res = client.infer("mobilenet_v2", {"input": np.concatenate([x, y])})
    got = np.asarray(res["outputs"][0]["data"]).reshape(2, 1001)
    assert got[0].argmax() == 653 and got[1].argmax() == 286
    model.close()


def test_concurrent_classify_calls_all_get_their_own_answer(service: Running, published: dict) -> None:
    from concurrent.futures import ThreadPoolExecutor

    client = CloudClient(service.url, ADMIN_TOKEN, timeout=120)
    jobs = [img for img in IMAGES for _ in range(6)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(lambda img: client.classify(DATA / "images" / img, "mobilenet_v2"), jobs))
    assert [r["top_k"][0]["label"] for r in results] == [IMAGES[i] for i in jobs]
    r = httpx.get(service.url + "/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    metrics = r.text
    # labelled by route template, so label values stay bounded whatever the paths
    assert 'edge_http_requests_total{method="POST",route="/v2/models/{name}/classify",status="200"}' in metrics
    assert "# TYPE edge_http_request_duration_seconds histogram" in metrics
    assert 'edge_inference_items_total{model="mobilenet_v2"}' in metrics
    # every item went through the model's queue (counted in the batch size histogram)
    count = [ln for ln in metrics.splitlines() if ln.startswith("edge_inference_batch_size_count")]
    assert count and float(count[0].split()[-1]) >= 1


def test_devices_tokens_and_update_check(service: Running, published: dict) -> None:
    admin = CloudClient(service.url, ADMIN_TOKEN)
    dev = admin.register_device("pi-kitchen", model="mobilenet_v2", channel="stable")
    token = dev.pop("token")
    assert token.startswith("edt_")
    # the database holds only the token's hash
    from sqlalchemy import create_engine, select

    from cloud_sync.service._db import devices

    engine = create_engine(service.settings.resolved_database_url)
    with engine.connect() as conn:
        row = conn.execute(select(devices).where(devices.c.id == "pi-kitchen")).one()
    engine.dispose()
    assert row.token_sha256 == hashlib.sha256(token.encode()).hexdigest()
    assert token not in repr(tuple(row))
    me = CloudClient(service.url, token)
    upd = me.check_update(current_version=0)
    assert upd["update_available"] is True and upd["version"] == 1 and upd["url"] == published["url"]
    assert me.check_update(current_version=1)["update_available"] is False
    me.heartbeat(model_version=1, outbox_depth=3, latency_ms=12.5, fps=20.0)
    listed = {d["id"]: d for d in admin.devices()}
    assert listed["pi-kitchen"]["model_version"] == 1
    assert listed["pi-kitchen"]["outbox_depth"] == 3
    assert listed["pi-kitchen"]["last_seen"] is not None
    assert "token" not in listed["pi-kitchen"] and "token_sha256" not in listed["pi-kitchen"]
    # a device token is not an admin token
    with pytest.raises(HTTPStatusError) as e:
        me.list_models()
    assert e.value.status == 403
    # the admin token is not a device token
    with pytest.raises(HTTPStatusError) as e:
        admin.check_update()
    assert e.value.status == 403
    # duplicate id
    with pytest.raises(HTTPStatusError) as e:
        admin.register_device("pi-kitchen")
    assert e.value.status == 409
    # revoke: the token stops working at once
    assert admin.revoke_device("pi-kitchen")["revoked"] is True
    with pytest.raises(HTTPStatusError) as e:
        me.check_update()
    assert e.value.status == 401 and e.value.code == "revoked"


def test_channels_promote_and_rollback(service: Running, published: dict, make_signed: MakeSigned) -> None:
    admin = CloudClient(service.url, ADMIN_TOKEN, timeout=60)
    admin.publish(make_signed(2), channel="beta")
    admin.publish(make_signed(3))
    assert admin.model("mobilenet_v2")["channels"] == {"stable": 1, "beta": 2}
    admin.promote("mobilenet_v2", "stable", 2)
    admin.promote("mobilenet_v2", "stable", 3)
    assert admin.model("mobilenet_v2")["channels"]["stable"] == 3
    assert admin.rollback("mobilenet_v2", "stable")["version"] == 2
    assert admin.rollback("mobilenet_v2", "stable")["version"] == 1
    with pytest.raises(HTTPStatusError) as e:
        admin.rollback("mobilenet_v2", "stable")
    assert e.value.status == 409 and e.value.code == "nothing_to_roll_back"
    with pytest.raises(HTTPStatusError) as e:
        admin.promote("mobilenet_v2", "stable", 99)
    assert e.value.status == 404
    hist = admin.channels("mobilenet_v2")["history"]
    assert [h["version"] for h in hist if h["channel"] == "stable"] == [1, 2, 3]
    # serving follows the stable channel once the replica's short cache expires; an explicit
    # version is served at once
    r = httpx.get(service.url + "/v2/models/mobilenet_v2/versions/3",
                  headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    assert r["parameters"]["version"] == 3
