"""The unsure-frame folder (bounded, crash-safe, resumable) and its uploader against the real cloud
service (uvicorn), with the real leaf photos."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud_sync.service import ServiceSettings
from edge_device.client import CloudClient
from tests.support.paths import ROOT, SHARED
from tests.support.service import ADMIN_TOKEN, Running, run_service

sys.path.insert(0, str(ROOT / "examples" / "plant_disease"))

from leaf_samples import SampleStore, Uploader, cloud_sender

LEAVES = SHARED / "images" / "leaves"


def _photos() -> list[Path]:
    return sorted(p for p in LEAVES.iterdir() if p.is_file())


def test_the_folder_keeps_the_newest_and_counts_what_it_dropped(tmp_path: Path) -> None:
    store = SampleStore(tmp_path / "unsure", max_items=3)
    for i, photo in enumerate(_photos()[:5]):
        store.keep(photo.read_bytes(), ".jpg", {"source": photo.name, "i": i})
    pending = store.pending()
    assert [s.read()[1]["source"] for s in pending] == [p.name for p in _photos()[2:5]]
    assert (store.kept, store.dropped, len(store)) == (5, 2, 3)
    data, meta = pending[0].read()
    assert data == _photos()[2].read_bytes() and meta["i"] == 2
    assert sorted(p.suffix for p in (tmp_path / "unsure").iterdir()) == [".jpg"] * 3 + [".json"] * 3


def test_a_restart_resumes_numbering_and_cleans_what_a_crash_left(tmp_path: Path) -> None:
    d = tmp_path / "unsure"
    first = SampleStore(d, max_items=10)
    a = first.keep(_photos()[0].read_bytes(), ".jpg", {"n": 1})
    # What a crash between the two renames, or in the middle of a write, leaves behind:
    (d / "00000099-20260101T000000000000Z.json").write_text("{}")
    (d / "00000100-20260101T000000000000Z.jpg.part").write_bytes(b"half")
    second = SampleStore(d, max_items=10)
    b = second.keep(_photos()[1].read_bytes(), ".png", {"n": 2})
    assert [s.image for s in second.pending()] == [a.image, b.image]
    assert b.content_type == "image/png" and a.content_type == "image/jpeg"
    assert sorted(p.name for p in d.iterdir()) == sorted([a.image.name, a.meta_path.name, b.image.name,
                                                          b.meta_path.name])
    # A smaller bound at the next start applies at once.
    third = SampleStore(d, max_items=1)
    assert [s.image for s in third.pending()] == [b.image] and third.dropped == 1
    with pytest.raises(ValueError):
        third.keep(b"x", ".gif", {})


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with run_service(ServiceSettings(data_dir=tmp_path_factory.mktemp("svc-unsure"), admin_token=ADMIN_TOKEN)) as r:
        yield r


def _stored(url: str, device: str) -> list[dict[str, Any]]:
    import httpx

    r = httpx.get(url + "/api/v1/samples", params={"device_id": device},
                  headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)
    r.raise_for_status()
    return list(r.json())


def test_uploads_oldest_first_and_sets_aside_what_the_cloud_refuses(service: Running, tmp_path: Path) -> None:
    admin = CloudClient(service.url, ADMIN_TOKEN, timeout=30)
    token = admin.register_device("pi-upload")["token"]
    store = SampleStore(tmp_path / "unsure", max_items=10)
    good = _photos()[:2]
    store.keep(good[0].read_bytes(), ".jpg", {"source": good[0].name})
    store.keep(b"\xff\xd8 a frame the camera mangled", ".jpg", {"source": "mangled"})
    store.keep(good[1].read_bytes(), ".jpg", {"source": good[1].name})
    up = Uploader(store, cloud_sender(CloudClient(service.url, token), "pi-upload"), interval=0.2)
    assert up.drain() is True
    assert (up.uploaded, up.rejected, len(store)) == (2, 1, 0) and up.online is True
    stored = _stored(service.url, "pi-upload")
    assert [s["metadata"]["source"] for s in stored] == [p.name for p in good]
    assert all(s["metadata"]["device_id"] == "pi-upload" for s in stored)
    # The refused one is kept aside with the cloud's reason, not lost and not retried forever.
    (meta,) = (tmp_path / "unsure" / "rejected").glob("*.json")
    assert json.loads(meta.read_text())["source"] == "mangled"
    assert "422" in json.loads(meta.read_text())["rejected"]


def test_a_refused_token_or_a_missing_cloud_keeps_the_samples(service: Running, tmp_path: Path) -> None:
    admin = CloudClient(service.url, ADMIN_TOKEN, timeout=30)
    token = admin.register_device("pi-revoked-later")["token"]
    admin.revoke_device("pi-revoked-later")
    store = SampleStore(tmp_path / "unsure", max_items=10)
    store.keep(_photos()[3].read_bytes(), ".jpg", {"source": "x"})
    up = Uploader(store, cloud_sender(CloudClient(service.url, token), "pi-revoked-later"), interval=0.2)
    assert up.drain() is False
    assert up.online is False and "401" in str(up.last_error) and len(store) == 1
    gone = Uploader(store, cloud_sender(CloudClient("http://127.0.0.1:9", token), "pi"), interval=0.2)
    assert gone.drain() is False and len(store) == 1 and gone.last_error
