"""scikit-learn estimators and pipelines to ONNX through skl2onnx.

The pickle is loaded only from the file the user names (joblib or pickle). Classifiers are
exported with ``zipmap`` off, so probabilities come out as one float tensor the runtime reads
directly. Inputs are float32 by default, which is exact for tree ensembles (scikit-learn's trees
compare float32 features themselves); ``precision="auto"`` checks the export against the
estimator on the data at hand and switches to float64 inputs when float32 changes a prediction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edge_runtime import Preprocess

from .._deps import require
from .._errors import ShapeError, SourceLoadError, UnsupportedModelError
from .._ort import first_line, ort_errors, ort_session
from ._base import Source, dist_version

__all__ = ["SklearnSource"]

log = logging.getLogger(__name__)

_SUFFIXES = (".joblib", ".pkl", ".pickle", ".sav")
#: a conversion matches when labels agree and probabilities/values are this close
PROBA_TOLERANCE = 1e-5


class SklearnSource(Source):
    framework: ClassVar[str] = "scikit-learn"
    targets: ClassVar[tuple[str, ...]] = ("onnx",)
    described_as: ClassVar[str] = "a fitted estimator or pipeline saved with joblib/pickle (.joblib, .pkl)"

    estimator: Any = None
    n_features: int = 0
    precision_used: str = "float"

    @classmethod
    def claims(cls, location: str) -> bool:
        return location.lower().endswith(_SUFFIXES)

    def load(self) -> None:
        joblib = require("joblib", "loading a scikit-learn model")
        require("sklearn", "loading a scikit-learn model")
        from sklearn.base import is_classifier, is_regressor
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted

        path = Path(self.location)
        if not path.is_file():
            raise SourceLoadError(f"{path}: no such file; save the fitted model with joblib.dump(model, PATH)")
        if not self.options.trust_pickle:
            raise SourceLoadError(f"{path}: is a pickle, and loading a pickle runs whatever code it holds; if you "
                                  "made this file or trust it, pass --trust-pickle (trust_pickle=True)")
        try:
            # The user named this file as their own model; pickles are never read from elsewhere.
            est = joblib.load(path)
        except (OSError, EOFError, ValueError, KeyError, AttributeError, ModuleNotFoundError) as exc:
            raise SourceLoadError(f"{path}: cannot unpickle it ({type(exc).__name__}: {exc}); save the fitted "
                                  "model with joblib.dump under the same scikit-learn version") from exc
        if not hasattr(est, "fit") or not hasattr(est, "predict"):
            raise UnsupportedModelError(f"{path}: holds a {type(est).__name__}, not a scikit-learn estimator")
        try:
            check_is_fitted(est)
        except NotFittedError as exc:
            raise SourceLoadError(f"{path}: the {type(est).__name__} is not fitted; call fit() before saving") from exc
        except TypeError as exc:
            raise UnsupportedModelError(f"{path}: {type(est).__name__} is not a scikit-learn estimator") from exc
        n = getattr(est, "n_features_in_", None)
        if n is None:
            raise UnsupportedModelError(f"{path}: {type(est).__name__} does not say how many features it takes "
                                        "(no n_features_in_); fit it on a 2-D numeric array")
        self.estimator = est
        self.n_features = int(n)
        if is_classifier(est):
            self.task = "tabular"
            self.class_values = [str(c) for c in est.classes_]
            self.labels = list(self.class_values)
        elif is_regressor(est):
            self.task = "regression"
            self.labels = None
        else:
            raise UnsupportedModelError(f"{path}: {type(est).__name__} is neither a classifier nor a regressor; "
                                        "only those convert (wrap transformers in a Pipeline ending in one)")

    def default_preprocess(self, target: str) -> Preprocess | None:
        return Preprocess(kind="none")

    def layout(self, target: str) -> str | None:
        return "NC"

    def info(self) -> dict[str, Any]:
        est = self.estimator
        steps = [type(s).__name__ for _, s in getattr(est, "steps", [])] or [type(est).__name__]
        return {"framework": self.framework, "version": dist_version("scikit-learn"),
                "converter": f"skl2onnx {dist_version('skl2onnx')}", "estimator": " > ".join(steps),
                "precision": self.precision_used, "location": Path(self.location).name}

    # -- export ------------------------------------------------------------------------------
    def export(self, target: str, out: Path, *, data: Sequence[np.ndarray] = ()) -> Path:
        self.check_target(target)
        precision = self.options.precision
        first = "double" if precision == "double" else "float"
        onx = self._convert(first)
        out.write_bytes(onx)
        self.precision_used = first
        for d in data:
            if np.asarray(d).size != self.n_features:
                raise ShapeError(f"an input of shape {list(np.shape(d))} does not fit the model input of "
                                 f"{self.n_features} features; give rows shaped (N, {self.n_features})")
        if precision == "auto" and data:
            rows = np.concatenate([np.asarray(d, dtype=np.float64).reshape(1, -1) for d in data])
            problem = self._mismatch(out, rows, np.float32)
            if problem:
                log.info("float32 export differs from scikit-learn (%s); trying float64 inputs", problem)
                try:
                    onx64 = self._convert("double")
                except UnsupportedModelError as exc:
                    log.warning("float64 export is not possible (%s); keeping float32, which %s", exc, problem)
                    return out
                out.write_bytes(onx64)
                problem64 = self._mismatch(out, rows, np.float64)
                if problem64:
                    log.warning("float64 export also differs from scikit-learn: %s", problem64)
                self.precision_used = "double"
        return out

    def _convert(self, precision: str) -> bytes:
        require("skl2onnx", "converting scikit-learn models")
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
        from skl2onnx.common.exceptions import MissingConverter, MissingShapeCalculator
        from sklearn.base import is_classifier

        tensor_type = DoubleTensorType if precision == "double" else FloatTensorType
        est = self.estimator
        # zipmap turns probabilities into a list of dicts: no tensor for the runtime to read.
        options = {id(_final_step(est)): {"zipmap": False}} if is_classifier(est) else None
        try:
            onx = convert_sklearn(
                est, initial_types=[("input", tensor_type([None, self.n_features]))], options=options,
                target_opset={"": min(self.options.opset, 18), "ai.onnx.ml": 3})
        except (MissingConverter, MissingShapeCalculator) as exc:
            name = _unsupported_name(str(exc)) or type(est).__name__
            raise UnsupportedModelError(
                f"skl2onnx has no converter for {name}; replace that step with a supported one "
                "(skl2onnx.supported_converters() lists them) or register a custom converter") from exc
        except (RuntimeError, ValueError, TypeError, NotImplementedError, KeyError) as exc:
            raise UnsupportedModelError(
                f"skl2onnx cannot convert {_describe(est)} ({type(exc).__name__}: {first_line(exc)}); "
                "this estimator or one of its settings is not supported by skl2onnx "
                f"{dist_version('skl2onnx')} with scikit-learn {dist_version('scikit-learn')}") from exc
        blob: bytes = onx.SerializeToString()
        self._check_runs(blob, precision)
        return blob

    def _check_runs(self, blob: bytes, precision: str) -> None:
        dtype = np.float64 if precision == "double" else np.float32
        try:
            sess = ort_session(blob)
            sess.run(None, {"input": np.zeros((1, self.n_features), dtype=dtype)})
        except ort_errors() as exc:
            kind = "float64" if precision == "double" else "float32"
            raise UnsupportedModelError(f"skl2onnx converted {_describe(self.estimator)} with {kind} inputs, "
                                        f"but onnxruntime cannot run it: {first_line(exc)}") from exc

    def _mismatch(self, path: Path, rows: np.ndarray, dtype: type) -> str | None:
        sess = ort_session(path)
        outs = sess.run(None, {"input": rows.astype(dtype)})
        est = self.estimator
        if self.task == "regression":
            diff = float(np.max(np.abs(outs[0].reshape(len(rows), -1).ravel() - np.ravel(est.predict(rows)))))
            scale = max(1.0, float(np.max(np.abs(est.predict(rows)))))
            return f"values differ by up to {diff:.2g}" if diff > PROBA_TOLERANCE * scale else None
        labels = outs[0].ravel()
        want = est.predict(rows)
        if not np.array_equal(labels.astype(str), np.asarray(want).astype(str)):
            return f"{int(np.sum(labels.astype(str) != np.asarray(want).astype(str)))} label(s) differ"
        if hasattr(est, "predict_proba") and len(outs) > 1:
            diff = float(np.max(np.abs(outs[1] - est.predict_proba(rows))))
            if diff > PROBA_TOLERANCE:
                return f"probabilities differ by up to {diff:.2g}"
        return None


def _final_step(est: Any) -> Any:
    steps = getattr(est, "steps", None)
    return _final_step(steps[-1][1]) if steps else est


def _describe(est: Any) -> str:
    steps = getattr(est, "steps", None)
    return "Pipeline(" + ", ".join(type(s).__name__ for _, s in steps) + ")" if steps else type(est).__name__


def _unsupported_name(msg: str) -> str | None:
    # skl2onnx: "Unable to find a shape calculator for type '<class 'x.y.Name'>'."
    if "<class '" in msg:
        return msg.split("<class '", 1)[1].split("'", 1)[0].rsplit(".", 1)[-1]
    return None


