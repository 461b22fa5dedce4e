"""Service bounds under a memory cap: the service runs as a subprocess under ``prlimit --as`` far
below what the attacks used to cost (8 concurrent 9000x9000 PNGs: 7.6 GB; a PAX header declaring
700 MiB: 1.98 GB). Each attack gets a 4xx naming the problem, nothing is stored, and the same
process serves a normal request afterwards."""

from __future__ import annotations

import concurrent.futures
import gzip
import io
import json
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from edge_device.client import CloudClient
from edge_runtime import load_private_key, pack_bundle
from edge_runtime._signing import sign_bytes
from tests.support.capped_service import CappedService
from tests.support.errors import error_of
from tests.support.keys import Keys
from tests.support.paths import SHARED as DATA
from tests.support.service import ADMIN_TOKEN, MakeSigned

#: far below the 7.6 GB the PNGs cost and the 1.98 GB the PAX header cost; the idle service with
#: MobileNet loaded peaks well under it
CAP = 1536 * 1024**2
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory, keys: Keys, make_signed: MakeSigned) -> Iterator[CappedService]:
    d = tmp_path_factory.mktemp("svc-capped") / "data"
    d.mkdir()
    svc = CappedService(d, [keys.public], cap_bytes=CAP,
                        extra_env={"EDGE_CLOUD_SAMPLES_MAX_PER_DEVICE": "3"})
    svc.start()
    try:
        CloudClient(svc.url, ADMIN_TOKEN, timeout=60).publish(make_signed(1), channel="stable")
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="module")
def device_token(capped: CappedService) -> str:
    r = httpx.post(f"{capped.url}/api/v1/devices", headers=ADMIN, timeout=30,
                   json={"id": "bounds-1", "model": "mobilenet_v2", "channel": "stable"})
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


@pytest.fixture(scope="module")
def huge_png() -> bytes:
    """A 9000x9000 PNG: a few hundred KiB on the wire, 243 MB of RGB once decoded."""
    buf = io.BytesIO()
    Image.new("L", (9000, 9000), 7).save(buf, format="PNG", optimize=False)
    data = buf.getvalue()
    assert len(data) < 512 * 1024
    return data


def _err(r: httpx.Response, low: int = 400, high: int = 499) -> dict:
    assert low <= r.status_code <= high, (r.status_code, r.text)
    body = error_of(r)
    assert body["message"] and body["code"]
    return dict(body)


def _cat() -> bytes:
    return (DATA / "images" / "cat.png").read_bytes()


def _concurrently(n: int, send: object) -> list[httpx.Response]:
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: send(), range(n)))  # type: ignore[operator]


# -- item 2: image decoding bounded --------------------------------------------------------------
def test_eight_concurrent_huge_pngs_to_classify(capped: CappedService, device_token: str, huge_png: bytes) -> None:
    auth = {"Authorization": f"Bearer {device_token}"}

    def send() -> httpx.Response:
        return httpx.post(f"{capped.url}/v2/models/mobilenet_v2/classify", content=huge_png, timeout=120,
                          headers={"Content-Type": "image/png", **auth})

    for r in _concurrently(8, send):
        body = _err(r, 422, 422)
        assert body["code"] == "image_too_large" and "9000x9000" in body["message"], body
    assert capped.alive, capped.log_path.read_text()[-3000:]
    r = httpx.post(f"{capped.url}/v2/models/mobilenet_v2/classify?top_k=1", content=_cat(), timeout=60,
                   headers={"Content-Type": "image/png", **auth})
    assert r.status_code == 200, r.text
    assert r.json()["top_k"][0]["label"]


