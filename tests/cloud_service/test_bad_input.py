"""Bad input of every kind gets a 4xx with a clear JSON error, never a 500, and the service keeps
serving. Tokens never show up in any log line."""

from __future__ import annotations

import io
import logging
import struct
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from cloud_sync.service import ServiceSettings
from edge_device.client import CloudClient
from edge_runtime import load_private_key, pack_bundle, sign_bundle
from tests.support.errors import error_of
from tests.support.keys import Keys
from tests.support.paths import SHARED as DATA
from tests.support.service import ADMIN_TOKEN, MakeSigned, Running, run_service


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def logs(service: Running) -> Iterator[_Collect]:
    # Attached after uvicorn started: its logging setup replaces the handlers of its loggers.
    h = _Collect()
    names = ["", "uvicorn", "uvicorn.access", "uvicorn.error", "cloud_sync", "fastapi"]
    loggers = [logging.getLogger(n) for n in names]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(h)
        lg.setLevel(logging.DEBUG)
    yield h
    for lg, lvl in zip(loggers, old, strict=True):
        lg.removeHandler(h)
        lg.setLevel(lvl)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, keys: Keys, make_signed: MakeSigned) -> Iterator[Running]:
    d = tmp_path_factory.mktemp("svc-bad")
    settings = ServiceSettings(data_dir=d, admin_token=ADMIN_TOKEN, trusted_keys=[keys.public],
                               max_upload_bytes=4 * 1024 * 1024, max_unpacked_bytes=16 * 1024 * 1024,
                               max_image_bytes=1024 * 1024,
                               max_infer_bytes=2 * 1024 * 1024)
    with run_service(settings, log_level="debug") as running:
        CloudClient(running.url, ADMIN_TOKEN, timeout=60).publish(make_signed(1), channel="stable")
        yield running


def _admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _err(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = error_of(r)
    assert body["message"]
    if code is not None:
        assert body["code"] == code, body
    return body


def _upload(url: str, data: bytes, ctype: str = "application/gzip", headers: dict | None = None) -> httpx.Response:
    return httpx.post(url + "/api/v1/models", content=data, timeout=60,
                      headers={"Content-Type": ctype, **_admin(), **(headers or {})})


def _tar(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# -- uploads -------------------------------------------------------------------------------------
def test_upload_over_the_size_limit(service: Running, logs: _Collect) -> None:
    _err(_upload(service.url, b"\0" * (5 * 1024 * 1024)), 413, "payload_too_large")


def test_upload_with_path_escaping_entries(service: Running, tmp_path: Path) -> None:
    for name in ("../evil.txt", "/etc/evil.txt", "a/../../evil.txt"):
        body = _err(_upload(service.url, _tar({"manifest.json": b"{}", name: b"owned"})), 422, "unsafe_archive")
        assert name in body["message"]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        link = tarfile.TarInfo("labels.txt")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
    _err(_upload(service.url, buf.getvalue()), 422, "unsafe_archive")
    assert not (Path(service.settings.data_dir).parent / "evil.txt").exists()


def test_upload_that_inflates_past_the_unpack_limit(service: Running) -> None:
    bomb = _tar({"manifest.json": b"{}", "model.tflite": b"\0" * (20 * 1024 * 1024)})
    assert len(bomb) < 100_000  # tiny upload...
    body = _err(_upload(service.url, bomb), 422, "unsafe_archive")  # ...refused for what it unpacks to
    assert "unpacks to more than" in body["message"]


def test_upload_unsigned_tampered_or_foreign_bundles(service: Running, make_signed: MakeSigned, other_keys: Keys,
                                                     tmp_path: Path) -> None:
    # unsigned: the same bundle with manifest.sig removed
    src = tmp_path / "src"
    with tarfile.open(make_signed(1)) as tf:
        tf.extractall(src, filter="data")
    (src / "manifest.sig").unlink()
    pack_bundle(src, tmp_path / "unsigned.tar.gz")
    body = _err(_upload(service.url, (tmp_path / "unsigned.tar.gz").read_bytes()), 422, "bad_signature")
    assert "not signed" in body["message"]
    # signed by a key the service does not trust
    sign_bundle(src, load_private_key(other_keys.private))
    pack_bundle(src, tmp_path / "foreign.tar.gz")
    _err(_upload(service.url, (tmp_path / "foreign.tar.gz").read_bytes()), 422, "bad_signature")
    # tampered: a label changed after signing with the trusted key
    with tarfile.open(make_signed(1)) as tf:
        tf.extractall(tmp_path / "t", filter="data")
    lbl = tmp_path / "t" / "labels.txt"
    lbl.write_text(lbl.read_text().replace("Egyptian cat", "Egyptian dog"))
    pack_bundle(tmp_path / "t", tmp_path / "tampered.tar.gz")
    body = _err(_upload(service.url, (tmp_path / "tampered.tar.gz").read_bytes()), 422, "integrity_error")
    assert "labels.txt" in body["message"]
    # a manifest edited after signing
    m = tmp_path / "t" / "manifest.json"
    lbl.write_text(lbl.read_text().replace("Egyptian dog", "Egyptian cat"))
    m.write_text(m.read_text().replace('"version": 1', '"version": 7'))
    pack_bundle(tmp_path / "t", tmp_path / "tampered2.tar.gz")
    _err(_upload(service.url, (tmp_path / "tampered2.tar.gz").read_bytes()), 422, "bad_signature")


def test_upload_garbage_and_wrong_content_type(service: Running, make_signed: MakeSigned) -> None:
    _err(_upload(service.url, b"this is not a gzip file"), 422, "bad_bundle")
    _err(_upload(service.url, zlib.compress(b"x" * 100)), 422, "bad_bundle")
    _err(_upload(service.url, _tar({"hello.txt": b"hi"})), 422, "bad_manifest")
    _err(_upload(service.url, make_signed(1).read_bytes(), ctype="text/plain"), 415, "unsupported_media_type")
    _err(_upload(service.url, make_signed(1).read_bytes(), ctype=""), 415)


# -- auth ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": "Basic abc"},
                                     {"Authorization": "Bearer"}])
