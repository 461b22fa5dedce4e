"""Sources, the threaded pipeline and sinks, on real images, a real video file and the picamera2 stand-in."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_runtime import JsonlSink, Model, SourceError, SqliteSink, load_image
from edge_runtime._pipeline import Pipeline
from edge_runtime.sources import (
    ImageFilesSource,
    LatestFrame,
    PiCameraSource,
    TabularSource,
    VideoFileSource,
    open_source,
)
from tests.support.data import MOBILENET_REFERENCE
from tests.support.paths import ROOT

FAKES = Path(__file__).resolve().parent.parent / "fakes"


class ListSink:
    def __init__(self) -> None:
        self.records: list[dict] = []
        self.closed = False

    def write(self, record: dict) -> None:
        self.records.append(record)

    def close(self) -> None:
        self.closed = True


@pytest.fixture(scope="module")
def model(mobilenet_bundle: Path):
    m = Model.load(mobilenet_bundle, backend="litert", threads=2)
    yield m
    m.close()


@pytest.fixture()
def mixed_dir(tmp_path: Path, reference_images: dict[str, Path]) -> Path:
    d = tmp_path / "mixed"
    d.mkdir()
    for name, p in reference_images.items():
        shutil.copy(p, d / name)
    (d / "notes.txt").write_text("not an image")
    data = reference_images["cat.png"].read_bytes()
    (d / "truncated.png").write_bytes(data[: len(data) // 3])
    (d / ".hidden.png").write_bytes(b"ignored")
    return d


def test_directory_run_keeps_order_and_reports_bad_files(model: Model, mixed_dir: Path) -> None:
    sink = ListSink()
    stats = Pipeline(model, open_source(str(mixed_dir)), [sink], workers=3).run()
    names = [Path(r["source"]).name for r in sink.records]
    assert names == sorted(p.name for p in mixed_dir.iterdir() if not p.name.startswith("."))
    assert [r["frame"] for r in sink.records] == list(range(len(names)))
    by_name = {Path(r["source"]).name: r for r in sink.records}
    assert "notes.txt" in by_name["notes.txt"]["error"] and "not an image" in by_name["notes.txt"]["error"]
    assert "truncated.png" in by_name["truncated.png"]["error"]
    for name, (label, _) in MOBILENET_REFERENCE.items():
        r = by_name[name]
        assert r["top_k"][0]["label"] == label
        assert set(r["latency_ms"]) == {"preprocess", "inference", "postprocess", "total"}
        assert r["model"] == {"name": "mobilenet_v2", "version": 1}
        assert r["backend"] == "litert" and r["path"] == "local"
        assert r["ts"].endswith("Z")
    assert stats.frames == 4 and stats.errors == 2 and stats.dropped == 0
    assert sink.closed


def test_many_files_in_parallel_never_drop_or_reorder(model: Model, tmp_path: Path,
                                                      reference_images: dict[str, Path]) -> None:
    d = tmp_path / "many"
    d.mkdir()
    order = list(reference_images)
    expected = []
    for i in range(60):
        name = order[i % 4]
        os.link(reference_images[name], d / f"{i:03d}_{name}")
        expected.append(MOBILENET_REFERENCE[name][0])
    sink = ListSink()
    stats = Pipeline(model, ImageFilesSource(d), [sink], workers=4, prefetch=8).run()
    assert [r["top_k"][0]["label"] for r in sink.records] == expected
    assert stats.frames == 60 and stats.dropped == 0


def test_limit_and_glob(model: Model, shared_data: Path) -> None:
    sink = ListSink()
    Pipeline(model, open_source(str(shared_data / "images" / "*.png")), [sink], limit=2).run()
    assert len(sink.records) == 2
    with pytest.raises(SourceError, match="matches no file"):
        open_source(str(shared_data / "images" / "*.nothing"))
    with pytest.raises(SourceError, match="no such file"):
        open_source("/no/such/place.png")


def test_video_file_gives_every_frame(model: Model, tmp_path: Path, reference_images: dict[str, Path]) -> None:
    import cv2

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (448, 448))
    frames = []
    for name in ("cat.png", "sunflower.png"):
        rgb = np.asarray(Image.open(reference_images[name]).convert("RGB").resize((448, 448)))
        for _ in range(5):
            writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            frames.append(MOBILENET_REFERENCE[name][0])
    writer.release()
    src = open_source(str(path))
    assert isinstance(src, VideoFileSource) and not src.live
    sink = ListSink()
    stats = Pipeline(model, src, [sink]).run()
    assert [r["top_k"][0]["label"] for r in sink.records] == frames
    assert stats.dropped == 0


def test_corrupt_video_is_a_source_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(SourceError, match="bad.mp4"):
        open_source(str(bad))


def test_latest_frame_keeps_only_the_newest() -> None:
    slot = LatestFrame()
    for i in range(5):
        slot.put(np.full((1,), i))
    item = slot.take(timeout=0.1)
    assert item is not None and int(item[0][0]) == 4
    assert slot.dropped == 4 and slot.captured == 5
    assert slot.take(timeout=0.01) is None


@pytest.fixture()
def picamera(monkeypatch: pytest.MonkeyPatch, reference_images: dict[str, Path]):
    monkeypatch.syspath_prepend(str(FAKES))
    sys.modules.pop("picamera2", None)
    import picamera2

    picamera2.Picamera2.frames = [load_image(reference_images["cat.png"]),
                                  load_image(reference_images["sunflower.png"])]
    picamera2.Picamera2.instances = []
    picamera2.Picamera2.max_frames = None
    picamera2.Picamera2.frame_interval = 0.0
    yield picamera2.Picamera2
    sys.modules.pop("picamera2", None)


def test_picamera_frames_arrive_in_rgb(picamera, reference_images: dict[str, Path]) -> None:
    src = open_source("picamera")
    assert isinstance(src, PiCameraSource) and src.live
    frames = [next(iter(src))]
    expected = np.asarray(Image.fromarray(picamera.frames[0]).resize((640, 480), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(frames[0].data, expected)
    src.close()
    cam = picamera.instances[0]
    assert cam.config["main"]["format"] == "RGB888" and not cam.started and cam.closed


def test_live_source_drops_stale_frames_for_a_slow_model(model: Model, picamera) -> None:
    picamera.frame_interval = 0.002
    sink = ListSink()

    def slow_predictor(m, frame, tensors):
        time.sleep(0.03)
        return Pipeline._local(m, frame, _Prep(frame, tensors))

    stats = Pipeline(model, open_source("picamera"), [sink], predictor=slow_predictor, limit=15).run()
    cam = picamera.instances[0]
    assert stats.frames == 15
    assert stats.dropped > 0, "a model slower than the camera must skip frames, not queue them"
    # every captured frame was either answered, dropped as stale, or still waiting when we stopped
    assert stats.frames + stats.dropped <= cam.captured <= stats.frames + stats.dropped + 2
    # the stand-in alternates cat and sunflower; every processed frame is labelled correctly
    assert all(r["top_k"][0]["label"] in ("Egyptian cat", "daisy") for r in sink.records)


class _Prep:
    def __init__(self, frame, tensors) -> None:
        self.frame, self.tensors, self.preprocess_ms = frame, tensors, 0.0


def test_no_camera_is_a_clear_error(picamera) -> None:
    picamera.frames = []
    with pytest.raises(SourceError, match="picamera:0"):
        open_source("picamera")


def test_camera_failure_mid_run_ends_the_run_with_a_source_error(model: Model, picamera) -> None:
    picamera.max_frames = 3
    sink = ListSink()
    with pytest.raises(SourceError, match="capture failed"):
        Pipeline(model, open_source("picamera"), [sink]).run()
    assert sink.closed and 1 <= len(sink.records) <= 3


def test_model_swap_between_frames(model: Model, mobilenet_bundle: Path, tmp_path: Path,
                                   imagenet_labels: list[str], mobilenet_tflite: Path,
                                   reference_images: dict[str, Path]) -> None:
    from edge_runtime import make_bundle

    v2 = Model.load(make_bundle(mobilenet_tflite, tmp_path / "v2", name="mobilenet_v2", version=2,
                                labels=imagenet_labels), backend="litert")
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(20):
        os.link(reference_images["cat.png"], d / f"{i:02d}.png")
    sink = ListSink()
    pipe = Pipeline(model, ImageFilesSource(d), [sink], workers=2, prefetch=4)

    def on_record(rec: dict) -> None:
        if rec["frame"] == 9:
            pipe.swap_model(v2)

    pipe.on_record = on_record
    pipe.run()
    versions = [r["model"]["version"] for r in sink.records]
    assert versions == [1] * 10 + [2] * 10, "no frame lost or answered twice across the swap"
    assert all(r["top_k"][0]["label"] == "Egyptian cat" for r in sink.records)


def test_jsonl_and_sqlite_sinks(model: Model, tmp_path: Path, mixed_dir: Path) -> None:
    jl, db = tmp_path / "out" / "r.jsonl", tmp_path / "out" / "r.db"
    Pipeline(model, open_source(str(mixed_dir)), [JsonlSink(jl), SqliteSink(db)]).run()
    lines = [json.loads(x) for x in jl.read_text().splitlines()]
    assert len(lines) == 6
    rows = sqlite3.connect(db).execute(
        "SELECT source, top_label, error FROM records ORDER BY frame").fetchall()
    assert len(rows) == 6
    assert [Path(s).name for s, _, _ in rows] == [Path(r["source"]).name for r in lines]
    assert {Path(s).name: lbl for s, lbl, _ in rows}["cat.png"] == "Egyptian cat"
    assert sum(1 for _, _, e in rows if e) == 2


def test_tabular_sources(tmp_path: Path) -> None:
    csv = tmp_path / "rows.csv"
    csv.write_text("a,b,c\n1,2,3\n4,5,x\n\n7,8,9\n")
    frames = list(TabularSource(csv))
    assert [f.data.tolist() if f.data is not None else None for f in frames] == [[1, 2, 3], None, [7, 8, 9]]
    assert "rows.csv:3" in frames[1].error
    jl = tmp_path / "rows.jsonl"
    jl.write_text('[1, 2]\n{"a": 3, "b": 4}\nnot json\n')
    frames = list(TabularSource(jl))
    assert frames[0].data.tolist() == [1, 2] and frames[1].data.tolist() == [3, 4]
    assert frames[2].error is not None and "rows.jsonl:3" in frames[2].error
    npy = tmp_path / "rows.npy"
    np.save(npy, np.arange(6.0).reshape(3, 2))
    assert [f.data.tolist() for f in TabularSource(npy)] == [[0, 1], [2, 3], [4, 5]]


def test_ctrl_c_stops_cleanly_and_flushes(mobilenet_bundle: Path, tmp_path: Path,
                                          reference_images: dict[str, Path]) -> None:
    d = tmp_path / "long"
    d.mkdir()
    for i in range(3000):
        os.link(reference_images["potato_chips.png"], d / f"{i:04d}.png")
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_cli", "run", str(mobilenet_bundle), "--source", str(d),
         "--output", str(out), "--backend", "litert", "--threads", "1"],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or out.stat().st_size < 20_000):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    lines = out.read_text().splitlines()
    assert 0 < len(lines) < 3000
    assert all(json.loads(x)["top_k"][0]["label"] == "packet" for x in lines), "every line complete"
    assert [json.loads(x)["frame"] for x in lines] == list(range(len(lines)))


def test_decoding_in_worker_processes_gives_the_same_records(model: Model, tmp_path: Path,
                                                             reference_images: dict[str, Path]) -> None:
    d = tmp_path / "many"
    d.mkdir()
    names = list(reference_images)
    for i in range(40):
        os.link(reference_images[names[i % 4]], d / f"{i:03d}_{names[i % 4]}")
    (d / "zz_broken.png").write_bytes(b"\x89PNG not really")
    by_mode = {}
    for mode in ("thread", "process"):
        sink = ListSink()
        stats = Pipeline(model, ImageFilesSource(d), [sink], decode=mode, workers=2).run()
        assert stats.frames == 40 and stats.errors == 1
        by_mode[mode] = [(Path(r["source"]).name, r.get("top_k", [{}])[0].get("label"), r.get("error"))
                         for r in sink.records]
    assert by_mode["thread"] == by_mode["process"]
    assert "zz_broken.png" in (by_mode["process"][-1][2] or "")
    with pytest.raises(ValueError, match="decode must be"):
        Pipeline(model, ImageFilesSource(d), [], decode="gpu")


def _dying_decoder(path: str):
    # Runs in a forked decode worker: the process dies on one file, as on an out-of-memory kill.
    if path.endswith("007.png"):
        os._exit(9)
    return _real_decode_file(path)


from edge_runtime import _pipeline as _pipeline_module  # noqa: E402

_real_decode_file = _pipeline_module._decode_file


def test_a_dead_decode_worker_loses_no_frame(model: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             reference_images: dict[str, Path]) -> None:
    d = tmp_path / "many"
    d.mkdir()
    for i in range(30):
        os.link(reference_images["cat.png"], d / f"{i:03d}.png")
    monkeypatch.setattr(_pipeline_module, "_decode_file", _dying_decoder)
    sink = ListSink()
    stats = Pipeline(model, ImageFilesSource(d), [sink], decode="process", workers=1, prefetch=4).run()
    assert stats.frames == 30 and stats.errors == 0
    assert [r["frame"] for r in sink.records] == list(range(30))
    assert all(r["top_k"][0]["label"] == "Egyptian cat" for r in sink.records)
