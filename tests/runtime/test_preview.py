"""`edge run --preview`: the live page of a headless device, in headless Chromium, on the real
YOLOv8n ONNX model and the shared photos; the MJPEG stream read as a client reads it; the preview
server's bounds (a stalled viewer, too many viewers) and the pipeline's pixel hook."""

from __future__ import annotations

import http.client
import io
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from edge_runtime import Model, Pipeline, Record, annotation_color, make_bundle
from edge_runtime.preview import PreviewError, PreviewServer, parse_listen
from edge_runtime.sources import open_source
from tests.support.browser import headless_chromium
from tests.support.detection import detection_dir
from tests.support.net import free_port, port_open, wait_for
from tests.support.paths import ROOT, env_with_project

ARTIFACTS = ROOT / "test-artifacts"
KITE = "kite_and_cold.jpg"


def read_part(resp: http.client.HTTPResponse) -> bytes:
    """One part of a multipart/x-mixed-replace body: boundary, headers, Content-Length bytes."""
    line = resp.readline()
    while line in (b"\r\n", b"\n"):
        line = resp.readline()
    assert line.startswith(b"--"), line
    headers: dict[str, str] = {}
    while (line := resp.readline()) not in (b"\r\n", b"\n", b""):
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    assert headers["content-type"] == "image/jpeg"
    return resp.read(int(headers["content-length"]))


def open_stream(port: int) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/stream.mjpg")
    return conn, conn.getresponse()


# -- the whole thing: edge run --preview, seen in a browser -----------------------------------------

@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Iterator[int]:
    """`edge run` of a yolov8n ONNX bundle on a long run of kite_and_cold.jpg, with --preview."""
    d = tmp_path_factory.mktemp("preview")
    bundle = make_bundle(detection_dir(shared_data) / "models" / "yolov8n_qdq.onnx", d / "bundle", task="detection")
    images = d / "images"
    images.mkdir()
    for i in range(3000):  # keeps running for the whole module; stopped at the end
        (images / f"{i:04d}.jpg").symlink_to(detection_dir(shared_data) / "images" / KITE)
    port = free_port()
    out = (d / "stdout.jsonl").open("w")
    err = (d / "stderr.txt").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "edge_cli", "run", str(bundle), "--source", str(images),
                             "--json", "--threads", "1", "--preview", f"127.0.0.1:{port}"],
                            cwd=ROOT, env=env_with_project(), stdout=out, stderr=err)
    try:
        wait_for(lambda: port_open(port) or proc.poll() is not None, 120, "the preview port")
        assert proc.poll() is None, (d / "stderr.txt").read_text()
        yield port
    finally:
        proc.terminate()
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(10)
        out.close()
        err.close()
    # SIGTERM stops the run cleanly: every record written is whole, and the preview was announced
    assert code == 0, (d / "stderr.txt").read_text()
    assert f"preview: http://127.0.0.1:{port}/" in (d / "stderr.txt").read_text()
    recs = [json.loads(line) for line in (d / "stdout.jsonl").read_text().splitlines()]
    assert recs and all("detections" in r for r in recs)


def test_preview_page_in_headless_chromium(running: int) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with headless_chromium() as b:
        b.get(f"http://127.0.0.1:{running}/")
        WebDriverWait(b, 90).until(lambda d: d.execute_script(
            "const i = document.getElementById('view'); return i.complete && i.naturalWidth > 0;"))
        # the list is redrawn twice a second: read it whole, in one script
        read = "return [...document.querySelectorAll('#detections li.det')].map(li => [" \
               "li.querySelector('.label').textContent, li.querySelector('.score').textContent]);"
        WebDriverWait(b, 60).until(lambda d: {"kite", "person"} <= {label for label, _ in d.execute_script(read)})
        width, height = b.execute_script(
            "const i = document.getElementById('view'); return [i.naturalWidth, i.naturalHeight];")
        assert (width, height) == (960, 639)  # 1352 x 900 shrunk to the preview's 960 px
        rows = b.execute_script(read)
        labels, scores = [lbl for lbl, _ in rows], [float(s) for _, s in rows]
        assert labels[:2] == ["kite", "person"] and scores == sorted(scores, reverse=True)  # best first
        assert "frame" in b.find_element(By.ID, "status").text
        # nothing on the page comes from anywhere but the device
        urls = b.execute_script("return performance.getEntriesByType('resource').map(e => e.name);")
        assert all(u.startswith(f"http://127.0.0.1:{running}/") for u in urls), urls
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "preview_detection.png"
        b.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000