def test_eight_concurrent_huge_pngs_as_samples(capped: CappedService, device_token: str, huge_png: bytes) -> None:
    auth = {"Authorization": f"Bearer {device_token}"}

    def send() -> httpx.Response:
        return httpx.post(f"{capped.url}/api/v1/device/samples", headers=auth, timeout=120,
                          files={"image": ("big.png", huge_png, "image/png")}, data={"metadata": "{}"})

    for r in _concurrently(8, send):
        body = _err(r, 422, 422)
        assert body["code"] == "image_too_large", body
    assert capped.alive
    listed = httpx.get(f"{capped.url}/api/v1/samples", headers=ADMIN, params={"device_id": "bounds-1"}, timeout=30)
    assert [s for s in listed.json() if s["width"] == 9000] == []  # nothing stored
    ok = httpx.post(f"{capped.url}/api/v1/device/samples", headers=auth, timeout=60,
                    files={"image": ("cat.png", _cat(), "image/png")}, data={"metadata": '{"why": "unsure"}'})
    assert ok.status_code in (200, 201), ok.text


def test_a_huge_jpeg_is_decoded_reduced(capped: CappedService, device_token: str) -> None:
    """A JPEG over the pixel bound is drafted (decoded at 1/8) towards the model's input size."""
    buf = io.BytesIO()
    Image.new("RGB", (9000, 9000), (200, 120, 40)).save(buf, format="JPEG", quality=50)
    r = httpx.post(f"{capped.url}/v2/models/mobilenet_v2/classify?top_k=1", content=buf.getvalue(), timeout=120,
                   headers={"Content-Type": "image/jpeg", "Authorization": f"Bearer {device_token}"})
    assert r.status_code == 200, r.text
    assert capped.alive


def test_decodes_wait_for_a_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    """At most max_concurrent_decodes images are decoded at once; the others wait their turn."""
    from cloud_sync.service._imagein import DECODE_LIMITS, decode_image

    active = peak = 0
    lock = threading.Lock()
    real = Image.Image.convert

    def slow_convert(self: Image.Image, *a: object, **kw: object) -> Image.Image:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.05)
        try:
            return real(self, *a, **kw)  # type: ignore[arg-type]
        finally:
            with lock:
                active -= 1

    monkeypatch.setattr(Image.Image, "convert", slow_convert)
    old = (DECODE_LIMITS.max_pixels, DECODE_LIMITS.slots)
    DECODE_LIMITS.configure(24_000_000, 2)
    try:
        png = _cat()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            shapes = list(pool.map(lambda _: decode_image(png).shape, range(8)))
    finally:
        DECODE_LIMITS.max_pixels, DECODE_LIMITS.slots = old
    assert len(set(shapes)) == 1 and peak == 2, peak


# -- item 1b: archive headers pre-scanned --------------------------------------------------------
def _pax_bomb(path: Path, declared: int = 700 * 1024**2) -> Path:
    """A .tar.gz whose first member is a PAX header declaring ``declared`` bytes (and holding them)."""
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = declared
    with gzip.open(path, "wb", compresslevel=9) as gz:
        gz.write(header.tobuf(format=tarfile.USTAR_FORMAT))
        zeros = b"0" * (1 << 20)
        for _ in range(declared >> 20):
            gz.write(zeros)
        gz.write(b"\0" * 1024)
    return path


def test_pax_header_bomb_upload_under_a_memory_cap(capped: CappedService, tmp_path: Path) -> None:
    bomb = _pax_bomb(tmp_path / "bomb.tar.gz")
    assert bomb.stat().st_size < 4 * 1024**2
    r = httpx.post(f"{capped.url}/api/v1/models", content=bomb.read_bytes(), timeout=120,
                   headers={"Content-Type": "application/gzip", **ADMIN})
    body = _err(r, 422, 422)
    assert body["code"] == "unsafe_archive" and "PAX" in body["message"], body
    assert "/tmp" not in body["message"]
    assert capped.alive
    assert httpx.get(f"{capped.url}/api/v1/models", headers=ADMIN, timeout=30).status_code == 200


# -- item 3b: versions bounded ---------------------------------------------------------------------
def _resign_with_version(bundle: Path, version: int, key: Path, out_dir: Path) -> Path:
    # sign_bytes, not sign_bundle: sign_bundle opens the bundle, and the manifest refuses this version
    src = out_dir / "src"
    with tarfile.open(bundle, "r:gz") as tf:
        tf.extractall(src, filter="data")
    root = src if (src / "manifest.json").exists() else next(src.iterdir())
    m = json.loads((root / "manifest.json").read_text())
    m["version"] = version
    raw = json.dumps(m).encode()
    (root / "manifest.json").write_bytes(raw)
    (root / "manifest.sig").write_bytes(sign_bytes(load_private_key(key), raw))
    return pack_bundle(root, out_dir / f"v{version}.tar.gz")


