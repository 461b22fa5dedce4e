"""`edge convert` end to end, existing TFLite models, and the data/labels rules."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import joblib
import numpy as np
import pytest
from click.testing import Result

from converters import CalibrationError, EvalDataError, convert, parse_preprocess, parse_quantize
from converters._data import fit_labels, load_calibration, load_eval


@pytest.fixture(scope="module")
def wine_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sklearn.datasets import load_wine
    from sklearn.ensemble import RandomForestClassifier

    d = tmp_path_factory.mktemp("wine")
    x, y = load_wine(return_X_y=True)
    joblib.dump(RandomForestClassifier(n_estimators=10, random_state=0).fit(x[::2], y[::2]), d / "wine.joblib")
    np.savez(d / "heldout.npz", x=x[1::2], y=y[1::2])
    return d


def test_edge_convert_json(wine_model: Path, edge_cli: Callable[..., Result], tmp_path: Path) -> None:
    res = edge_cli("convert", wine_model / "wine.joblib", "--trust-pickle",
                   "--to", "onnx", "--eval", wine_model / "heldout.npz",
                   "--quantize", "all", "--runs", "3", "-o", tmp_path, "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["recommended"] == "float"
    assert [v["variant"] for v in report["variants"]] == ["float", "fp16", "dynamic", "int8"]
    assert report["variants"][0]["accuracy"] > 80
    assert (tmp_path / "wine-onnx-float" / "manifest.json").is_file()
    assert json.loads((tmp_path / "report.json").read_text())["recommended"] == "float"


def test_edge_convert_markdown(wine_model: Path, edge_cli: Callable[..., Result], tmp_path: Path) -> None:
    res = edge_cli("convert", wine_model / "wine.joblib", "--trust-pickle",
                   "--to", "onnx", "--runs", "2", "-o", tmp_path,
                   "--name", "vino")
    assert res.exit_code == 0, res.output
    assert "| float |" in res.stdout and "**recommended**" in res.stdout
    assert (tmp_path / "vino-onnx-float").is_dir()


@pytest.mark.parametrize(("args", "message"), [
    (["--quantize", "int4"], "unknown quantization 'int4'"),
    (["--input-shape", "1,three"], "must be integers"),
    (["--preprocess", "mean"], "is not key=value"),
])
def test_edge_convert_bad_options(args: list[str], message: str, wine_model: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    from edge_cli import main

    with pytest.raises(SystemExit) as exc:
        main(["convert", str(wine_model / "wine.joblib"), "--trust-pickle", "--to", "onnx", "-o", str(tmp_path), *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "report.json").exists()


def test_edge_convert_user_error_is_one_line(wine_model: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from edge_cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(SystemExit) as exc:
        main(["convert", "tests.support.torch_models:tiny_cnn", "--to", "onnx", "--quantize", "int8",
              "--calibration", str(empty), "-o", str(tmp_path / "out")])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no usable calibration images in") and "\n" not in err
    assert "Traceback" not in err


def test_int8_without_calibration_says_how(wine_model: Path, tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="pass --calibration DIR_OR_NPY"):
        convert(wine_model / "wine.joblib", tmp_path, trust_pickle=True, to="onnx", quantize=["int8"])


def test_existing_tflite_is_wrapped_and_not_requantized(mobilenet_tflite: Path, shared_data: Path, tmp_path: Path,
                                                        edge_cli: Callable[..., Result]) -> None:
    report = convert(mobilenet_tflite, tmp_path, to="tflite", quantize=["int8"],
                     calibration=[shared_data / "images" / "leaves"], eval=shared_data / "images",
                     labels=shared_data / "labels" / "imagenet_labels.txt", preprocess={"kind": "image"},
                     latency_runs=3)
    q = report.variant("int8")
    assert q.status == "skipped" and "already quantized" in (q.reason or "")
    bundle = report.variant("float").bundle
    res = edge_cli("run", bundle, "--source", shared_data / "images" / "cat.png", "--no-summary")
    assert json.loads(res.stdout.splitlines()[0])["top_k"][0]["label"] == "Egyptian cat"


# -- data rules ----------------------------------------------------------------------------------
def test_background_label_is_dropped_only_when_it_fits(shared_data: Path) -> None:
    lines = (shared_data / "labels" / "imagenet_labels.txt").read_text().splitlines()
    assert fit_labels(lines, 1000, "x")[0] == lines[1]
    assert fit_labels(lines, 1001, "x") == lines
    with pytest.raises(EvalDataError, match="has 1001 labels but the model outputs 10 classes"):
        fit_labels(lines, 10, "x")


def test_calibration_skips_corrupt_files_and_keeps_order(tmp_path: Path, shared_data: Path) -> None:
    leaves = sorted((shared_data / "images" / "leaves").iterdir())
    for p in leaves[:3]:
        (tmp_path / p.name).write_bytes(p.read_bytes())
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    got = load_calibration([tmp_path], limit=10)
    assert [s.path.name for s in got.samples if s.path] == sorted(p.name for p in leaves[:3])
    assert len(got.skipped) == 1 and "broken.jpg" in got.skipped[0]
    assert len(load_calibration([tmp_path], limit=2)) == 2


def test_eval_dir_with_class_subfolders_is_labelled(tmp_path: Path, shared_data: Path) -> None:
    for label, name in (("Egyptian cat", "cat.png"), ("daisy", "sunflower.png")):
        (tmp_path / label).mkdir()
        (tmp_path / label / name).write_bytes((shared_data / "images" / name).read_bytes())
    data = load_eval(tmp_path)
    assert data.labelled and sorted(str(s.label) for s in data.samples) == ["Egyptian cat", "daisy"]
    top = load_eval(shared_data / "images")  # images at the top level: unlabelled, subfolders ignored
    assert not top.labelled and len(top) == 4


def test_eval_folder_names_must_be_model_labels(tmp_path: Path, shared_data: Path) -> None:
    (tmp_path / "eval" / "kitty").mkdir(parents=True)
    (tmp_path / "eval" / "kitty" / "cat.png").write_bytes((shared_data / "images" / "cat.png").read_bytes())
    with pytest.raises(EvalDataError, match=r"eval labels \['kitty'\] are not classes of the model"):
        convert(shared_data / "models" / "mobilenet_v2_1.0_224_quant.tflite", tmp_path / "out", to="tflite",
                eval=tmp_path / "eval", labels=shared_data / "labels" / "imagenet_labels.txt", latency_runs=2)


def test_option_parsers() -> None:
    assert parse_quantize("all") == ["none", "fp16", "dynamic", "int8"]
    assert parse_quantize("fp16,int8") == ["fp16", "int8"]
    pre = parse_preprocess("size=224x224,mean=127,std=128,resize=center-crop,color=bgr")
    assert pre.size == (224, 224) and pre.mean == [127.0] and pre.resize_mode == "center-crop"
    assert parse_preprocess("mean=123.7/116.3/103.5").mean == [123.7, 116.3, 103.5]
    assert parse_preprocess("none").kind == "none"


def test_profile_sets_backend_threads_and_manifest(wine_model: Path, tmp_path: Path) -> None:
    import os

    import device_profiles
    from edge_runtime import open_bundle

    prof = device_profiles.load_profile("rpi-5")
    report = convert(wine_model / "wine.joblib", tmp_path, trust_pickle=True,
                     to="onnx", profile="rpi-5", latency_runs=2)
    assert report.profile == "rpi-5"
    assert report.backend == next(b for b in prof.backends if b == "onnxruntime")
    assert report.threads == min(prof.threads, os.cpu_count() or 1)
    assert open_bundle(report.variant("float").bundle).manifest.profiles == ["rpi-5"]


def test_unknown_profile_is_named(wine_model: Path, tmp_path: Path) -> None:
    from converters import ConversionError

    with pytest.raises(ConversionError, match="no-such-board"):
        convert(wine_model / "wine.joblib", tmp_path, trust_pickle=True, to="onnx", profile="no-such-board")