def test_mjpeg_stream_gives_annotated_jpeg_frames(running: int, shared_data: Path) -> None:
    conn, resp = open_stream(running)
    try:
        assert resp.status == 200
        ctype = resp.getheader("Content-Type") or ""
        assert ctype.startswith("multipart/x-mixed-replace") and "boundary=" in ctype
        frames = [read_part(resp) for _ in range(3)]
    finally:
        conn.close()
    assert len(set(frames)) >= 1
    im = Image.open(io.BytesIO(frames[-1]))
    assert im.format == "JPEG" and im.size == (960, 639)
    im.load()
    # the boxes are drawn: the label tag above the best kite is filled with the kite colour
    det = json.loads(http_get(running, "/detections.json"))["record"]["detections"]
    kite = next(d for d in det if d["label"] == "kite")
    scale = 960 / 1352
    x1, y1 = kite["box"][0] * scale, kite["box"][1] * scale
    tag = np.asarray(im.convert("RGB"))[max(0, round(y1) - 12):round(y1) - 2, round(x1) + 2:round(x1) + 30]
    assert tag.size, kite
    assert np.all(np.abs(np.median(tag.reshape(-1, 3), axis=0) - annotation_color("kite")) < 40)
    raw = np.asarray(Image.open(detection_dir(shared_data) / "images" / KITE).convert("RGB").resize((960, 639)))
    assert not np.all(np.abs(np.median(raw[max(0, round(y1) - 12):round(y1) - 2, round(x1) + 2:round(x1) + 30]
                                       .reshape(-1, 3), axis=0) - annotation_color("kite")) < 40)


def http_get(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200, (path, resp.status)
        return resp.read()
    finally:
        conn.close()


def test_single_frame_and_unknown_paths(running: int) -> None:
    jpeg = http_get(running, "/frame.jpg")
    assert Image.open(io.BytesIO(jpeg)).format == "JPEG"
    conn = http.client.HTTPConnection("127.0.0.1", running, timeout=30)
    conn.request("GET", "/../etc/passwd")
    assert conn.getresponse().status == 404
    conn.close()


# -- the server's bounds, without a model --------------------------------------------------------

def _record(i: int) -> Record:
    return {"ts": "2026-01-01T00:00:00Z", "source": "camera:0", "frame": i,
            "detections": [{"label": "cat", "score": 0.9, "box": [10.0, 10.0, 200.0, 150.0]}],
            "latency_ms": {"total": 1.0}, "model": {"name": "m", "version": 1}, "backend": "x", "path": "local"}


def test_a_stalled_viewer_never_blocks_the_pipeline_and_others_keep_watching() -> None:
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(4)]  # big JPEGs
    with PreviewServer("127.0.0.1", 0, max_viewers=2, max_fps=0) as preview:
        stalled = socket.create_connection(("127.0.0.1", preview.port))
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads
        stop = threading.Event()

        def pipeline() -> None:
            i = 0
            while not stop.is_set():
                preview.publish(_record(i), noise[i % len(noise)])
                i += 1

        t = threading.Thread(target=pipeline, daemon=True)
        t.start()
        conn, resp = open_stream(preview.port)
        got = [read_part(resp) for _ in range(5)]
        assert len(set(got)) >= 2  # the second viewer gets new frames while the first reads nothing
        # the stream holds both slots: a third viewer is refused instead of queued
        third = http.client.HTTPConnection("127.0.0.1", preview.port, timeout=30)
        third.request("GET", "/stream.mjpg")
        assert third.getresponse().status == 503
        third.close()
        published = preview.published
        wait_for(lambda: preview.published > published + 1000, 60, "the pipeline to keep publishing")
        stop.set()
        t.join(30)
        assert not t.is_alive()
        assert preview.encoded < preview.published  # only the newest frame is encoded, never a backlog
        conn.close()
        stalled.close()
        rec = json.loads(http_get(preview.port, "/detections.json"))
        assert rec["record"]["frame"] == preview.published - 1


