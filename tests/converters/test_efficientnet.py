"""EfficientNet-Lite0 with its real pretrained weights: float ONNX, int8 ONNX and int8 TFLite."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from edge_runtime import Model, open_bundle
from tests.support.data import REFERENCE_IMAGES


def _edge_run_top1(edge_cli: Callable[..., Result], bundle: str, image: Path) -> str:
    res = edge_cli("run", bundle, "--source", image, "--no-summary")
    assert res.exit_code == 0, res.output
    records = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert len(records) == 1, res.stdout
    return str(records[0]["top_k"][0]["label"])


def test_pytorch_reference_is_the_known_answer(torch_reference: dict[str, str]) -> None:
    assert torch_reference["cat.png"] == "Egyptian cat"


@pytest.mark.parametrize("variant", ["float", "int8"])
def test_onnx_variants_keep_reference_top1_through_edge_run(
        effnet_onnx: Any, torch_reference: dict[str, str], edge_cli: Callable[..., Result], images_dir: Path,
        variant: str) -> None:
    bundle = effnet_onnx.variant(variant).bundle
    for name in REFERENCE_IMAGES:
        assert _edge_run_top1(edge_cli, bundle, images_dir / name) == torch_reference[name], (variant, name)


def test_tflite_int8_keeps_reference_top1_through_edge_run(
        effnet_tflite: Any, torch_reference: dict[str, str], edge_cli: Callable[..., Result],
        images_dir: Path) -> None:
    for variant in ("float", "int8"):
        bundle = effnet_tflite.variant(variant).bundle
        for name in REFERENCE_IMAGES:
            assert _edge_run_top1(edge_cli, bundle, images_dir / name) == torch_reference[name], (variant, name)


def test_int8_tflite_is_fully_integer_nhwc(effnet_tflite: Any) -> None:
    m = open_bundle(effnet_tflite.variant("int8").bundle).manifest
    assert m.format == "tflite" and m.quantization == "int8"
    (inp,) = m.inputs
    assert inp.dtype == "int8" and inp.quantization is not None
    assert inp.layout == "NHWC" and inp.shape[1:] == [224, 224, 3]
    assert m.preprocess.mean == [127.0] and m.preprocess.std == [128.0]


def test_int8_onnx_is_qdq_with_float_io(effnet_onnx: Any) -> None:
    import onnx

    b = open_bundle(effnet_onnx.variant("int8").bundle)
    assert b.manifest.inputs[0].layout == "NCHW" and b.manifest.inputs[0].dtype == "float32"
    ops = {n.op_type for n in onnx.load(str(b.model_path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops


@pytest.mark.parametrize("fixture", ["effnet_onnx", "effnet_tflite"])
def test_int8_is_under_a_third_of_float(fixture: str, request: pytest.FixtureRequest) -> None:
    report = request.getfixturevalue(fixture)
    f, q = report.variant("float"), report.variant("int8")
    assert q.size_bytes is not None and f.size_bytes is not None
    assert q.size_bytes <= 0.3 * f.size_bytes
    assert q.size_ratio == pytest.approx(q.size_bytes / f.size_bytes, rel=1e-3)


@pytest.mark.parametrize("fixture", ["effnet_onnx", "effnet_tflite"])
def test_report_agreement_on_reference_images(fixture: str, request: pytest.FixtureRequest) -> None:
    report = request.getfixturevalue(fixture)
    assert report.eval.kind == "agreement" and report.eval.inputs == len(REFERENCE_IMAGES)
    q = report.variant("int8")
    assert q.agreement == 100.0 and q.accuracy_drop == 0.0 and q.within_max_drop
    assert q.max_abs_diff is not None and q.max_abs_diff > 0  # int8 really differs from float
    assert q.p50_ms is not None and q.p50_ms > 0 and q.latency_ratio is not None
    assert report.recommended in {v.variant for v in report.variants if v.within_max_drop}


def test_manifest_records_source_quantization_and_metrics(effnet_onnx: Any) -> None:
    m = open_bundle(effnet_onnx.variant("int8").bundle).manifest
    assert m.source["framework"] == "pytorch" and m.source["version"].startswith("2.")
    assert m.source["quantizer"]["format"] == "QDQ"
    assert m.metrics["size_bytes"] == effnet_onnx.variant("int8").size_bytes
    assert m.metrics["latency"]["backend"] == effnet_onnx.backend
    assert m.metrics["agreement"] == 100.0
    labels = open_bundle(effnet_onnx.variant("float").bundle).labels()
    assert len(labels) == 1000 and labels[0].startswith("tench")  # the background line was dropped
    out_dir = Path(effnet_onnx.out_dir)
    saved = json.loads((out_dir / "report.json").read_text())
    assert saved["recommended"] == effnet_onnx.recommended
    assert "| int8 |" in (out_dir / "report.md").read_text()


@pytest.mark.parametrize("fixture", ["effnet_onnx", "effnet_tflite"])
def test_int8_bundle_runs_through_edge_bench(fixture: str, request: pytest.FixtureRequest,
                                             edge_cli: Callable[..., Result], images_dir: Path) -> None:
    bundle = request.getfixturevalue(fixture).variant("int8").bundle
    res = edge_cli("bench", bundle, "--runs", "5", "--warmup", "1", "--input", images_dir / "cat.png", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout[res.stdout.index("{"):])
    assert data["runtime_infer"]["p50_ms"] > 0


def test_bundle_loads_in_runtime_model(effnet_tflite: Any, images_dir: Path) -> None:
    with Model.load(effnet_tflite.variant("int8").bundle) as m:
        pred = m.predict_file(images_dir / "cat.png")
    assert pred.label == "Egyptian cat"
