"""The fast paths of the pipeline give the records the plain paths give: reduced JPEG decoding, a
worker process per core running the model, video frames read ahead, batched rows."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from edge_runtime import Model, load_image
from edge_runtime import _pipeline as pipeline_module
from edge_runtime._imaging import decode_image
from edge_runtime._pipeline import Pipeline
from edge_runtime.sources import ImageFilesSource, TabularSource, VideoFileSource
from tests.support.data import MOBILENET_REFERENCE


class ListSink:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)

    def close(self) -> None:
        pass


def _same(records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """A record without what legitimately varies between two runs (time stamp, latencies)."""
    return [(r["source"], r["frame"], r.get("top_k"), r.get("values"), r.get("error"), r["model"]) for r in records]


@pytest.fixture(scope="module")
def hd_jpegs(tmp_path_factory: pytest.TempPathFactory, reference_images: dict[str, Path]) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hd")
    out = {}
    for name, p in reference_images.items():
        q = d / (Path(name).stem + ".jpg")
        Image.open(p).convert("RGB").resize((1920, 1080), Image.Resampling.BICUBIC).save(q, quality=90)
        out[name] = q
    return out


def test_reduced_jpeg_decoding_keeps_the_reference_labels(mobilenet_bundle: Path,
                                                         hd_jpegs: dict[str, Path]) -> None:
    with Model.load(mobilenet_bundle, backend="litert", threads=1) as m:
        pre = m.image_preprocessor
        assert pre is not None and m.reduced_decode
        for name, path in hd_jpegs.items():
            small, size = decode_image(path, reduce_for=pre)
            assert size == (1920, 1080), "the size in the file, not the reduced one"
            assert small.shape[1] < 1920 and small.shape[1] >= 224 and small.shape[0] >= 224
            full = m.predict(load_image(path)).label
            assert m.predict(small).label == full == MOBILENET_REFERENCE[name][0]


def test_png_and_small_images_are_decoded_in_full(mobilenet_bundle: Path,
                                                  reference_images: dict[str, Path]) -> None:
    with Model.load(mobilenet_bundle, backend="litert", threads=1) as m:
        p = reference_images["cat.png"]
        arr, size = decode_image(p, reduce_for=m.image_preprocessor)
        assert np.array_equal(arr, load_image(p)) and size == (arr.shape[1], arr.shape[0])


def _many_files(d: Path, files: list[Path], n: int) -> Path:
    d.mkdir()
    for i in range(n):
        p = files[i % len(files)]
        os.link(p, d / f"{i:03d}_{p.name}")
    return d


def test_each_core_runs_the_model_when_nobody_fixed_the_threads(mobilenet_bundle: Path, tmp_path: Path,
                                                                 reference_images: dict[str, Path],
                                                                 hd_jpegs: dict[str, Path]) -> None:
    n = pipeline_module._PROCESS_MIN_FILES + 6
    d = _many_files(tmp_path / "many", [*reference_images.values(), *hd_jpegs.values()], n)
    (d / "zz_broken.jpg").write_bytes(b"\xff\xd8 not really")

    m = Model.load(mobilenet_bundle, backend="litert")  # threads from the device profile
    assert m.settings is not None and not m.settings.threads_fixed
    before = m.backend.threads
    seen: list[int | None] = []
    sink = ListSink()
    workers = Pipeline(m, ImageFilesSource(d), [sink])
    workers.on_record = lambda rec: seen.append(workers.model.backend.threads)
    stats = workers.run()
    cores = pipeline_module._cores()
    assert stats.model_workers == (min(cores, 8) if cores >= 2 else 0)
    assert set(seen) == {before}, "this process's model is left alone: the workers run their own"
    assert stats.frames == n and stats.errors == 1
    assert "zz_broken.jpg" in sink.records[-1]["source"] and "not an image" in sink.records[-1]["error"]

    # the plain path: threads fixed by the caller, frames decoded in threads of this process
    fixed = Model.load(mobilenet_bundle, backend="litert", threads=before)
    assert fixed.settings is not None and fixed.settings.threads_fixed
    plain = ListSink()
    plain_stats = Pipeline(fixed, ImageFilesSource(d), [plain], decode="thread").run()
    assert plain_stats.model_workers == 0
    # the same model file, the same (reduced) decoding: the same records, scores included
    assert _same(sink.records) == _same(plain.records)
    m.close()
    fixed.close()


def test_a_swap_during_a_run_on_model_workers_loses_nothing(mobilenet_bundle: Path, mobilenet_tflite: Path,
                                                            imagenet_labels: list[str], tmp_path: Path,
                                                            reference_images: dict[str, Path]) -> None:
    """The workers hold the old model: from the swap on, every record is the new model's (frames the
    workers had already taken are redone here), each frame once and in order."""
    from edge_runtime import make_bundle

    if pipeline_module._cores() < 2:
        pytest.fail("this test needs 2 cores (model workers run only where there are 2 or more)")
    n = pipeline_module._PROCESS_MIN_FILES + 16
    d = _many_files(tmp_path / "many", list(reference_images.values()), n)
    m = Model.load(mobilenet_bundle, backend="litert")
    v2 = Model.load(make_bundle(mobilenet_tflite, tmp_path / "v2", name="mobilenet_v2", version=2,
                                labels=imagenet_labels), backend="litert")
    sink = ListSink()
    pipe = Pipeline(m, ImageFilesSource(d), [sink])

    def on_record(rec: dict[str, Any]) -> None:
        if rec["frame"] == 9:
            pipe.swap_model(v2)

    pipe.on_record = on_record
    stats = pipe.run()
    assert stats.model_workers >= 2
    assert [r["frame"] for r in sink.records] == list(range(n))
    assert [r["model"]["version"] for r in sink.records] == [1] * 10 + [2] * (n - 10)
    by_name = {Path(r["source"]).name[4:]: r["top_k"][0]["label"] for r in sink.records}
    assert by_name == {name: MOBILENET_REFERENCE[name][0] for name in reference_images}
    m.close()
    v2.close()


def test_video_frames_read_ahead_keep_every_frame_in_order(mobilenet_bundle: Path, tmp_path: Path,
                                                           reference_images: dict[str, Path]) -> None:
    import cv2

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (1280, 720))
    expected = []
    for name in ("cat.png", "grace_hopper.png", "potato_chips.png", "sunflower.png"):
        rgb = np.asarray(Image.open(reference_images[name]).convert("RGB").resize((1280, 720)))
        for _ in range(4):
            writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            expected.append(MOBILENET_REFERENCE[name][0])
    writer.release()
    with Model.load(mobilenet_bundle, backend="litert") as m:
        sink = ListSink()
        stats = Pipeline(m, VideoFileSource(str(path)), [sink]).run()
        assert stats.frames == 16 and stats.dropped == 0
        assert [r["frame"] for r in sink.records] == list(range(16))
        assert [r["top_k"][0]["label"] for r in sink.records] == expected
        limited = ListSink()
        src = VideoFileSource(str(path))
        Pipeline(m, src, [limited], limit=5).run()
        src.close()
        assert [r["frame"] for r in limited.records] == list(range(5))


@pytest.fixture(scope="module")
def tabular(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    import joblib
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    from converters import convert

    d = tmp_path_factory.mktemp("lr")
    x, y = load_digits(return_X_y=True)
    joblib.dump(LogisticRegression(max_iter=3000).fit(x, y), d / "lr.joblib")
    report = convert(d / "lr.joblib", d / "out", to="onnx", latency_runs=2, threads=1, trust_pickle=True)
    return Path(report.variant("float").bundle), x[:600]


def test_rows_from_a_file_are_batched_into_the_same_records(tabular: tuple[Path, np.ndarray], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    bundle, x = tabular
    csv = tmp_path / "rows.csv"
    lines = [",".join(f"{v:g}" for v in row) for row in x]
    lines.insert(0, ",".join(f"f{i}" for i in range(x.shape[1])))  # header
    lines.insert(100, "1,2,oops")  # not numbers
    lines.insert(300, "1,2,3")  # too short for the model
    csv.write_text("\n".join(lines) + "\n")
    m = Model.load(bundle, threads=1)
    by_batch = {}
    for batch in (1, 7, 256):
        monkeypatch.setattr(pipeline_module, "_ROW_BATCH", batch)
        sink = ListSink()
        stats = Pipeline(m, TabularSource(csv), [sink], limit=500).run()
        assert stats.frames + stats.errors == 500 and stats.errors == 2
        by_batch[batch] = _same(sink.records)
    assert by_batch[1] == by_batch[7] == by_batch[256], "a row's record does not depend on the batch it fell in"
    recs = by_batch[256]
    assert [r[1] for r in recs] == list(range(500))
    assert "not all values are numbers" in (recs[99][4] or "") and "value(s)" in (recs[299][4] or "")
    # against one Model.predict per row: the same labels in the same order, scores equal to the
    # 6th decimal up to one step (a batch of one runs on onnxruntime's GEMV path, last bit apart)
    good = [r for r in recs if r[4] is None]
    rows = [row for i, row in enumerate(x) if i < len(good)]
    for rec, row in zip(good, rows, strict=True):
        pred = m.predict(row)
        assert [d["label"] for d in rec[2]] == [lbl for lbl, _ in pred.top_k]
        assert all(abs(d["score"] - s) <= 1.01e-6 for d, s in zip(rec[2], [s for _, s in pred.top_k], strict=True))
    m.close()


def test_a_model_with_a_fixed_batch_of_one_runs_rows_one_by_one(mobilenet_bundle: Path,
                                                                tabular: tuple[Path, np.ndarray]) -> None:
    bundle, _ = tabular
    with Model.load(bundle, threads=1) as m:
        assert pipeline_module._takes_batches(m)
    with Model.load(mobilenet_bundle, backend="litert", threads=1) as mb:
        assert not pipeline_module._takes_batches(mb)


def test_a_model_worker_killed_mid_run_loses_no_frame(mobilenet_bundle: Path, tmp_path: Path,
                                                      reference_images: dict[str, Path]) -> None:
    """SIGKILL to a worker (the out-of-memory killer, say): the files it and its siblings held are
    redone in this process, the rest run here too; every frame once, in order, none an error."""
    import multiprocessing
    import signal

    if pipeline_module._cores() < 2:
        pytest.fail("this test needs 2 cores (model workers run only where there are 2 or more)")
    n = pipeline_module._PROCESS_MIN_FILES + 16
    d = _many_files(tmp_path / "many", list(reference_images.values()), n)
    killed: list[int] = []
    sink = ListSink()
    with Model.load(mobilenet_bundle, backend="litert") as m:
        pipe = Pipeline(m, ImageFilesSource(d), [sink])

        def on_record(rec: dict[str, Any]) -> None:
            if rec["frame"] == 5:
                child = multiprocessing.active_children()[0]
                assert child.pid is not None
                os.kill(child.pid, signal.SIGKILL)
                killed.append(child.pid)

        pipe.on_record = on_record
        stats = pipe.run()
    assert killed and stats.model_workers >= 2
    assert [r["frame"] for r in sink.records] == list(range(n)) and stats.errors == 0
    assert all(r["top_k"][0]["label"] == MOBILENET_REFERENCE[Path(r["source"]).name[4:]][0] for r in sink.records)
