"""`edge batch --engine ray`: Ray Data actors (one model each) give the same rows as the local
engine, into SQLite, PostgreSQL and Parquet, from a directory and an S3 prefix. One small Ray
session for the whole module (2 CPUs, 200 MB object store)."""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from cloud_sync.batch import EngineOptions, run_batch
from tests.support.batch import S3_TEST_CREDENTIALS, expected_label, make_images, read_rows
from tests.support.data import IMAGES_DIR


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    import ray

    # The actors are started by this session's raylet and inherit its environment: S3 credentials
    # for moto must be there before ray.init.
    saved = {k: os.environ.get(k) for k in S3_TEST_CREDENTIALS}
    os.environ.update(S3_TEST_CREDENTIALS)
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024 * 1024,
             log_to_driver=False, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ray-images") / "images"
    make_images(d, 20)
    (d / "broken.png").write_bytes((IMAGES_DIR / "cat.png").read_bytes()[:300])
    return d


@pytest.fixture(scope="module")
def local_rows(mobilenet_bundle: Path, images: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = f"sqlite:///{tmp_path_factory.mktemp('local') / 'local.db'}"
    run_batch(mobilenet_bundle, str(images), out, engine="local")
    return _comparable(read_rows(out))


def _comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What must agree between engines: everything but the time and the latency."""
    out = []
    for r in rows:
        rec = {k: v for k, v in r["record"].items() if k not in ("ts", "latency_ms", "frame")}
        out.append({"source_key": r["source_key"], "model": (r["model_name"], r["model_version"]),
                    "top_label": r["top_label"], "top_score": r["top_score"], "error": r["error"], "record": rec})
    return out


def _ray(workers: int = 2) -> EngineOptions:
    return EngineOptions(workers=workers, batch_size=4)


def test_ray_into_sqlite_equals_local(ray_session: None, mobilenet_bundle: Path, images: Path,
                                      local_rows: list[dict[str, Any]], tmp_path: Path) -> None:
    out = f"sqlite:///{tmp_path / 'ray.db'}"
    summary = run_batch(mobilenet_bundle, str(images), out, engine="ray", options=_ray(), threads=1)
    assert (summary.inputs, summary.processed, summary.written, summary.errors) == (21, 21, 21, 1)
    rows = read_rows(out)
    assert _comparable(rows) == local_rows
    good = [r for r in rows if r["error"] is None]
    assert len(good) == 20 and all(r["top_label"] == expected_label(r["source_key"]) for r in good)
    (bad,) = [r for r in rows if r["error"] is not None]
    assert bad["source_key"] == str(images / "broken.png") and "corrupt or truncated" in bad["error"]

    again = run_batch(mobilenet_bundle, str(images), out, engine="ray", options=_ray(), threads=1)
    assert (again.already_done, again.processed, again.written) == (21, 0, 0)
    assert len(read_rows(out)) == 21


def test_ray_into_postgresql_and_parquet(ray_session: None, mobilenet_bundle: Path, images: Path,
                                         local_rows: list[dict[str, Any]], postgres: Callable[[], str],
                                         tmp_path: Path) -> None:
    for out in (postgres(), str(tmp_path / "parts") + "/"):
        summary = run_batch(mobilenet_bundle, str(images), out, engine="ray", options=_ray(1), threads=1)
        assert (summary.written, summary.errors) == (21, 1), out
        assert _comparable(read_rows(out)) == local_rows, out


def test_blocks_are_at_most_a_batch_and_at_least_one_per_worker() -> None:
    from cloud_sync.batch._ray import plan_blocks

    assert plan_blocks(2000, 16, 2) == 125
    assert plan_blocks(21, 4, 2) == 6
    # fewer inputs than a batch: still one block per worker, so that no actor is left idle
    assert plan_blocks(3, 4, 2) == 2
    assert plan_blocks(1, 4, 2) == 1
    assert plan_blocks(0, 16, 2) == 1


def test_ray_resumes_a_partial_output(ray_session: None, mobilenet_bundle: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    make_images(src, 12)
    out = str(tmp_path / "preds.parquet")
    with warnings.catch_warnings():
        # 3 inputs, 2 workers, batches of 4: two blocks, not one that leaves an actor idle
        warnings.filterwarnings("error", message=".*only received.*input")
        first = run_batch(mobilenet_bundle, str(src / "cat-*.png"), out, engine="ray", options=_ray(), threads=1)
    assert first.written == 3
    summary = run_batch(mobilenet_bundle, str(src), out, engine="ray", options=_ray(), threads=1)
    assert (summary.inputs, summary.already_done, summary.written) == (12, 3, 9)
    rows = read_rows(out)
    assert len(rows) == 12 and len({r["source_key"] for r in rows}) == 12


def test_ray_reads_s3_on_the_actors(ray_session: None, mobilenet_bundle: Path, s3_endpoint: str,
                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in S3_TEST_CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="ray-in")
    local = make_images(tmp_path / "in", 5)
    for p in local:
        s3.upload_file(str(p), "ray-in", f"set/{p.name}")
    out = f"sqlite:///{tmp_path / 'preds.db'}"
    summary = run_batch(mobilenet_bundle, "s3://ray-in/set/", out, engine="ray", options=_ray(),
                        threads=1, s3_endpoint_url=s3_endpoint)
    assert (summary.inputs, summary.written, summary.errors) == (5, 5, 0)
    rows = read_rows(out)
    assert [r["source_key"] for r in rows] == sorted(f"s3://ray-in/set/{p.name}" for p in local)
    assert all(r["top_label"] == expected_label(r["source_key"]) for r in rows)


def test_ray_ships_the_bundle_as_an_archive(mobilenet_bundle: Path, keys: Any,
                                            tmp_path: Path) -> None:
    """With --address the actors may not see the driver's files: the signed bundle travels as
    bytes and each actor verifies it again."""
    from cloud_sync.batch import PredictorSpec
    from edge_runtime import load_private_key, sign_bundle

    signed = tmp_path / "signed"
    shutil.copytree(mobilenet_bundle, signed)
    sign_bundle(signed, load_private_key(keys.private))
    spec = PredictorSpec(bundle=str(signed), pubkeys_pem=(keys.public.read_bytes(),)).packed()
    assert spec.bundle_archive is not None and spec.bundle_archive[:2] == b"\x1f\x8b"
    from cloud_sync.batch import BatchPredictor, InputItem

    shutil.rmtree(signed)  # the archive alone is enough
    p = BatchPredictor(spec)
    try:
        row = p.predict_item(InputItem(str(IMAGES_DIR / "cat.png"), 0))
    finally:
        p.close()
    assert row["top_label"] == "Egyptian cat" and row["error"] is None