def test_missing_or_wrong_tokens(service: Running, headers: dict) -> None:
    for method, path in (("GET", "/api/v1/models"), ("GET", "/api/v1/devices"), ("GET", "/api/v1/device/update"),
                         ("POST", "/v2/models/mobilenet_v2/classify"), ("GET", "/v2/models/mobilenet_v2"),
                         ("GET", "/api/v1/models/mobilenet_v2/versions/1/bundle"), ("GET", "/api/v1/dashboard")):
        r = httpx.request(method, service.url + path, headers=headers)
        _err(r, 401)
        assert r.headers["www-authenticate"] == "Bearer"


# -- inference -----------------------------------------------------------------------------------
def _infer(url: str, body: object, name: str = "mobilenet_v2", raw: bytes | None = None,
           ctype: str = "application/json", headers: dict | None = None) -> httpx.Response:
    content = raw if raw is not None else httpx.Request("POST", "/", json=body).content
    return httpx.post(f"{url}/v2/models/{name}/infer", content=content, timeout=60,
                      headers={"Content-Type": ctype, **_admin(), **(headers or {})})


def _tensor(shape: list[int], datatype: str = "UINT8", data: list | None = None, name: str = "input") -> dict:
    n = int(np.prod(shape))
    values = data if data is not None else [0] * n
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": values}]}


def test_inference_bad_tensors(service: Running) -> None:
    url = service.url
    _err(_infer(url, _tensor([1, 224, 224, 3]), name="no_such_model"), 404, "unknown_model")
    assert "224" in _err(_infer(url, _tensor([1, 100, 100, 3])), 400, "bad_shape")["message"]
    _err(_infer(url, _tensor([224, 224, 3])), 400, "bad_shape")
    _err(_infer(url, _tensor([1, 224, 224, 3], "FP32")), 400, "bad_datatype")
    _err(_infer(url, _tensor([1, 224, 224, 3], "COMPLEX")), 400, "bad_datatype")
    _err(_infer(url, _tensor([1, 224, 224, 3], data=[0] * 10)), 400, "bad_shape")
    _err(_infer(url, _tensor([1, 224, 224, 3], data=[300] * (224 * 224 * 3))), 400, "bad_data")
    _err(_infer(url, _tensor([1, 224, 224, 3], data=[0.5] * (224 * 224 * 3))), 400, "bad_data")
    _err(_infer(url, _tensor([1, 224, 224, 3], data=["a"] * (224 * 224 * 3))), 400, "bad_data")
    _err(_infer(url, _tensor([1, 1, 1, 3], data=[[1, 2], [3]])), 400)
    _err(_infer(url, _tensor([1, 224, 224, 3], name="nope")), 400, "unknown_input")
    _err(_infer(url, {"inputs": []}), 400)
    _err(_infer(url, [1, 2, 3]), 400)
    _err(_infer(url, None, raw=b"{not json"), 400, "bad_json")
    _err(_infer(url, _tensor([1, 224, 224, 3]), ctype="text/plain"), 415)
    _err(_infer(url, None, raw=b"x" * (3 * 1024 * 1024)), 413)
    # binary extension with sizes that do not add up
    head = (b'{"inputs":[{"name":"input","shape":[1,224,224,3],"datatype":"UINT8",'
            b'"parameters":{"binary_data_size":10}}]}')
    _err(_infer(url, None, raw=head + b"\0" * 10, ctype="application/octet-stream",
                headers={"Inference-Header-Content-Length": str(len(head))}), 400, "bad_shape")
    _err(_infer(url, None, raw=head, ctype="application/octet-stream",
                headers={"Inference-Header-Content-Length": "99999"}), 400, "bad_header")


