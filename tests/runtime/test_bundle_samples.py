"""Samples and expiry written by make_bundle: copied in, hashed, listed in manifest.samples, decoded
and run through the model before the bundle is written; expiry durations and dates."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from edge_runtime import (
    DecodeError,
    InputError,
    ManifestError,
    check_samples,
    load_sample,
    make_bundle,
    open_bundle,
    parse_expires,
    sha256_file,
)

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def test_sample_files_are_copied_hashed_listed_and_run(tmp_path: Path, mobilenet_tflite: Path,
                                                       imagenet_labels: list[str], shared_data: Path) -> None:
    cat = shared_data / "images" / "cat.png"
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(shared_data / "images" / "grace_hopper.png", other / "cat.png")  # same name, other picture
    out = make_bundle(mobilenet_tflite, tmp_path / "b.tar.gz", name="mobilenet_v2", labels=imagenet_labels,
                      preprocess={"size": (224, 224)}, sample_files=[cat, other / "cat.png"],
                      expires="2027-06-01T00:00:00Z")
    b = open_bundle(out)  # every hash checked, samples included
    m = b.manifest
    assert m.samples == ["samples/cat.png", "samples/1-cat.png"]
    assert m.expires == "2027-06-01T00:00:00Z"
    assert m.files["samples/cat.png"].sha256 == sha256_file(cat)
    assert m.files["samples/1-cat.png"].size == (other / "cat.png").stat().st_size
    answers = {r.name: r.label for r in check_samples(b)}
    assert answers["samples/cat.png"] == "Egyptian cat"
    assert answers["samples/1-cat.png"] != "Egyptian cat"
    b.close()


@pytest.mark.parametrize("archive", [False, True], ids=["dir", "tar.gz"])
def test_a_sample_that_does_not_decode_or_run_writes_nothing(tmp_path: Path, mobilenet_tflite: Path,
                                                             imagenet_labels: list[str], archive: bool) -> None:
    out = tmp_path / ("b.tar.gz" if archive else "b")
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DecodeError, match=r"junk\.jpg: image is corrupt|junk\.jpg: not an image"):
        make_bundle(mobilenet_tflite, out, labels=imagenet_labels, sample_files=[junk])
    assert not out.exists()
    row = tmp_path / "row.npy"
    np.save(row, np.zeros(7, np.float32))
    with pytest.raises(InputError, match=r"sample samples/row\.npy: the model cannot run it"):
        make_bundle(mobilenet_tflite, out, labels=imagenet_labels, sample_files=[row])
    assert not out.exists()
    # the check can be left out (a test that needs a bundle failing its device health check does)
    made = make_bundle(mobilenet_tflite, out, labels=imagenet_labels, sample_files=[row], check_samples=False)
    b = open_bundle(made)
    assert b.manifest.samples == ["samples/row.npy"]
    with pytest.raises(InputError, match="samples/row.npy"):
        check_samples(b)
    b.close()


def test_samples_are_never_unpickled(tmp_path: Path) -> None:
    p = tmp_path / "evil.npy"
    np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DecodeError, match=r"evil\.npy: not a readable \.npy array"):
        load_sample(p)
    text = tmp_path / "row.csv"
    text.write_text("1,2,3")
    with pytest.raises(DecodeError, match=r"unknown sample type '\.csv'"):
        load_sample(text)
    np.save(tmp_path / "ok.npy", np.arange(4, dtype=np.float64))
    assert load_sample(tmp_path / "ok.npy").tolist() == [0.0, 1.0, 2.0, 3.0]


@pytest.mark.parametrize(("value", "expected"), [
    ("90d", "2027-03-01T12:00:00Z"),
    ("12h", "2026-12-02T00:00:00Z"),
    ("4w", "2026-12-29T12:00:00Z"),
    (" 2D ", "2026-12-03T12:00:00Z"),
    ("2027-06-01", "2027-06-01T00:00:00Z"),
    ("2027-06-01T00:00:00Z", "2027-06-01T00:00:00Z"),
    ("2027-06-01T02:00:00+02:00", "2027-06-01T00:00:00Z"),
    ("2026-12-01T12:00:01", "2026-12-01T12:00:01Z"),
])
def test_expiry_durations_and_dates(value: str, expected: str) -> None:
    assert parse_expires(value, now=NOW) == expected


@pytest.mark.parametrize(("value", "message"), [
    ("2026-12-01T12:00:00Z", "is in the past"),
    ("2001-01-01", "is in the past"),
    ("0d", "must be positive"),
    ("-3d", "write a duration such as 90d"),
    ("90 days", "write a duration such as 90d"),
    ("3m", "write a duration such as 90d"),
    ("", "write a duration such as 90d"),
    ("99999999999d", "too long"),
])
def test_bad_expiries_name_the_problem(value: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_expires(value, now=NOW)