def test_nothing_is_encoded_while_nobody_watches() -> None:
    with PreviewServer("127.0.0.1", 0) as preview:
        for i in range(20):
            preview.publish(_record(i), np.zeros((48, 64, 3), np.uint8))
        assert preview.encoded == 0
        jpeg = http_get(preview.port, "/frame.jpg")  # the newest frame, encoded on demand
        assert Image.open(io.BytesIO(jpeg)).size == (64, 48) and preview.encoded == 1
        preview.publish({**_record(99), "values": [1.0]}, np.zeros(4))  # not an image: the record still shows
        assert json.loads(http_get(preview.port, "/detections.json"))["record"]["frame"] == 99


def test_listen_address() -> None:
    assert parse_listen("8080") == ("127.0.0.1", 8080)
    assert parse_listen("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_listen(":9000") == ("127.0.0.1", 9000)
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    for bad in ("http", "1.2.3.4:99999", "::1:80", "host:"):
        with pytest.raises(PreviewError):
            parse_listen(bad)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(PreviewError, match="cannot listen"):
            PreviewServer("127.0.0.1", s.getsockname()[1]).start()


def test_pipeline_hands_each_frame_with_its_pixels(mobilenet_bundle: Path, reference_images: dict[str, Path],
                                                   tmp_path: Path) -> None:
    # enough files that the pipeline would otherwise decode in worker processes, away from the pixels
    for i in range(70):
        src = list(reference_images.values())[i % len(reference_images)]
        (tmp_path / f"{i:03d}{src.suffix}").symlink_to(src)
    seen: list[tuple[Record, Any]] = []
    with Model.load(mobilenet_bundle, threads=1) as model:
        stats = Pipeline(model, open_source(str(tmp_path)), [], on_frame=lambda r, px: seen.append((r, px))).run()
    assert stats.frames == 70 and len(seen) == 70
    for rec, px in seen:
        w, h = Image.open(rec["source"]).size
        assert isinstance(px, np.ndarray) and px.shape == (h, w, 3) and px.dtype == np.uint8
    assert [r["frame"] for r, _ in seen] == list(range(70))


def test_a_preview_port_in_use_is_a_usage_error(mobilenet_bundle: Path, reference_images: dict[str, Path]) -> None:
    image = next(iter(reference_images.values()))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        proc = subprocess.run([sys.executable, "-m", "edge_cli", "run", str(mobilenet_bundle), "--source", str(image),
                               "--preview", f"127.0.0.1:{s.getsockname()[1]}"], cwd=ROOT, env=env_with_project(),
                              capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "--preview" in proc.stderr and "cannot listen" in proc.stderr and proc.stdout == ""


def test_connections_are_capped_and_the_excess_closed() -> None:
    with PreviewServer("127.0.0.1", 0, max_viewers=1, max_connections=3) as preview:
        preview.publish(_record(0), np.zeros((48, 64, 3), np.uint8))
        idle = [socket.create_connection(("127.0.0.1", preview.port)) for _ in range(3)]  # hold every slot
        wait_for(lambda: not _served(preview.port), 30, "the excess connection to be closed")
        for s in idle:
            s.close()
        wait_for(lambda: _served(preview.port), 30, "a slot to free up")


def _served(port: int) -> bool:
    """Whether a request on a new connection gets an answer (False: closed without one)."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/detections.json")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except (ConnectionError, http.client.HTTPException, TimeoutError):
        return False
