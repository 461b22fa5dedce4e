"""The fleet dashboard in headless Chromium against a running service with real data: a device's
telemetry (predictions of the real model on the shared images, metrics, status) travels over a
real Mosquitto, through the telemetry ingester, into the database the service reads. The test
checks what the page shows and keeps a screenshot under test-artifacts/."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest

import edge_runtime
from cloud_sync.ingest import IngestConfig, Ingester
from cloud_sync.service import ServiceSettings
from edge_device.client import CloudClient
from edge_device.telemetry import MqttConfig
from tests.support.browser import headless_chromium
from tests.support.data import MOBILENET_TOP1 as IMAGES
from tests.support.keys import Keys
from tests.support.paths import SHARED as DATA
from tests.support.service import ADMIN_TOKEN, MakeSigned, Running, run_service

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _envelope(device: str, seq: int, kind: str, records: list[dict]) -> bytes:
    return json.dumps({"schema": 1, "device_id": device, "seq": seq, "uuid": str(uuid.uuid4()), "kind": kind,
                       "created": datetime.now(UTC).isoformat(), "records": records}).encode()


def _device_records(model: edge_runtime.Model, now: datetime) -> list[dict]:
    """Pipeline records as the device writes them: real predictions on the shared images, one
    frame every 20 s over the last few minutes."""
    out = []
    images = [img for img in IMAGES for _ in range(3)]  # 12 frames, 3 of each image
    for frame, image in enumerate(images):
        pred = model.predict(edge_runtime.load_image(DATA / "images" / image))
        ts = now - timedelta(seconds=20 * (len(images) - frame))
        out.append({"ts": ts.isoformat(), "source": "camera0", "frame": frame,
                    "top_k": [{"label": lbl, "score": s} for lbl, s in (pred.top_k or [])[:3]],
                    "latency_ms": pred.latency_ms, "model": {"name": "mobilenet_v2", "version": 1},
                    "backend": model.backend_name, "path": "local"})
    return out


def _metrics(now: datetime) -> list[dict]:
    return [{"ts": (now - timedelta(seconds=60 * (5 - i))).isoformat(), "fps": 10.0 + i, "frames": 100 * i,
             "latency_ms": {"p50": 40.0 + 5 * i, "p99": 80.0 + 5 * i}, "outbox": {"rows": 7 - i, "bytes": 1000},
             "dropped": {"total": 0}} for i in range(5)]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fleet(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, keys: Keys, make_signed: MakeSigned,
          mosquitto: tuple[str, int]) -> Iterator[Running]:
    host, port = mosquitto
    d = tmp_path_factory.mktemp(f"svc-dash-{request.param}")
    db = request.getfixturevalue("postgres")() if request.param == "postgresql" else None
    settings = ServiceSettings(data_dir=d, database_url=db, admin_token=ADMIN_TOKEN, trusted_keys=[keys.public])
    with run_service(settings) as svc:
        ingester = Ingester(IngestConfig(mqtt=MqttConfig(url=f"mqtt://{host}:{port}"),
                                         db_url=settings.resolved_database_url,
                                         client_id=f"dash-test-ingest-{request.param}",
                                         confirm=False))
        ingester.start()
        try:
            assert ingester.wait_connected(20)
            admin = CloudClient(svc.url, ADMIN_TOKEN, timeout=60)
            admin.publish(make_signed(1), channel="stable")
            admin.publish(make_signed(2), channel="beta")
            admin.register_device("pi-greenhouse", name="greenhouse", model="mobilenet_v2", channel="stable")
            lab = admin.register_device("pi-lab", model="mobilenet_v2", channel="beta")
            CloudClient(svc.url, lab["token"]).heartbeat(model_version=2, outbox_depth=0, latency_ms=33.0, fps=5.0)
            now = datetime.now(UTC)
            model = edge_runtime.Model.load(make_signed(1), threads=2)
            records = _device_records(model, now)
            model.close()
            dev = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="pi-greenhouse")
            dev.connect(host, port)
            dev.loop_start()
            msgs = [("edge/pi-greenhouse/telemetry", _envelope("pi-greenhouse", 1, "telemetry", records[:6])),
                    ("edge/pi-greenhouse/telemetry", _envelope("pi-greenhouse", 2, "telemetry", records[6:])),
                    ("edge/pi-greenhouse/metrics", _envelope("pi-greenhouse", 3, "metrics", _metrics(now)))]
            for topic, payload in msgs:
                dev.publish(topic, payload, qos=1).wait_for_publish(10)
            status = {"schema": 1, "device_id": "pi-greenhouse", "state": "online", "ts": now.isoformat()}
            dev.publish("edge/pi-greenhouse/status", json.dumps(status), qos=1, retain=True).wait_for_publish(10)
            # wait until the ingester committed everything
            auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            end = time.monotonic() + 30
            while True:
                data = httpx.get(svc.url + "/api/v1/dashboard?hours=1", headers=auth).json()
                counted = sum(data["labels"]["totals"].values())
                if counted >= 12 and data["series"].get("pi-greenhouse") and any(
                        x["status"] == "online" for x in data["devices"]):
                    break
                assert time.monotonic() < end, f"telemetry did not arrive: {data}"
                time.sleep(0.2)
            dev.loop_stop()
            dev.disconnect()
            yield svc
        finally:
            ingester.stop()


def test_dashboard_api_aggregates_the_telemetry(fleet: Running) -> None:
    data = httpx.get(fleet.url + "/api/v1/dashboard?hours=1", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    devices = {d["id"]: d for d in data["devices"]}
    g = devices["pi-greenhouse"]
    assert g["registered"] and g["status"] == "online" and g["model_version"] == 1
    assert g["outbox_depth"] == 3 and g["latency_ms"] == 60.0 and g["fps"] == 14.0  # the latest metrics
    assert devices["pi-lab"]["model_version"] == 2 and devices["pi-lab"]["latency_ms"] == 33.0  # its heartbeat
    assert data["labels"]["totals"] == {label: 3 for label in IMAGES.values()}
    assert sum(sum(b["counts"].values()) for b in data["labels"]["buckets"]) == 12
    assert [p["fps"] for p in data["series"]["pi-greenhouse"]] == [10.0, 11.0, 12.0, 13.0, 14.0]
    assert data["models"][0]["channels"] == {"stable": 1, "beta": 2}


@pytest.fixture
def browser() -> Iterator[object]:
    with headless_chromium() as driver:
        yield driver


def test_dashboard_page_shows_the_fleet(fleet: Running, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    b = browser
    b.get(f"{fleet.url}/#token={ADMIN_TOKEN}")
    WebDriverWait(b, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "true")
    assert ADMIN_TOKEN not in b.current_url  # the fragment is cleared once read

    def cell(device: str, field: str) -> str:
        return b.find_element(By.CSS_SELECTOR, f'#fleet tr[data-device="{device}"] td[data-field="{field}"]').text

    assert cell("pi-greenhouse", "status") == "online"
    assert cell("pi-greenhouse", "model_version") == "v1"
    assert cell("pi-greenhouse", "channel") == "stable"
    assert cell("pi-greenhouse", "outbox_depth") == "3"
    assert cell("pi-greenhouse", "latency_ms") == "60.0"
    assert cell("pi-greenhouse", "fps") == "14.0"
    assert "ago" in cell("pi-greenhouse", "last_seen")
    assert cell("pi-lab", "model_version") == "v2" and cell("pi-lab", "channel") == "beta"
    # versions per channel
    rows = {(r.get_attribute("data-model"), r.get_attribute("data-channel")): r.text
            for r in b.find_elements(By.CSS_SELECTOR, "#channels tbody tr")}
    assert "v1" in rows[("mobilenet_v2", "stable")] and "v2" in rows[("mobilenet_v2", "beta")]
    # predictions per label: a legend with the counts and bars that add up
    legend = {s.get_attribute("data-label"): int(s.get_attribute("data-total"))
              for s in b.find_elements(By.CSS_SELECTOR, "#label-legend span")}
    assert legend == {label: 3 for label in IMAGES.values()}
    bars = b.find_elements(By.CSS_SELECTOR, '#labels svg rect[data-label]')
    assert sum(int(r.get_attribute("data-count")) for r in bars) == 12
    # per-device latency and fps charts with the five metric points
    card = b.find_element(By.CSS_SELECTOR, '#devices .card[data-device="pi-greenhouse"]')
    assert card.find_element(By.CSS_SELECTOR, 'svg[data-chart="latency"]').get_attribute("data-points") == "10"
    assert card.find_element(By.CSS_SELECTOR, 'svg[data-chart="fps"]').get_attribute("data-points") == "5"
    assert len(card.find_elements(By.CSS_SELECTOR, 'svg[data-chart="fps"] path[data-series="fps"]')) == 1
    # a one-hour window draws one bar per minute: the 12 frames over 4 minutes give several bars
    from selenium.webdriver.support.ui import Select

    Select(b.find_element(By.ID, "hours")).select_by_value("1")
    # (read through JavaScript: the page re-renders, so element handles go stale)
    buckets = "const s = document.querySelector('#labels svg'); return s ? Number(s.dataset.buckets) : 0;"
    WebDriverWait(b, 20).until(lambda d: d.execute_script(buckets) >= 4)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"dashboard-{(fleet.settings.database_url and 'postgresql') or 'sqlite'}.png"
    b.set_window_size(1280, 1400)
    b.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


def test_dashboard_page_without_token_asks_for_it(fleet: Running, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    b = browser
    b.get(fleet.url + "/")
    WebDriverWait(b, 20).until(lambda d: d.find_element(By.ID, "login").is_displayed())
    assert b.find_element(By.CSS_SELECTOR, "#fleet tbody").text == ""
    b.find_element(By.ID, "token").send_keys("not-the-token")
    b.find_element(By.CSS_SELECTOR, "#login button").click()
    WebDriverWait(b, 20).until(lambda d: "error" in d.find_element(By.ID, "status").text)
    assert "token is not valid" in b.find_element(By.ID, "status").text
