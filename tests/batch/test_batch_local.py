"""`edge batch --engine local` (cloud_sync.batch without Ray): MobileNet V2 on copies of the shared
images into SQLite, PostgreSQL and Parquet; directory, glob, list file and S3 sources; bad inputs
as error rows; reruns that write nothing twice."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest

from cloud_sync.batch import BatchError, EngineOptions, run_batch
from tests.support.batch import S3_TEST_CREDENTIALS, expected_label, make_images, read_rows, row_count
from tests.support.data import IMAGES_DIR


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("batch-images") / "images"
    make_images(d, 20)
    return d


def _check_good_rows(rows: list[dict[str, object]], n: int) -> None:
    assert len(rows) == n
    assert len({r["source_key"] for r in rows}) == n
    for r in rows:
        assert r["error"] is None, r
        assert r["model_name"] == "mobilenet_v2" and r["model_version"] == 1
        assert r["top_label"] == expected_label(str(r["source_key"]))
        rec = r["record"]
        assert isinstance(rec, dict)
        assert rec["source"] == r["source_key"]
        assert rec["top_k"][0] == {"label": r["top_label"], "score": pytest.approx(r["top_score"])}
        assert rec["model"] == {"name": "mobilenet_v2", "version": 1}


def test_directory_into_sqlite_then_rerun_writes_nothing(mobilenet_bundle: Path, images: Path,
                                                         tmp_path: Path) -> None:
    out = f"sqlite:///{tmp_path / 'preds.db'}"
    first = run_batch(mobilenet_bundle, str(images), out)
    assert (first.inputs, first.already_done, first.processed, first.written, first.errors) == (20, 0, 20, 20, 0)
    rows = read_rows(out)
    _check_good_rows(rows, 20)
    assert {r["source_key"] for r in rows} == {str(p) for p in images.iterdir()}
    # the start-up (until the first rows) is reported apart from the steady rate
    assert first.startup_s is not None and 0 <= first.startup_s <= first.elapsed_s
    assert 0 < first.first_rows <= 20
    d = first.as_dict()
    assert d["startup_s"] is not None and "steady_rows_per_s" in d

    again = run_batch(mobilenet_bundle, str(images), out)
    assert (again.already_done, again.processed, again.written) == (20, 0, 0)
    assert again.startup_s is None and again.steady_rows_per_s == 0.0
    assert read_rows(out) == rows  # untouched, not rewritten


def test_rerun_after_new_inputs_adds_only_those(mobilenet_bundle: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    make_images(src, 6)
    out = f"sqlite:///{tmp_path / 'preds.db'}"
    run_batch(mobilenet_bundle, str(src), out)
    shutil.copyfile(IMAGES_DIR / "cat.png", src / "cat-0100.png")
    summary = run_batch(mobilenet_bundle, str(src), out)
    assert (summary.inputs, summary.already_done, summary.processed, summary.written) == (7, 6, 1, 1)
    _check_good_rows(read_rows(out), 7)


def test_a_new_model_version_gets_its_own_rows(mobilenet_bundle: Path, mobilenet_tflite: Path,
                                               imagenet_labels: list[str], tmp_path: Path) -> None:
    from edge_runtime import make_bundle

    v2 = make_bundle(mobilenet_tflite, tmp_path / "v2", name="mobilenet_v2", version=2, labels=imagenet_labels)
    src = tmp_path / "in"
    make_images(src, 4)
    out = f"sqlite:///{tmp_path / 'preds.db'}"
    run_batch(mobilenet_bundle, str(src), out)
    summary = run_batch(v2, str(src), out)
    assert (summary.already_done, summary.written) == (0, 4)
    rows = read_rows(out)
    assert sorted(r["model_version"] for r in rows) == [1] * 4 + [2] * 4


def test_bad_inputs_become_error_rows(mobilenet_bundle: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    make_images(src, 3)
    (src / "notes.png").write_text("not an image")
    (src / "truncated.png").write_bytes((IMAGES_DIR / "cat.png").read_bytes()[:200])
    listing = tmp_path / "inputs.txt"
    missing = tmp_path / "gone.png"
    listing.write_text("# inputs\n" + "\n".join(str(p) for p in sorted(src.iterdir())) + f"\n{missing}\n\n")
    out = str(tmp_path / "preds.parquet")
    summary = run_batch(mobilenet_bundle, str(listing), out)
    assert (summary.inputs, summary.processed, summary.errors) == (6, 6, 3)
    rows = {r["source_key"]: r for r in read_rows(out)}
    assert len(rows) == 6
    assert "not an image" in rows[str(src / "notes.png")]["error"]
    assert "corrupt or truncated" in rows[str(src / "truncated.png")]["error"]
    assert "no such file" in rows[str(missing)]["error"]
    for key in (str(src / "notes.png"), str(missing)):
        assert rows[key]["top_label"] is None and rows[key]["record"]["error"] == rows[key]["error"]
    assert sum(1 for r in rows.values() if r["error"] is None) == 3


def test_glob_and_list_file_sources(mobilenet_bundle: Path, images: Path, tmp_path: Path) -> None:
    out = f"sqlite:///{tmp_path / 'preds.db'}"
    summary = run_batch(mobilenet_bundle, str(images / "cat-*.png"), out)
    assert summary.inputs == 5
    assert {r["top_label"] for r in read_rows(out)} == {"Egyptian cat"}

    # a relative path in a list file is relative to the working directory; the key is absolute
    listing = tmp_path / "some.lst"
    listing.write_text("\n".join(str(p) for p in sorted(images.glob("sunflower-*.png"))[:2]) + "\n")
    summary = run_batch(mobilenet_bundle, str(listing), out)
    assert (summary.inputs, summary.written) == (2, 2)
    assert row_count(out) == 7


def test_source_and_output_errors(mobilenet_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(BatchError, match="matches no file"):
        run_batch(mobilenet_bundle, str(tmp_path / "*.png"), f"sqlite:///{tmp_path / 'a.db'}")
    with pytest.raises(BatchError, match="no such file or directory"):
        run_batch(mobilenet_bundle, str(tmp_path / "nowhere"), f"sqlite:///{tmp_path / 'a.db'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BatchError, match="no inputs"):
        run_batch(mobilenet_bundle, str(tmp_path / "empty"), f"sqlite:///{tmp_path / 'a.db'}")
    make_images(tmp_path / "in", 1)
    with pytest.raises(BatchError, match="not an output"):
        run_batch(mobilenet_bundle, str(tmp_path / "in"), str(tmp_path / "out.csv"))


def test_parquet_directory_and_file_resume(mobilenet_bundle: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    make_images(src, 8)
    for out in (str(tmp_path / "parts") + "/", str(tmp_path / "one.parquet")):
        first = run_batch(mobilenet_bundle, str(src), out, options=EngineOptions(batch_size=3), flush_rows=1)
        assert first.written == 8
        _check_good_rows(read_rows(out), 8)
        again = run_batch(mobilenet_bundle, str(src), out)
        assert (again.already_done, again.written) == (8, 0)
        assert row_count(out) == 8
    # the single file keeps no parts beside it once the run ended
    assert not (tmp_path / "one.parquet.parts").exists()
    assert len(list((tmp_path / "parts").glob("part-*.parquet"))) == 3  # 3 + 3 + 2 rows


def test_parquet_file_merges_parts_a_killed_run_left(mobilenet_bundle: Path, tmp_path: Path) -> None:
    """A run killed before its end leaves parts beside out.parquet: the next run counts them as
    done and folds them into the file."""
    src = tmp_path / "in"
    make_images(src, 6)
    out = tmp_path / "out.parquet"
    run_batch(mobilenet_bundle, str(src / "cat-*.png"), str(out))  # 2 rows in the file
    assert row_count(str(out)) == 2
    # what a killed run leaves: parts, no merge
    from cloud_sync.batch import open_output

    partial = open_output(str(out))
    run_batch(mobilenet_bundle, str(src / "sunflower-*.png"), str(tmp_path / "scratch") + "/")
    partial.write([r for r in _rows_of(tmp_path / "scratch")])
    assert (tmp_path / "out.parquet.parts").is_dir()
    summary = run_batch(mobilenet_bundle, str(src), str(out))
    assert (summary.inputs, summary.already_done, summary.written) == (6, 3, 3)
    rows = read_rows(str(out))
    assert len(rows) == 6 and len({r["source_key"] for r in rows}) == 6
    assert not (tmp_path / "out.parquet.parts").exists()


def _rows_of(parts_dir: Path) -> list[dict[str, object]]:
    import pyarrow.parquet as pq

    rows = []
    for f in sorted(parts_dir.glob("part-*.parquet")):
        for r in pq.read_table(f).to_pylist():
            r["ts"] = r["ts"].isoformat().replace("+00:00", "Z")
            rows.append(r)
    return rows


def test_postgresql(mobilenet_bundle: Path, images: Path, postgres: Callable[[], str]) -> None:
    url = postgres()
    summary = run_batch(mobilenet_bundle, str(images), url)
    assert (summary.written, summary.errors) == (20, 0)
    rows = read_rows(url)
    _check_good_rows(rows, 20)
    again = run_batch(mobilenet_bundle, str(images), url)
    assert (again.already_done, again.written) == (20, 0)
    assert row_count(url) == 20


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in S3_TEST_CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


def test_s3_prefix_and_missing_key(mobilenet_bundle: Path, s3_endpoint: str, aws_env: None,
                                   tmp_path: Path) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="batch-in")
    local = make_images(tmp_path / "in", 6)
    for p in local:
        s3.upload_file(str(p), "batch-in", f"photos/{p.name}")
    s3.put_object(Bucket="batch-in", Key="other/cat-0999.png", Body=b"outside the prefix")
    s3.put_object(Bucket="batch-in", Key="photos/sub/", Body=b"")  # a "folder" marker: not an input
    out = f"sqlite:///{tmp_path / 'preds.db'}"
    summary = run_batch(mobilenet_bundle, "s3://batch-in/photos/", out, s3_endpoint_url=s3_endpoint)
    assert (summary.inputs, summary.written, summary.errors) == (6, 6, 0)
    rows = read_rows(out)
    assert {r["source_key"] for r in rows} == {f"s3://batch-in/photos/{p.name}" for p in local}
    _check_good_rows(rows, 6)

    # a list of URLs naming a key that is not there: an error row, the others are done
    listing = tmp_path / "urls.txt"
    listing.write_text(f"s3://batch-in/photos/{local[0].name}\ns3://batch-in/photos/nope.png\n")
    summary = run_batch(mobilenet_bundle, str(listing), out, s3_endpoint_url=s3_endpoint)
    assert (summary.already_done, summary.written, summary.errors) == (1, 1, 1)
    bad = [r for r in read_rows(out) if r["error"]]
    assert len(bad) == 1 and "s3://batch-in/photos/nope.png: no such S3 object" in bad[0]["error"]

    with pytest.raises(BatchError, match="cannot list"):
        run_batch(mobilenet_bundle, "s3://no-such-bucket/x", out, s3_endpoint_url=s3_endpoint)


def test_detection_rows_hold_what_the_runtime_says(shared_data: Path, tmp_path: Path) -> None:
    """A detection bundle: the detections (JSON) and the best one as top label/score, exactly what
    Model.predict gives for the same file."""
    from edge_runtime import Model, load_image, make_bundle

    det = shared_data / "detection"
    bundle = make_bundle(det / "models" / "ssd_mobilenet_v1_coco.tflite", tmp_path / "ssd", task="detection")
    out = str(tmp_path / "det.parquet")
    summary = run_batch(bundle, str(det / "images"), out)
    assert (summary.inputs, summary.errors) == (3, 0)
    import pyarrow.parquet as pq

    rows = pq.read_table(out).to_pylist()
    with Model.load(bundle, threads=1) as model:
        for r in rows:
            want = model.predict(load_image(r["source_key"])).detections
            assert want, r["source_key"]
            assert json.loads(r["detections"]) == want
            assert (r["top_label"], r["top_score"]) == (want[0]["label"], want[0]["score"])
            assert r["values"] is None and json.loads(r["record"])["detections"] == want


def test_every_worker_verifies_the_bundle_it_loads(mobilenet_bundle: Path, keys: Any, tmp_path: Path) -> None:
    """What a worker (a Ray actor) is handed is verified again where it loads: a bundle changed
    after the driver's check, or shipped as a tampered archive, is refused there."""
    from cloud_sync.batch import BatchPredictor, PredictorSpec
    from edge_runtime import EdgeError, load_private_key, sign_bundle

    signed = tmp_path / "signed"
    shutil.copytree(mobilenet_bundle, signed)
    sign_bundle(signed, load_private_key(keys.private))
    spec = PredictorSpec(bundle=str(signed), pubkeys_pem=(keys.public.read_bytes(),))
    BatchPredictor(spec).close()
    packed = spec.packed()
    (signed / "labels.txt").write_text("tampered\n")
    with pytest.raises(EdgeError, match="labels.txt"):
        BatchPredictor(spec)
    ok = BatchPredictor(packed)  # the archive was made before the change
    ok.close()
    with pytest.raises(EdgeError, match="not signed|signature"):
        BatchPredictor(PredictorSpec(bundle=str(mobilenet_bundle), pubkeys_pem=(keys.public.read_bytes(),)))


