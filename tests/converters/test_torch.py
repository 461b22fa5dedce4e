"""PyTorch sources: module:factory + weights, TorchScript, torch.export, to ONNX and TFLite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from converters import ConversionError, ShapeError, SourceLoadError, UnsupportedModelError, convert
from edge_runtime import Model
from tests.support.torch_models import TinyCNN, tiny_cnn

FACTORY = "tests.support.torch_models:tiny_cnn"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TinyCNN, np.ndarray]:
    """Weights that differ from the factory's seed-0 ones, so loading them visibly matters."""
    d = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(123)
    model = TinyCNN()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    model.eval()
    torch.save(model.state_dict(), d / "tiny.pt")
    x = np.random.default_rng(0).normal(size=(24, 3, 32, 32)).astype(np.float32)
    np.save(d / "calib.npy", x[:16])
    np.savez(d / "eval.npz", x=x[16:])
    return d, model, x


def _logits(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _bundle_logits(bundle: str, x: np.ndarray, nhwc: bool = False) -> np.ndarray:
    with Model.load(bundle) as m:
        rows = [m.infer([np.ascontiguousarray(r[None].transpose(0, 2, 3, 1) if nhwc else r[None])])[0][0]
                for r in x]
    return np.stack(rows)


def test_factory_with_weights_to_onnx_matches_torch(trained: tuple[Path, TinyCNN, np.ndarray]) -> None:
    d, model, x = trained
    report = convert(FACTORY, d / "onnx", to="onnx", weights=d / "tiny.pt", eval=d / "eval.npz", latency_runs=3,
                     quantize=["dynamic", "int8"], calibration=[d / "calib.npy"])
    np.testing.assert_allclose(_bundle_logits(report.variant("float").bundle, x[:8]), _logits(model, x[:8]),
                               atol=1e-4)
    # The factory's own seed-0 weights give other logits: the weights file was really used.
    assert not np.allclose(_logits(tiny_cnn().eval(), x[:8]), _logits(model, x[:8]), atol=1e-3)
    dyn = report.variant("dynamic")
    assert dyn.status == "skipped" and "ConvInteger" in (dyn.reason or "")
    q = report.variant("int8")
    assert q.status == "ok" and q.agreement is not None and q.settings["per_channel"] is True
    assert report.source["weights"] == "tiny.pt"


def test_factory_to_tflite_is_nhwc_and_matches_torch(trained: tuple[Path, TinyCNN, np.ndarray]) -> None:
    d, model, x = trained
    report = convert(FACTORY, d / "tflite", to="tflite", weights=d / "tiny.pt", latency_runs=3,
                     quantize=["int8"], calibration=[d / "calib.npy"], eval=d / "eval.npz")
    with Model.load(report.variant("float").bundle) as m:
        assert m.manifest.inputs[0].shape == [1, 32, 32, 3] and m.manifest.inputs[0].layout == "NHWC"
    np.testing.assert_allclose(_bundle_logits(report.variant("float").bundle, x[:8], nhwc=True),
                               _logits(model, x[:8]), atol=1e-4)
    q = report.variant("int8")
    assert q.status == "ok" and q.agreement is not None
    with Model.load(q.bundle) as m:
        assert m.manifest.inputs[0].dtype == "int8"


def test_torchscript_to_onnx(trained: tuple[Path, TinyCNN, np.ndarray]) -> None:
    d, model, x = trained
    torch.jit.save(torch.jit.script(model), d / "tiny.ts")
    report = convert(d / "tiny.ts", d / "ts", to="onnx", input_shape=[1, 3, 32, 32], latency_runs=3)
    assert report.source["framework"] == "pytorch"
    np.testing.assert_allclose(_bundle_logits(report.variant("float").bundle, x[:4]), _logits(model, x[:4]),
                               atol=1e-4)
    with pytest.raises(UnsupportedModelError, match=r"TorchScript cannot go to TFLite"):
        convert(d / "tiny.ts", d / "ts-tfl", to="tflite", input_shape=[1, 3, 32, 32])
    with pytest.raises(ShapeError, match="--input-shape"):
        convert(d / "tiny.ts", d / "ts2", to="onnx")


def test_torch_export_program_to_onnx(trained: tuple[Path, TinyCNN, np.ndarray]) -> None:
    d, model, x = trained
    torch.export.save(torch.export.export(model, (torch.zeros(1, 3, 32, 32),)), d / "tiny.pt2")
    report = convert(d / "tiny.pt2", d / "pt2", to="onnx", latency_runs=3)  # shape from the program
    np.testing.assert_allclose(_bundle_logits(report.variant("float").bundle, x[:4]), _logits(model, x[:4]),
                               atol=1e-4)


def test_torch_export_program_to_tflite(trained: tuple[Path, TinyCNN, np.ndarray]) -> None:
    d, model, x = trained
    torch.export.save(torch.export.export(model, (torch.zeros(1, 3, 32, 32),)), d / "tiny-tfl.pt2")
    report = convert(d / "tiny-tfl.pt2", d / "pt2-tfl", to="tflite", latency_runs=3)
    np.testing.assert_allclose(_bundle_logits(report.variant("float").bundle, x[:4], nhwc=True),
                               _logits(model, x[:4]), atol=1e-4)


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("factory", "message"), [
    ("no_such_pkg.models:build", "cannot import module 'no_such_pkg.models'"),
    ("tests.support.torch_models:missing", "has no attribute 'missing'"),
    ("tests.support.torch_models:needs_args", "cannot be called without arguments"),
    ("tests.support.torch_models:not_callable", "not a callable factory"),
])
def test_factory_errors(factory: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(SourceLoadError, match=message):
        convert(factory, tmp_path, to="onnx", input_shape=[1, 3, 32, 32])


def test_weights_that_do_not_match_the_module(trained: tuple[Path, TinyCNN, np.ndarray], tmp_path: Path) -> None:
    d, _, _ = trained
    with pytest.raises(SourceLoadError, match=r"does not match the module .*fc.weight \[4, 8\] vs \[10, 8\]"):
        convert("tests.support.torch_models:tiny_cnn_10", tmp_path, to="onnx", weights=d / "tiny.pt",
                input_shape=[1, 3, 32, 32])


def test_pickled_module_is_refused_as_weights(tmp_path: Path) -> None:
    torch.save({"net": TinyCNN()}, tmp_path / "whole.pt")
    with pytest.raises(SourceLoadError, match=r"weights_only=True .*state_dict"):
        convert(FACTORY, tmp_path / "out", to="onnx", weights=tmp_path / "whole.pt")


def test_state_dict_given_as_torchscript_gets_the_fix(trained: tuple[Path, TinyCNN, np.ndarray],
                                                     tmp_path: Path) -> None:
    d, _, _ = trained
    with pytest.raises(SourceLoadError, match=r"holds weights \(a state_dict\), not a TorchScript model; pass "
                                              r"MODULE:FACTORY --weights"):
        convert(d / "tiny.pt", tmp_path, to="onnx", input_shape=[1, 3, 32, 32])


def test_shape_the_model_cannot_take(trained: tuple[Path, TinyCNN, np.ndarray], tmp_path: Path) -> None:
    d, _, _ = trained
    with pytest.raises(ShapeError, match=r"cannot take input shape \[1, 1, 32, 32\]"):
        convert(FACTORY, tmp_path, to="onnx", weights=d / "tiny.pt", input_shape=[1, 1, 32, 32])


def test_calibration_of_the_wrong_shape(trained: tuple[Path, TinyCNN, np.ndarray], tmp_path: Path) -> None:
    d, _, _ = trained
    np.save(tmp_path / "wrong.npy", np.zeros((4, 3, 16, 16), dtype=np.float32))
    with pytest.raises(ConversionError, match=r"does not fit the model input 'input' of shape \[1, 3, 32, 32\]"):
        convert(FACTORY, tmp_path / "out", to="onnx", weights=d / "tiny.pt", quantize=["int8"],
                calibration=[tmp_path / "wrong.npy"])
