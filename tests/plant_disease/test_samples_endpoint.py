"""The cloud's field-sample endpoint (POST /api/v1/device/samples) and CloudClient.upload_sample,
against the real service under uvicorn, with the real leaf photos."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from cloud_sync.service import ServiceSettings
from edge_device.client import CloudClient, HTTPStatusError
from tests.support.paths import SHARED
from tests.support.service import ADMIN_TOKEN, Running, run_service

LEAVES = SHARED / "images" / "leaves"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    settings = ServiceSettings(data_dir=tmp_path_factory.mktemp("svc-samples"), admin_token=ADMIN_TOKEN,
                               max_image_bytes=160 * 1024)
    with run_service(settings) as running:
        yield running


@pytest.fixture(scope="module")
def admin(service: Running) -> CloudClient:
    return CloudClient(service.url, ADMIN_TOKEN, timeout=30)


def _device(service: Running, admin: CloudClient, device_id: str) -> tuple[CloudClient, str]:
    token = admin.register_device(device_id)["token"]
    return CloudClient(service.url, token, timeout=30), token


def _listed(service: Running, device_id: str) -> list[dict]:
    r = httpx.get(service.url + "/api/v1/samples", params={"device_id": device_id},
                  headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)
    assert r.status_code == 200, r.text
    return list(r.json())


def test_upload_list_and_fetch_back_byte_for_byte(service: Running, admin: CloudClient) -> None:
    dev, _ = _device(service, admin, "pi-roundtrip")
    photo = LEAVES / "Early_blight.JPG"
    meta = {"top_k": [{"label": "Early_blight", "score": 0.41}], "source": "camera", "frame": 7}
    rec = dev.upload_sample(photo, meta)
    assert rec["duplicate"] is False and rec["device_id"] == "pi-roundtrip"
    assert (rec["width"], rec["height"], rec["content_type"]) == (256, 256, "image/jpeg")
    assert rec["metadata"] == meta and rec["size"] == photo.stat().st_size
    (listed,) = _listed(service, "pi-roundtrip")
    assert listed["id"] == rec["id"] and listed["sha256"] == rec["sha256"]
    img = httpx.get(f"{service.url}/api/v1/samples/{rec['id']}/image",
                    headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)
    assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg"
    assert img.content == photo.read_bytes()


def test_a_resend_is_the_same_sample(service: Running, admin: CloudClient) -> None:
    dev, _ = _device(service, admin, "pi-resend")
    data = (LEAVES / "healthy.JPG").read_bytes()
    first = dev.upload_sample(data, {"try": 1})
    again = dev.upload_sample(data, {"try": 2})
    assert again["duplicate"] is True and again["id"] == first["id"]
    assert again["metadata"] == {"try": 1}  # the stored sample is not rewritten
    other = dev.upload_sample(LEAVES / "Leaf_Mold.JPG")
    assert other["id"] != first["id"] and other["metadata"] == {}
    assert [s["id"] for s in _listed(service, "pi-resend")] == [first["id"], other["id"]]


def test_png_is_accepted_and_kept_as_png(service: Running, admin: CloudClient) -> None:
    dev, _ = _device(service, admin, "pi-png")
    buf = io.BytesIO()
    Image.open(LEAVES / "powdery_mildew.jpg").save(buf, format="PNG")
    rec = dev.upload_sample(buf.getvalue(), {"format": "png"})
    assert rec["content_type"] == "image/png"


def _post(service: Running, token: str | None, **kw: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(service.url + "/api/v1/device/samples", headers=headers, timeout=30, **kw)  # type: ignore[arg-type]


def test_bad_input_gets_a_named_4xx_and_the_service_keeps_serving(service: Running, admin: CloudClient) -> None:
    dev, token = _device(service, admin, "pi-bad")
    photo = (LEAVES / "Target_Spot.JPG").read_bytes()
    gif = io.BytesIO()
    Image.open(LEAVES / "Target_Spot.JPG").save(gif, format="GIF")
    raw = httpx.post(service.url + "/api/v1/device/samples", content=photo, timeout=30,
                     headers={"Authorization": f"Bearer {token}", "Content-Type": "image/jpeg"})
    assert (raw.status_code, raw.json()["error"]["code"]) == (415, "unsupported_media_type")
    cases: list[tuple[dict[str, object], int, str]] = [
        ({"files": {"other": ("a.jpg", photo)}}, 400, "missing_image"),
        ({"files": {"image": ("a.jpg", b"")}}, 400, "empty_image"),
        ({"files": {"image": ("a.jpg", b"definitely not a jpeg")}}, 422, "bad_image"),
        ({"files": {"image": ("a.jpg", photo[: len(photo) // 2])}}, 422, "bad_image"),
        ({"files": {"image": ("a.gif", gif.getvalue())}}, 415, "unsupported_image_format"),
        ({"files": {"image": ("a.jpg", photo)}, "data": {"metadata": "{not json"}}, 400, "bad_metadata"),
        ({"files": {"image": ("a.jpg", photo)}, "data": {"metadata": "[1, 2]"}}, 400, "bad_metadata"),
        ({"files": {"image": ("a.jpg", photo)}, "data": {"metadata": json.dumps({"x": "y" * 20000})}}, 400,
         "metadata_too_large"),
    ]
    for kw, status, code in cases:
        r = _post(service, token, **kw)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), (code, r.text)
    # Larger than max_image_bytes (160 KiB here): refused before anything is stored.
    big = io.BytesIO()
    Image.effect_noise((600, 600), 80).convert("RGB").save(big, format="PNG")
    assert len(big.getvalue()) > 160 * 1024
    with pytest.raises(HTTPStatusError) as err:
        dev.upload_sample(big.getvalue())
    assert err.value.status == 413
    assert _listed(service, "pi-bad") == []
    assert dev.upload_sample(photo)["duplicate"] is False  # still serving


def test_only_an_active_device_may_upload(service: Running, admin: CloudClient) -> None:
    photo = LEAVES / "Late_blight.JPG"
    assert _post(service, None, files={"image": ("a.jpg", photo.read_bytes())}).status_code == 401
    with pytest.raises(HTTPStatusError) as err:
        admin.upload_sample(photo)
    assert (err.value.status, err.value.code) == (403, "device_only")
    dev, _ = _device(service, admin, "pi-revoked")
    dev.upload_sample(photo)
    admin.revoke_device("pi-revoked")
    with pytest.raises(HTTPStatusError) as err:
        dev.upload_sample(LEAVES / "healthy.JPG")
    assert err.value.status == 401
    # Listing and fetching are for the admin only.
    r = httpx.get(service.url + "/api/v1/samples", headers={"Authorization": "Bearer nope"}, timeout=30)
    assert r.status_code == 401


def test_unknown_sample_image_is_404(service: Running) -> None:
    r = httpx.get(service.url + "/api/v1/samples/999999/image",
                  headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "unknown_sample")


def test_client_reports_an_unreadable_file(service: Running, admin: CloudClient, tmp_path: Path) -> None:
    dev, _ = _device(service, admin, "pi-nofile")
    from edge_device.client import ClientError

    with pytest.raises(ClientError, match="cannot read image"):
        dev.upload_sample(tmp_path / "missing.jpg")
