"""scikit-learn models trained here on the data sets that ship with scikit-learn, converted to ONNX."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from click.testing import Result

from converters import ConversionError, EvalDataError, SourceLoadError, UnsupportedModelError, convert
from edge_runtime import Model, open_bundle


def _split(loader: Callable[..., Any], seed: int = 0) -> tuple[np.ndarray, ...]:
    from sklearn.model_selection import train_test_split

    x, y = loader(return_X_y=True)
    return tuple(train_test_split(x, y, test_size=0.3, random_state=seed))


def _classifiers() -> list[tuple[str, Callable[[], Any], Callable[[], Any]]]:
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import load_breast_cancer, load_digits, load_wine
    from sklearn.ensemble import ExtraTreesClassifier, GradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    def wine_with_category(return_X_y: bool = True) -> tuple[np.ndarray, np.ndarray]:
        # A categorical column (alcohol band 0/1/2) next to the 13 numeric ones, for the encoder.
        x, y = load_wine(return_X_y=True)
        band = np.digitize(x[:, 0], [12.5, 13.5]).astype(float)
        return np.c_[x, band], y

    return [
        ("digits-logreg", load_digits,
         lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))),
        ("digits-forest", load_digits, lambda: RandomForestClassifier(n_estimators=40, random_state=0)),
        ("cancer-boosting", load_breast_cancer, lambda: GradientBoostingClassifier(n_estimators=40, random_state=0)),
        ("wine-encoder-pipeline", wine_with_category, lambda: make_pipeline(
            ColumnTransformer([("num", StandardScaler(), list(range(13))),
                               ("cat", OneHotEncoder(handle_unknown="ignore"), [13])]),
            LogisticRegression(max_iter=2000))),
        ("wine-extratrees", load_wine, lambda: ExtraTreesClassifier(n_estimators=30, random_state=0)),
    ]


@pytest.mark.parametrize("case", _classifiers(), ids=lambda c: c[0])
def test_classifier_matches_sklearn_on_heldout(case: tuple[str, Any, Any], tmp_path: Path) -> None:
    _name, loader, make = case
    xtr, xte, ytr, yte = _split(loader)
    est = make().fit(xtr, ytr)
    joblib.dump(est, tmp_path / "model.joblib")
    np.savez(tmp_path / "heldout.npz", x=xte, y=yte)
    report = convert(tmp_path / "model.joblib", tmp_path / "out", trust_pickle=True,
                     to="onnx", eval=tmp_path / "heldout.npz",
                     latency_runs=5)
    f = report.variant("float")
    assert f.accuracy == pytest.approx(100 * float(np.mean(est.predict(xte) == yte)), abs=1e-3)
    with Model.load(f.bundle) as m:
        assert m.manifest.task == "tabular" and m.labels == [str(c) for c in est.classes_]
        probs = np.stack([m.predict(row).scores for row in xte])
    labels = est.classes_[probs.argmax(axis=1)]
    np.testing.assert_array_equal(labels, est.predict(xte))
    np.testing.assert_allclose(probs, est.predict_proba(xte), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["ridge", "forest", "boosting"])
def test_regressor_matches_sklearn_on_heldout(kind: str, tmp_path: Path) -> None:
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
    from sklearn.linear_model import Ridge

    xtr, xte, ytr, yte = _split(load_diabetes)
    est = {"ridge": Ridge(), "forest": RandomForestRegressor(n_estimators=30, random_state=0),
           "boosting": GradientBoostingRegressor(random_state=0)}[kind].fit(xtr, ytr)
    joblib.dump(est, tmp_path / "reg.joblib")
    np.savez(tmp_path / "heldout.npz", x=xte, y=yte)
    report = convert(tmp_path / "reg.joblib", tmp_path / "out", trust_pickle=True,
                     to="onnx", eval=tmp_path / "heldout.npz",
                     latency_runs=5)
    with Model.load(report.variant("float").bundle) as m:
        assert m.manifest.task == "regression"
        values = np.array([m.predict(row).values[0] for row in xte])
    np.testing.assert_allclose(values, est.predict(xte), rtol=1e-5, atol=1e-3)


def test_double_precision_gives_float64_inputs_and_exact_probabilities(tmp_path: Path) -> None:
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xtr, xte, ytr, _ = _split(load_breast_cancer)
    est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(xtr, ytr)
    joblib.dump(est, tmp_path / "m.joblib")
    report = convert(tmp_path / "m.joblib", tmp_path / "out", trust_pickle=True,
                     to="onnx", precision="double", latency_runs=3)
    assert report.source["precision"] == "double"
    with Model.load(report.variant("float").bundle) as m:
        assert m.manifest.inputs[0].dtype == "float64"
        probs = np.stack([m.predict(row).scores for row in xte])
    # float32 scores come out of Prediction; the float64 model itself is exact to float32 rounding
    np.testing.assert_allclose(probs, est.predict_proba(xte), atol=1e-7)


def test_quantization_is_skipped_with_a_reason_for_trees(tmp_path: Path) -> None:
    from sklearn.datasets import load_wine
    from sklearn.ensemble import RandomForestClassifier

    xtr, _xte, ytr, _yte = _split(load_wine)
    joblib.dump(RandomForestClassifier(n_estimators=10, random_state=0).fit(xtr, ytr), tmp_path / "rf.joblib")
    np.save(tmp_path / "calib.npy", xtr)
    report = convert(tmp_path / "rf.joblib", tmp_path / "out", trust_pickle=True,
                     to="onnx", quantize=["fp16", "dynamic", "int8"],
                     calibration=[tmp_path / "calib.npy"], latency_runs=3)
    skipped = {v.variant: v.reason for v in report.variants if v.status == "skipped"}
    assert set(skipped) == {"fp16", "dynamic", "int8"}
    assert "Conv, MatMul or Gemm" in (skipped["int8"] or "")
    assert report.recommended == "float"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.json", "report.md", "rf-onnx-float"]


def test_bundle_runs_through_edge_run_on_rows(tmp_path: Path, edge_cli: Callable[..., Result]) -> None:
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    xtr, xte, ytr, _ = _split(load_digits)
    est = LogisticRegression(max_iter=3000).fit(xtr, ytr)
    joblib.dump(est, tmp_path / "lr.joblib")
    convert(tmp_path / "lr.joblib", tmp_path / "out", trust_pickle=True, to="onnx", latency_runs=3)
    np.save(tmp_path / "rows.npy", xte[:20])
    res = edge_cli("run", tmp_path / "out" / "lr-onnx-float", "--source", tmp_path / "rows.npy", "--no-summary")
    assert res.exit_code == 0, res.output
    got = [json.loads(line)["top_k"][0]["label"] for line in res.stdout.splitlines() if line.startswith("{")]
    assert got == [str(c) for c in est.predict(xte[:20])]
    bench = edge_cli("bench", tmp_path / "out" / "lr-onnx-float", "--runs", "5", "--warmup", "1", "--json")
    assert bench.exit_code == 0, bench.output


# -- bad input ---------------------------------------------------------------------------------
def test_unsupported_estimator_is_named(tmp_path: Path) -> None:
    from sklearn.datasets import load_wine
    from sklearn.neighbors import NearestCentroid
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_wine(return_X_y=True)
    joblib.dump(make_pipeline(StandardScaler(), NearestCentroid()).fit(x, y), tmp_path / "nc.joblib")
    with pytest.raises(UnsupportedModelError, match="no converter for NearestCentroid"):
        convert(tmp_path / "nc.joblib", tmp_path / "out", trust_pickle=True, to="onnx")


def test_clusterer_is_refused(tmp_path: Path) -> None:
    from sklearn.cluster import KMeans
    from sklearn.datasets import load_wine

    x, _ = load_wine(return_X_y=True)
    joblib.dump(KMeans(3, n_init=2, random_state=0).fit(x), tmp_path / "km.joblib")
    with pytest.raises(UnsupportedModelError, match="neither a classifier nor a regressor"):
        convert(tmp_path / "km.joblib", tmp_path / "out", trust_pickle=True, to="onnx")


def test_unfitted_estimator_is_refused(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    joblib.dump(LogisticRegression(), tmp_path / "raw.joblib")
    with pytest.raises(SourceLoadError, match="not fitted"):
        convert(tmp_path / "raw.joblib", tmp_path / "out", trust_pickle=True, to="onnx")


def test_tflite_target_is_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModelError, match="use --to onnx"):
        convert(tmp_path / "whatever.joblib", tmp_path / "out", trust_pickle=True, to="tflite")


def test_eval_labels_that_are_not_model_classes(tmp_path: Path) -> None:
    from sklearn.datasets import load_wine
    from sklearn.linear_model import LogisticRegression

    xtr, xte, ytr, yte = _split(load_wine)
    joblib.dump(LogisticRegression(max_iter=3000).fit(xtr, ytr), tmp_path / "m.joblib")
    np.savez(tmp_path / "bad.npz", x=xte, y=yte + 7)
    with pytest.raises(EvalDataError, match=r"not classes of the model \(3 classes: 0, 1, 2\)"):
        convert(tmp_path / "m.joblib", tmp_path / "out", trust_pickle=True, to="onnx", eval=tmp_path / "bad.npz")


def test_eval_rows_of_the_wrong_width(tmp_path: Path) -> None:
    from sklearn.datasets import load_wine
    from sklearn.linear_model import LogisticRegression

    xtr, xte, ytr, yte = _split(load_wine)
    joblib.dump(LogisticRegression(max_iter=3000).fit(xtr, ytr), tmp_path / "m.joblib")
    np.savez(tmp_path / "narrow.npz", x=xte[:, :5], y=yte)
    with pytest.raises(ConversionError, match=r"does not fit the model input"):
        convert(tmp_path / "m.joblib", tmp_path / "out", trust_pickle=True, to="onnx", eval=tmp_path / "narrow.npz")


def test_missing_and_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(SourceLoadError, match="no such file"):
        convert(tmp_path / "absent.joblib", tmp_path / "out", trust_pickle=True, to="onnx")
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle at all")
    with pytest.raises(SourceLoadError, match="cannot unpickle"):
        convert(tmp_path / "junk.pkl", tmp_path / "out", trust_pickle=True, to="onnx")


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    from sklearn.datasets import load_wine
    from sklearn.linear_model import LogisticRegression

    x, y = load_wine(return_X_y=True)
    joblib.dump(LogisticRegression(max_iter=3000).fit(x, y), tmp_path / "m.joblib")
    convert(tmp_path / "m.joblib", tmp_path / "out", trust_pickle=True, to="onnx", latency_runs=2)
    with pytest.raises(ConversionError, match="--overwrite"):
        convert(tmp_path / "m.joblib", tmp_path / "out", trust_pickle=True, to="onnx", latency_runs=2)
    again = convert(tmp_path / "m.joblib", tmp_path / "out", trust_pickle=True,
                    to="onnx", latency_runs=2, overwrite=True, version=2)
    assert open_bundle(again.variant("float").bundle).manifest.version == 2
