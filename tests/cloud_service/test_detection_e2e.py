"""Object detection end to end, with the real pieces: `edge bundle --task detection` on the shared
YOLOv8n (ONNX), `edge run --mqtt --device-id` on kite_and_cold.jpg, a real Mosquitto, the real
ingester writing into the database of a real service under uvicorn, then the rows (one per
object), the objects API, the dashboard's "objects per label" chart in headless Chromium, and the
same bundle published to the service answering `/classify` with detections (and `/infer` with
raw tensors)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from PIL import Image
from sqlalchemy import select

import edge_runtime
from cloud_sync.db import telemetry_detections, telemetry_records
from cloud_sync.ingest import IngestConfig, Ingester
from cloud_sync.service import ServiceSettings
from edge_device.agent import CloudClassifier, Router, RouterConfig
from edge_device.client import CloudClient
from edge_device.telemetry import MqttConfig
from edge_runtime.sources import open_source
from tests.support.browser import headless_chromium
from tests.support.detection import detection_dir, expected, rule_violations
from tests.support.keys import Keys
from tests.support.net import wait_for
from tests.support.paths import ROOT, env_with_project
from tests.support.servers import Mosquitto
from tests.support.service import ADMIN_TOKEN, Running, run_service

MODEL = "yolov8n_qdq.onnx"
IMAGE = "kite_and_cold.jpg"
DEVICE = "cam-kite"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ARTIFACTS = ROOT / "test-artifacts"


def edge(*args: str | Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "edge_cli", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=env_with_project())
    assert proc.returncode == 0, f"edge {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr}"
    return proc


@dataclass
class Fleet:
    svc: Running
    ingester: Ingester
    bundle: Path
    reference: list[list[Any]]
    local: list[dict[str, Any]]  # what `edge run` printed


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fleet(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, keys: Keys, mosquitto: Mosquitto,
          shared_data: Path) -> Iterator[Fleet]:
    d = tmp_path_factory.mktemp(f"det-e2e-{request.param}")
    db = request.getfixturevalue("postgres")() if request.param == "postgresql" else None
    bundle = d / "yolov8n.tar.gz"
    edge("bundle", detection_dir(shared_data) / "models" / MODEL, "--task", "detection", "--name", "yolov8n",
         "--sign-key", keys.private, "-o", bundle)
    # a low decode bound, so a 4x photo is decoded reduced (drafted) on /classify
    settings = ServiceSettings(data_dir=d / "svc", database_url=db, admin_token=ADMIN_TOKEN,
                               trusted_keys=[keys.public], max_decode_pixels=4_000_000)
    with run_service(settings) as svc:
        # the ingester writes into the service's own database
        ingester = Ingester(IngestConfig(mqtt=MqttConfig(url=mosquitto.url), db_url=settings.resolved_database_url,
                                         client_id=f"det-e2e-ingest-{request.param}"))
        ingester.start()
        try:
            assert ingester.wait_connected(20)
            image = detection_dir(shared_data) / "images" / IMAGE
            r = edge("run", bundle, "--source", image, "--no-summary", "--threads", "1", "--mqtt", mosquitto.url,
                     "--device-id", DEVICE, "--outbox", d / "outbox.db")
            local = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
            wait_for(lambda: _objects(ingester) != [], 60, "the detections in the cloud database")
            # the same signed bundle in the registry, for online inference
            CloudClient(svc.url, ADMIN_TOKEN, timeout=120).publish(bundle, channel="stable")
            yield Fleet(svc, ingester, bundle, expected(shared_data)[MODEL][IMAGE], local)
        finally:
            ingester.stop()


def _objects(ingester: Ingester) -> list[dict[str, Any]]:
    t = telemetry_detections.c
    with ingester.engine.connect() as c:
        rows = c.execute(select(t.label, t.score, t.x1, t.y1, t.x2, t.y2, t.model_name, t.model_version, t.obj)
                         .where(t.device_id == DEVICE).order_by(t.obj)).all()
    return [{"label": r.label, "score": r.score, "box": [r.x1, r.y1, r.x2, r.y2], "model": (r.model_name,
             r.model_version), "obj": r.obj} for r in rows]


def test_the_device_detections_are_rows_in_the_cloud(fleet: Fleet) -> None:
    [local] = fleet.local
    assert local["model"] == {"name": "yolov8n", "version": 1} and local["detections"]
    rows = _objects(fleet.ingester)
    # one row per object of the record, as the device found them, boxes in the photo's pixels
    assert [(r["label"], r["score"], r["box"]) for r in rows] == [
        (d["label"], d["score"], d["box"]) for d in local["detections"]]
    assert rule_violations(rows, fleet.reference) == []
    labels = [r["label"] for r in rows if r["score"] >= 0.6]
    assert labels.count("kite") >= 2 and labels.count("person") >= 2
    assert {r["model"] for r in rows} == {("yolov8n", 1)}
    with fleet.ingester.engine.connect() as c:
        rec = c.execute(select(telemetry_records.c.top_label, telemetry_records.c.record)
                        .where(telemetry_records.c.device_id == DEVICE)).one()
    assert rec.top_label == local["detections"][0]["label"]
    assert rec.record["detections"] == local["detections"]


def test_the_objects_api_counts_per_label(fleet: Fleet) -> None:
    rows = _objects(fleet.ingester)
    want = {lbl: sum(r["label"] == lbl for r in rows) for lbl in {r["label"] for r in rows}}
    url = fleet.svc.url + "/api/v1/fleet/objects"
    data = httpx.get(url, params={"hours": 1}, headers=AUTH).json()
    assert data["objects"]["totals"] == want and data["bucket"] == "minute"
    assert sum(sum(b["counts"].values()) for b in data["objects"]["buckets"]) == len(rows)
    kites = httpx.get(url, params={"hours": 1, "label": "kite"}, headers=AUTH).json()["objects"]
    assert kites["totals"] == {"kite": want["kite"]}
    both = httpx.get(url, params=[("hours", "1"), ("label", "kite"), ("label", "person")], headers=AUTH).json()
    assert both["objects"]["totals"] == {"kite": want["kite"], "person": want["person"]}
    sure = httpx.get(url, params={"hours": 1, "min_score": 0.8}, headers=AUTH).json()["objects"]["totals"]
    assert sum(sure.values()) == sum(r["score"] >= 0.8 for r in rows)
    other = httpx.get(url, params={"hours": 1, "device": "someone-else"}, headers=AUTH).json()
    assert other["objects"] == {"totals": {}, "buckets": []}
    assert httpx.get(url, params={"hours": 1}).status_code == 401
    assert httpx.get(url, params={"hours": 0}, headers=AUTH).status_code in (400, 422)
    nul = httpx.get(url, params={"hours": 1, "label": "ki\x00te"}, headers=AUTH)
    assert nul.status_code == 400 and nul.json()["error"]["code"] == "bad_filter"
    # the dashboard's own data carries the same counts
    dash = httpx.get(fleet.svc.url + "/api/v1/dashboard", params={"hours": 1}, headers=AUTH).json()
    assert dash["objects"]["totals"] == want


def test_old_objects_fall_out_of_the_window(fleet: Fleet, mosquitto: Mosquitto) -> None:
    # a record two hours old (the device was offline): in the 24 h window, not in the 1 h one
    dev = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="cam-old")
    dev.connect(mosquitto.host, mosquitto.port)
    dev.loop_start()
    ts = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    rec = {"ts": ts, "source": "cam0", "frame": 0, "model": {"name": "yolov8n", "version": 1}, "path": "local",
           "detections": [{"label": "giraffe", "score": 0.9, "box": [1, 2, 3, 4]}]}
    body = {"schema": 1, "device_id": "cam-old", "seq": 1, "uuid": str(uuid.uuid4()), "kind": "telemetry",
            "created": ts, "records": [rec]}
    dev.publish("edge/cam-old/telemetry", json.dumps(body), qos=1).wait_for_publish(10)
    dev.loop_stop()
    dev.disconnect()
    url = fleet.svc.url + "/api/v1/fleet/objects"
    wait_for(lambda: "giraffe" in httpx.get(url, params={"hours": 24}, headers=AUTH).json()["objects"]["totals"],
             30, "the old record ingested")
    day = httpx.get(url, params={"hours": 24, "device": "cam-old"}, headers=AUTH).json()
    assert day["bucket"] == "hour" and day["objects"]["totals"] == {"giraffe": 1}
    assert "giraffe" not in httpx.get(url, params={"hours": 1}, headers=AUTH).json()["objects"]["totals"]


def test_the_dashboard_draws_objects_per_label(fleet: Fleet) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    rows = _objects(fleet.ingester)
    want = {lbl: sum(r["label"] == lbl for r in rows) for lbl in {r["label"] for r in rows}}
    with headless_chromium() as b:
        b.get(f"{fleet.svc.url}/#token={ADMIN_TOKEN}")
        WebDriverWait(b, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "true")
        legend = {s.get_attribute("data-label"): int(s.get_attribute("data-total"))
                  for s in b.find_elements(By.CSS_SELECTOR, "#object-legend span")}
        # the 24 h window may hold other tests' devices too (the giraffe): ours are all there
        assert {k: legend.get(k) for k in want} == want
        text = b.find_element(By.ID, "object-legend").text
        assert f"kite: {want['kite']}" in text and f"person: {want['person']}" in text
        chart = b.find_element(By.CSS_SELECTOR, '#objects svg[data-chart="objects"]')
        assert chart.get_attribute("aria-label") == "objects per label"
        bars = b.find_elements(By.CSS_SELECTOR, "#objects svg rect[data-label]")
        assert sum(int(r.get_attribute("data-count")) for r in bars) == sum(legend.values())
        assert {r.get_attribute("data-label") for r in bars} >= {"kite", "person"}
        # the predictions chart is still its own: one record, counted once, by its best object
        predictions = {s.get_attribute("data-label"): int(s.get_attribute("data-total"))
                       for s in b.find_elements(By.CSS_SELECTOR, "#label-legend span")}
        assert predictions.get(rows[0]["label"], 0) >= 1
        ARTIFACTS.mkdir(exist_ok=True)
        b.set_window_size(1280, 1600)
        b.save_screenshot(str(ARTIFACTS / "dashboard-objects.png"))


def test_the_service_answers_classify_with_detections(fleet: Fleet, shared_data: Path) -> None:
    image = (detection_dir(shared_data) / "images" / IMAGE).read_bytes()
    r = httpx.post(fleet.svc.url + "/v2/models/yolov8n/classify", content=image,
                   headers={**AUTH, "Content-Type": "image/jpeg"}, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == {"name": "yolov8n", "version": 1} and body["path"] == "cloud"
    assert body["top_k"] is None
    dets = body["detections"]
    # boxes in the photo's pixels (not the model's 640x640 letterbox): the reference rule holds
    assert rule_violations(dets, fleet.reference) == []
    assert [d["score"] for d in dets] == sorted((d["score"] for d in dets), reverse=True)
    # the same answer as the device gave for the same photo
    [local] = fleet.local
    assert [(d["label"], d["box"]) for d in dets] == [(d["label"], d["box"]) for d in local["detections"]]
    # multipart works the same
    form = httpx.post(fleet.svc.url + "/v2/models/yolov8n/classify", files={"image": (IMAGE, image, "image/jpeg")},
                      headers=AUTH, timeout=120).json()
    assert form["detections"] == dets
    # /infer keeps speaking tensors: the raw head, no detections
    with edge_runtime.Model.load(fleet.bundle, threads=1) as model:
        tensor = model.preprocess(edge_runtime.load_image(detection_dir(shared_data) / "images" / IMAGE))[0]
    spec = {"name": "images", "shape": list(tensor.shape), "datatype": "FP32",
            "data": tensor.astype(np.float32).reshape(-1).tolist()}
    meta = httpx.get(fleet.svc.url + "/v2/models/yolov8n", headers=AUTH).json()
    spec["name"] = meta["inputs"][0]["name"]
    raw = httpx.post(fleet.svc.url + "/v2/models/yolov8n/infer", json={"inputs": [spec]}, headers=AUTH, timeout=120)
    assert raw.status_code == 200, raw.text
    out = raw.json()
    assert "detections" not in out and out["outputs"][0]["shape"] == [1, 84, 8400]


def test_a_device_in_online_mode_gets_the_services_detections(fleet: Fleet, shared_data: Path) -> None:
    """The hybrid router with the device's real cloud client: the frame goes to the service, whose
    detections (in the photo's pixels) become the record."""
    dev = CloudClient(fleet.svc.url, ADMIN_TOKEN, timeout=60).register_device("cam-online", model="yolov8n")
    router = Router(RouterConfig(mode="online", deadline_ms=60_000),
                    CloudClassifier(fleet.svc.url, dev["token"], "yolov8n", 5))
    out: list[edge_runtime.Record] = []
    try:
        with edge_runtime.Model.load(fleet.bundle, threads=1) as model:
            edge_runtime.Pipeline(model, open_source(str(detection_dir(shared_data) / "images" / IMAGE)), [],
                                  predictor=router, on_record=out.append).run()
    finally:
        router.close()
    [rec] = out
    assert (rec["path"], rec["route"], rec["backend"]) == ("cloud", "cloud-ok", "cloud"), rec
    assert rec["model"] == {"name": "yolov8n", "version": 1} and "top_k" not in rec
    assert rule_violations(rec["detections"], fleet.reference) == []
    [local] = fleet.local
    assert [(d["label"], d["box"]) for d in rec["detections"]] == [(d["label"], d["box"]) for d in local["detections"]]


def test_a_huge_jpeg_decoded_reduced_still_gets_boxes_in_its_own_pixels(fleet: Fleet, shared_data: Path) -> None:
    # 4x the photo (5408x3600, over the service's 4 M-pixel bound): the service decodes it at 1/4
    # (JPEG draft), and the boxes must still be in the pixels of the image as sent
    with Image.open(detection_dir(shared_data) / "images" / IMAGE) as im:
        big = im.convert("RGB").resize((im.width * 4, im.height * 4), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=92)
    r = httpx.post(fleet.svc.url + "/v2/models/yolov8n/classify", content=buf.getvalue(),
                   headers={**AUTH, "Content-Type": "image/jpeg"}, timeout=120)
    assert r.status_code == 200, r.text
    dets = r.json()["detections"]
    scaled = [[label, score, *(v * 4 for v in box)] for label, score, *box in fleet.reference]
    assert rule_violations(dets, scaled) == []
    assert max(d["box"][2] for d in dets) > 1352  # not the reduced image's pixels
