"""The manifest types are stdlib records (device_profiles.checked), not pydantic models, so that a
device's run imports no pydantic (tests/cli/test_startup.py): here they are proven to accept,
refuse and normalise manifests exactly as the pydantic models they replaced
(tests/support/pydantic_mirrors.py), on valid bundles and on hostile manifests made from them.
What the device accepts is written down in tests/support/differential.py."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_runtime import Manifest, ManifestError, Postprocess, Preprocess, TensorSpec, open_bundle
from edge_runtime._bundle import parse_manifest
from edge_runtime._manifest import FileEntry, Quantization
from tests.support import pydantic_mirrors as old
from tests.support.differential import assert_same, mutated, outcome_pydantic, outcome_record

SHA = "ab" * 32
Q = {"scale": 0.0078125, "zero_point": 128}


def _manifest(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema": 1, "name": "mobilenet_v2", "version": 3, "created": "2026-12-01T12:00:00+00:00",
        "expires": "2027-12-01T00:00:00Z", "task": "classification", "format": "tflite", "model": "model.tflite",
        "files": {"model.tflite": {"sha256": SHA, "size": 3610798}, "labels.txt": {"sha256": SHA, "size": 10},
                  "samples/cat.png": {"sha256": SHA, "size": 0}},
        "inputs": [{"name": "input", "shape": [1, 224, 224, 3], "dtype": "uint8", "layout": "NHWC", "quantization": Q}],
        "outputs": [{"name": "prob", "shape": [1, 1001], "dtype": "uint8", "layout": "NC",
                     "quantization": {"scale": 0.00390625, "zero_point": 0}}],
        "preprocess": {"kind": "image", "size": [224, 224], "resize_mode": "squash", "interpolation": "bilinear",
                       "color": "rgb", "mean": [127.5], "std": [127.5, 127.5, 127.5], "scale": 1.0, "pad_value": 0},
        "postprocess": {"softmax": "auto", "top_k": 5, "threshold": 0.0, "labels": "labels.txt", "output": None,
                        "head": None, "box_format": None, "box_units": None, "score_threshold": 0.25,
                        "iou_threshold": 0.45, "max_detections": 100},
        "source": {"framework": "external", "file": "m.tflite"}, "quantization": "int8",
        "metrics": {"top1": 0.71, "nested": {"a": [1, 2]}}, "profiles": ["rpi-4b"], "min_runtime": "0.1.0",
        "samples": ["samples/cat.png"],
    }
    doc.update(over)
    return doc


BASES: list[dict[str, Any]] = [
    _manifest(),
    # a detection bundle as make_bundle writes one for Ultralytics YOLOv8 (one raw head)
    _manifest(task="detection", format="onnx", model="model.onnx",
              files={"model.onnx": {"sha256": SHA, "size": 12}, "labels.txt": {"sha256": SHA, "size": 3}},
              inputs=[{"name": "images", "shape": [1, 3, 640, 640], "dtype": "float32", "layout": "NCHW"}],
              outputs=[{"name": "output0", "shape": [1, 84, 8400], "dtype": "float32"}], samples=[],
              preprocess={"resize_mode": "letterbox", "pad_value": 114, "scale": 1 / 255},
              postprocess={"head": "yolo", "labels": "labels.txt", "score_threshold": 0.3}),
    # an SSD (4 post-processed outputs), box format left to the head's defaults
    _manifest(task="detection",
              outputs=[{"name": "boxes", "shape": [1, 10, 4], "dtype": "float32"},
                       {"name": "classes", "shape": [1, 10], "dtype": "float32"},
                       {"name": "scores", "shape": [1, 10], "dtype": "float32"},
                       {"name": "count", "shape": [1], "dtype": "float32"}],
              postprocess={"head": "ssd", "softmax": False}),
    # a tabular model: no labels, no image preprocessing; minimal keys (defaults fill the rest)
    {"name": "iris", "version": 1, "format": "onnx", "model": "m.onnx", "task": "tabular",
     "created": "2026-12-01T00:00:00Z", "files": {"m.onnx": {"sha256": SHA, "size": 1}},
     "inputs": [{"name": "x", "shape": [-1, 4], "dtype": "float32"}],
     "outputs": [{"name": "label", "shape": [-1], "dtype": "int64"}, {"name": "probabilities", "shape": [-1, 3],
                                                                       "dtype": "float32"}],
     "preprocess": {"kind": "none"}, "postprocess": {"labels": None, "softmax": True, "output": "probabilities"}},
]
KEYS = sorted({k for b in BASES for k in b} | {k for b in BASES for k in b["postprocess"]}
              | {k for b in BASES for k in b["preprocess"]} | {"scale", "zero_point", "sha256", "size", "shape"})


def check(doc: Any) -> tuple[str, Any]:
    return assert_same(Manifest, old.Manifest, doc, volatile=("created",))


@pytest.mark.parametrize("base", range(len(BASES)))
def test_valid_manifests_read_the_same(base: int) -> None:
    assert check(BASES[base])[0] == "ok"


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(BASES, KEYS))
def test_hostile_manifests_are_judged_as_pydantic_judged_them(doc: Any) -> None:
    check(doc)


@pytest.mark.parametrize("cls, model, bases", [
    (Preprocess, old.Preprocess, [b["preprocess"] for b in BASES]),
    (Postprocess, old.Postprocess, [b["postprocess"] for b in BASES]),
    (TensorSpec, old.TensorSpec, [*BASES[0]["inputs"], *BASES[1]["outputs"]]),
    (Quantization, old.Quantization, [Q]),
    (FileEntry, old.FileEntry, [{"sha256": SHA, "size": 5}]),
])
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_each_part_is_judged_as_pydantic_judged_it(cls: Any, model: Any, bases: list[dict[str, Any]], data: Any
                                                     ) -> None:
    assert_same(cls, model, data.draw(mutated(bases, KEYS)))


# Coercions pydantic's lax mode made and a device no longer makes (no writer relies on them).
@pytest.mark.parametrize("path, value", [
    (("version",), "3"), (("version",), 3.0), (("version",), True), (("schema",), "1"),
    (("preprocess", "pad_value"), 114.0), (("preprocess", "pad_value"), "114"), (("preprocess", "scale"), "1"),
    (("preprocess", "scale"), True), (("postprocess", "top_k"), "5"), (("postprocess", "softmax"), "yes"),
    (("postprocess", "softmax"), 1), (("files", "model.tflite", "size"), "3610798"),
    (("inputs", 0, "shape", 1), "224"), (("inputs", 0, "quantization", "zero_point"), 128.0),
])
def test_lax_coercions_are_refused(path: tuple[Any, ...], value: Any) -> None:
    doc = copy.deepcopy(BASES[0])
    target = doc
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    assert outcome_pydantic(old.Manifest, doc, strict=False)[0] == "ok"  # the old lax device took it
    key = ".".join(str(p) for p in path)
    mine = outcome_record(Manifest, doc)
    assert mine[0] == "error" and all(loc.startswith(key) for loc in mine[1][0]), mine
    # (softmax is bool | "auto": each alternative is named, as pydantic did: postprocess.softmax.bool: ...)
    with pytest.raises(ManifestError, match=rf"manifest.json: {key.replace('.', r'[.]')}(\.bool)?: Input should be"):
        parse_manifest(json.dumps(doc).encode(), where="manifest.json")


def test_an_unhashable_head_is_refused_not_a_crash() -> None:
    doc = copy.deepcopy(BASES[1])
    doc["postprocess"]["head"] = ["yolo"]
    with pytest.raises(TypeError):  # the pydantic model's before-validator crashed on it
        old.Manifest.model_validate(doc)
    with pytest.raises(ManifestError, match="postprocess.head: Input should be 'ssd', 'yolo' or 'yolov5'"):
        parse_manifest(json.dumps(doc).encode(), where="manifest.json")


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../b", "a//b", "./a", "a\\b", "a\x00b", "a/", ""])
def test_unsafe_file_names_are_refused_with_the_same_message(name: str) -> None:
    doc = copy.deepcopy(BASES[0])
    doc["files"][name] = {"sha256": SHA, "size": 1}
    assert check(doc)[0] == "error"
    with pytest.raises(ManifestError, match=r"files: Value error, file name .* must be a plain relative path"):
        parse_manifest(json.dumps(doc).encode(), where="manifest.json")


def test_a_real_bundle_reads_the_same(mobilenet_bundle: Path) -> None:
    raw = (mobilenet_bundle / "manifest.json").read_bytes()
    assert check(json.loads(raw))[0] == "ok"
    m = open_bundle(mobilenet_bundle).manifest
    assert m.to_json_bytes() == raw  # what make_bundle wrote is what the record writes back
    assert m == Manifest.from_json(raw)
    assert m.to_dict(json=True) == old.Manifest.model_validate_json(raw).model_dump(mode="json", by_alias=True)


def test_record_api() -> None:
    pre = Preprocess(size=(224, 224), mean=[127.5])
    assert pre.fields_set == {"size", "mean"}
    assert pre.replace(scale=0.5).fields_set == {"size", "mean", "scale"}
    assert pre.replace(scale=0.5).scale == 0.5 and pre.scale == 1.0
    with pytest.raises(ValueError, match="pad_value: Input should be less than or equal to 255"):
        pre.replace(pad_value=256)
    assert Preprocess.from_json(pre.to_json()) == pre
    assert pre.to_dict()["size"] == (224, 224) and pre.to_dict(json=True)["size"] == [224, 224]
    post = Postprocess(head="ssd")
    assert (post.box_format, post.box_units) == ("yxyx", "normalized")
    assert {"head", "box_format", "box_units"} <= post.fields_set  # filled from the head, as pydantic did
    m = Manifest.from_dict(BASES[0])
    assert m.schema_ == 1 and m.to_dict()["schema"] == 1 and "schema_" in m.to_dict(by_alias=False)
    assert Manifest(**{**{k: v for k, v in BASES[0].items() if k != "schema"}, "schema_": 1}) == m  # its own name too
    with pytest.raises(AttributeError):
        m.version = 4  # type: ignore[misc]
    assert hash(Quantization(scale=0.5, zero_point=1)) == hash(Quantization(scale=0.5, zero_point=1))


@pytest.mark.parametrize("path", [("preprocess", "scale"), ("preprocess", "mean", 0), ("postprocess", "threshold"),
                                  ("postprocess", "iou_threshold"), ("inputs", 0, "quantization", "scale")])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_are_no_numbers(path: tuple[Any, ...], value: float) -> None:
    """Python's json reads NaN and Infinity, and pydantic took them (a NaN mean turns every pixel to
    NaN); a record refuses them, and a manifest writes none (NaN in metrics is written as null)."""
    doc = copy.deepcopy(BASES[0])
    target = doc
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    key = ".".join(str(p) for p in path).replace(".", "[.]")
    with pytest.raises(ManifestError, match=rf"manifest.json: {key}: Input should be a finite number"):
        parse_manifest(json.dumps(doc).encode(), where="manifest.json")
    doc = copy.deepcopy(BASES[0])
    doc["metrics"]["loss"] = value
    assert json.loads(Manifest.from_dict(doc).to_json_bytes())["metrics"]["loss"] is None


@pytest.mark.parametrize("path, key, hint", [
    ((), "verison", "did you mean 'version'?"),
    (("postprocess",), "top_kk", "did you mean 'top_k'?"),
    (("inputs", 0), "nme", "did you mean 'name'?"),
    (("inputs", 0, "quantization"), "zero_pont", "did you mean 'zero_point'?"),
    (("files", "model.tflite"), "sha", "did you mean 'sha256'?"),
    (("preprocess",), "qqq",
     "(known keys: kind, size, resize_mode, interpolation, color, mean, std, scale, pad_value)"),
])
def test_an_unknown_key_gets_the_closest_known_one(path: tuple[Any, ...], key: str, hint: str) -> None:
    from edge_runtime._errors import describe_validation_error

    doc = copy.deepcopy(BASES[0])
    target = doc
    for p in path:
        target = target[p]
    target[key] = 1
    where = ".".join(str(p) for p in (*path, key))
    with pytest.raises(ManifestError) as info:
        parse_manifest(json.dumps(doc).encode(), where="manifest.json")
    sep = " " if hint[0] == "(" else "; "
    assert str(info.value) == f"manifest.json: {where}: Extra inputs are not permitted{sep}{hint}"
    with pytest.raises(ValueError) as exc:
        Manifest.from_dict(doc)
    assert describe_validation_error(exc.value, "manifest", model=Manifest) == \
        f"invalid manifest: {where}: unknown key{sep}{hint}"