def _synthetic_rows(keys: list[str]) -> list[Any]:
    return [{"source_key": k, "model_name": "m", "model_version": 1, "ts": "2026-12-01T12:00:00.000Z",
             "backend": "litert", "top_label": "l", "top_score": 0.5, "detections": None, "values": None,
             "latency_ms": 1.0, "error": None, "record": json.dumps({"source": k})} for k in keys]


def test_outputs_store_each_key_once_and_count_what_was_new(tmp_path: Path, postgres: Callable[[], str]) -> None:
    """The output contract under the driver: a write of keys partly there stores only the new
    ones (two jobs racing, a resumed job) and says how many; done_keys is what is there."""
    from cloud_sync.batch import open_output

    for target in (f"sqlite:///{tmp_path / 'a.db'}", postgres(), str(tmp_path / "parts") + "/",
                   str(tmp_path / "one.parquet")):
        out = open_output(target)
        assert out.write(_synthetic_rows(["a", "b", "c"])) == 3
        assert out.write(_synthetic_rows(["b", "c", "d", "e"])) == 2
        assert out.write(_synthetic_rows([f"k{i}" for i in range(1200)] + ["a"])) == 1200
        assert out.done_keys("m", 1) == {"a", "b", "c", "d", "e", *(f"k{i}" for i in range(1200))}
        assert out.done_keys("m", 2) == set()
        out.close()
        assert row_count(target) == 1205, target