def _classify(url: str, data: bytes, ctype: str = "image/png", name: str = "mobilenet_v2") -> httpx.Response:
    return httpx.post(f"{url}/v2/models/{name}/classify", content=data, timeout=60,
                      headers={"Content-Type": ctype, **_admin()})


def _png_header_claiming(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))


def test_classify_bad_images(service: Running) -> None:
    url = service.url
    cat = (DATA / "images" / "cat.png").read_bytes()
    _err(_classify(url, b"garbage, not an image"), 422, "bad_image")
    _err(_classify(url, cat[: len(cat) // 3]), 422, "bad_image")
    _err(_classify(url, _png_header_claiming(60000, 60000)), 422)
    _err(_classify(url, b""), 400, "empty_image")
    _err(_classify(url, cat, ctype="text/plain"), 415)
    _err(_classify(url, b"\0" * (2 * 1024 * 1024)), 413)
    _err(_classify(url, cat, name="unknown"), 404, "unknown_model")
    r = httpx.post(f"{url}/v2/models/mobilenet_v2/classify", headers=_admin(), timeout=60,
                   files={"notimage": ("cat.png", cat, "image/png")})
    _err(r, 400, "missing_image")
    r = httpx.post(f"{url}/v2/models/mobilenet_v2/classify?top_k=0", content=cat, headers={
        "Content-Type": "image/png", **_admin()})
    _err(r, 422, "invalid_request")


def test_multipart_upload_classifies(service: Running) -> None:
    cat = (DATA / "images" / "cat.png").read_bytes()
    r = httpx.post(f"{service.url}/v2/models/mobilenet_v2/classify?top_k=1", headers=_admin(), timeout=60,
                   files={"image": ("cat.png", cat, "image/png")})
    assert r.status_code == 200
    assert r.json()["top_k"][0]["label"] == "Egyptian cat"


def test_unknown_routes_and_ids(service: Running) -> None:
    _err(httpx.get(service.url + "/no/such/path"), 404, "not_found")
    _err(httpx.get(service.url + "/api/v1/models/nope", headers=_admin()), 404, "unknown_model")
    _err(httpx.get(service.url + "/api/v1/models/mobilenet_v2/versions/9/bundle", headers=_admin()), 404,
         "unknown_version")
    _err(httpx.delete(service.url + "/api/v1/devices/nope", headers=_admin()), 404, "unknown_device")
    _err(httpx.put(service.url + "/api/v1/models/mobilenet_v2/channels/stable", json={"version": "x"},
                   headers=_admin()), 422, "invalid_request")
    _err(httpx.post(service.url + "/api/v1/devices", json={"id": "bad/id"}, headers=_admin()), 422)
    _err(httpx.post(service.url + "/api/v1/devices", json={"unknown": 1}, headers=_admin()), 422)


def test_still_serving_and_no_token_in_logs(service: Running, logs: _Collect) -> None:
    admin = CloudClient(service.url, ADMIN_TOKEN, timeout=60)
    dev = admin.register_device("log-check", model="mobilenet_v2")
    me = CloudClient(service.url, dev["token"], timeout=60)
    assert me.classify(DATA / "images" / "sunflower.png", "mobilenet_v2")["top_k"][0]["label"] == "daisy"
    me.check_update()
    assert httpx.get(service.url + "/v2/health/ready").json() == {"ready": True}
    text = "\n".join(logs.lines)
    assert "GET /api/v1/device/update" in text  # the access log was captured...
    assert ADMIN_TOKEN not in text  # ...and holds no token
    assert dev["token"] not in text
    assert "500" not in [ln.split('" ')[-1][:3] for ln in logs.lines if '" ' in ln]