@pytest.mark.parametrize("version", [2**31, 2**63, 0])
def test_upload_with_an_unservable_version(capped: CappedService, make_signed: MakeSigned, keys: Keys,
                                           tmp_path: Path, version: int) -> None:
    archive = _resign_with_version(make_signed(2), version, keys.private, tmp_path)
    r = httpx.post(f"{capped.url}/api/v1/models", content=archive.read_bytes(), timeout=60,
                   headers={"Content-Type": "application/gzip", **ADMIN})
    body = _err(r, 422, 422)
    assert body["code"] == "bad_manifest" and "version" in body["message"], body
    detail = httpx.get(f"{capped.url}/api/v1/models/mobilenet_v2", headers=ADMIN, timeout=30).json()
    assert [v["version"] for v in detail["versions"]] == [1]  # nothing stored


@pytest.mark.parametrize("path", [
    "/api/v1/models/mobilenet_v2/versions/{v}",
    "/api/v1/models/mobilenet_v2/versions/{v}/manifest",
    "/api/v1/models/mobilenet_v2/versions/{v}/bundle",
    "/v2/models/mobilenet_v2/versions/{v}",
])
@pytest.mark.parametrize("version", [2**31, 2**63, 10**30, -1])
def test_version_path_parameters_are_bounded(capped: CappedService, path: str, version: int) -> None:
    r = httpx.get(capped.url + path.format(v=version), headers=ADMIN, timeout=30)
    body = _err(r, 422, 422)
    assert "version" in body["message"], body


def test_promote_to_an_unbounded_version(capped: CappedService) -> None:
    for v in (2**31, 2**63):
        r = httpx.put(f"{capped.url}/api/v1/models/mobilenet_v2/channels/beta", headers=ADMIN, timeout=30,
                      json={"version": v})
        assert "version" in _err(r, 422, 422)["message"]


# -- item 6: malformed headers and metadata --------------------------------------------------------
def test_range_header_with_thousands_of_digits(capped: CappedService) -> None:
    url = f"{capped.url}/api/v1/models/mobilenet_v2/versions/1/bundle"
    for rng in (f"bytes={'9' * 5000}-", f"bytes=0-{'9' * 5000}", f"bytes=-{'9' * 5000}"):
        r = httpx.get(url, headers={**ADMIN, "Range": rng}, timeout=30)
        assert r.status_code < 500, (rng[:20], r.status_code, r.text)
        if r.status_code >= 400:
            _err(r)
    assert httpx.get(url, headers={**ADMIN, "Range": "bytes=0-9"}, timeout=30).status_code == 206


@pytest.mark.parametrize("meta", ['{"score": NaN}', '{"score": Infinity}', '{"score": -Infinity}',
                                  '{"a": [1, NaN]}', '{"x": 1e999}'])
def test_samples_metadata_that_json_cannot_store(capped: CappedService, device_token: str, meta: str) -> None:
    auth = {"Authorization": f"Bearer {device_token}"}
    # a distinct image per case, so a stored row would show up under its own hash
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (len(meta), 3, 4)).save(buf, format="PNG")
    img = buf.getvalue()
    for _ in range(2):  # the resend is refused the same way
        r = httpx.post(f"{capped.url}/api/v1/device/samples", headers=auth, timeout=30,
                       files={"image": ("x.png", img, "image/png")}, data={"metadata": meta})
        body = _err(r, 400, 400)
        assert body["code"] == "bad_metadata" and "metadata" in body["message"], body
    listed = httpx.get(f"{capped.url}/api/v1/samples", headers=ADMIN, params={"limit": 1000}, timeout=30).json()
    assert all(s["width"] != 16 for s in listed)
