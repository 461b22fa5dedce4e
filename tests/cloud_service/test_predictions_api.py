"""`edge batch` writes predictions; the service reads them back by key (`GET /api/v1/predictions`)
when both share a database: real batch command, real service under uvicorn, SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cloud_sync.service import ServiceSettings
from tests.support.service import ADMIN_TOKEN, Running, run_service

N_IMAGES = 7


@dataclass
class Shared:
    svc: Running
    sources: list[str]
    device_token: str


def _batch(bundle: Path, source: Path, output: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "edge_cli", "batch", str(bundle), "--source", str(source),
                           "--output", output, "--json"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def shared(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, mobilenet_bundle: Path,
           reference_images: dict[str, Path]) -> Iterator[Shared]:
    d = tmp_path_factory.mktemp(f"predictions-{request.param}")
    db = request.getfixturevalue("postgres")() if request.param == "postgresql" else None
    inputs = d / "in"
    inputs.mkdir()
    images = list(reference_images.values())
    for i in range(N_IMAGES - 1):
        shutil.copy(images[i % len(images)], inputs / f"img{i:02d}{images[i % len(images)].suffix}")
    (inputs / "broken.png").write_bytes(b"not an image")
    settings = ServiceSettings(data_dir=d / "svc", database_url=db, admin_token=ADMIN_TOKEN)
    with run_service(settings) as svc:
        _batch(mobilenet_bundle, inputs, settings.resolved_database_url)
        r = httpx.post(f"{svc.url}/api/v1/devices", json={"id": "reader-1"},
                       headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert r.status_code == 201, r.text
        sources = sorted(str(p.resolve()) for p in inputs.iterdir())
        yield Shared(svc, sources, r.json()["token"])


def _get(shared: Shared, token: str = ADMIN_TOKEN, **params: object) -> httpx.Response:
    return httpx.get(f"{shared.svc.url}/api/v1/predictions", params=params,
                     headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_pages_walk_every_row_once_in_key_order(shared: Shared) -> None:
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, object] = {"limit": 3, "model": "mobilenet_v2"}
        if cursor:
            params["cursor"] = cursor
        r = _get(shared, **params)
        assert r.status_code == 200, r.text
        body = r.json()
        seen += [item["source"] for item in body["items"]]
        pages += 1
        cursor = body["next"]
        if cursor is None:
            break
    assert seen == shared.sources and pages == 3


def test_a_lookup_by_source_gives_its_prediction(shared: Shared) -> None:
    cat = next(s for s in shared.sources if s.endswith("img00.png") or "img00" in s)
    body = _get(shared, source=cat).json()
    assert len(body["items"]) == 1 and body["next"] is None
    item = body["items"][0]
    assert item["model"] == {"name": "mobilenet_v2", "version": 1}
    assert item["top_label"] and item["error"] is None and item["record"]["source"]


def test_failed_inputs_are_rows_with_their_error(shared: Shared) -> None:
    body = _get(shared, errors="true").json()
    assert [i["source"] for i in body["items"]] == [s for s in shared.sources if s.endswith("broken.png")]
    assert body["items"][0]["error"]
    assert len(_get(shared, errors="false").json()["items"]) == N_IMAGES - 1


def test_a_device_token_may_read_and_no_token_may_not(shared: Shared) -> None:
    assert _get(shared, token=shared.device_token, limit=1).status_code == 200
    r = httpx.get(f"{shared.svc.url}/api/v1/predictions")
    assert r.status_code == 401


def test_filters_that_match_nothing_and_bad_cursors(shared: Shared) -> None:
    assert _get(shared, model="other").json() == {"items": [], "next": None}
    assert _get(shared, version=2).json()["items"] == []
    prefix = str(Path(shared.sources[0]).parent) + "/img0"
    assert len(_get(shared, source_prefix=prefix).json()["items"]) == N_IMAGES - 1
    assert _get(shared, source_prefix="100%_not_a_path").json()["items"] == []
    r = _get(shared, cursor="not-a-cursor")
    assert r.status_code == 400 and "cursor" in r.text
    assert _get(shared, limit=0).status_code == 422
