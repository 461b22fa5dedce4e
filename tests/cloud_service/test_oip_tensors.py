"""The Open Inference Protocol tensor codec on its own: the fast JSON path gives exactly what the
careful one gives and refuses what it refuses (no silent casts), binary outputs in the
Inference-Header-Content-Length layout, and gzip/deflate bodies with a bound on inflation."""

from __future__ import annotations

import gzip
import json
import zlib

import numpy as np
import orjson
import pytest

from cloud_sync.service import BadRequestError, PayloadTooLargeError
from cloud_sync.service._oip import MIN_COMPRESS_BYTES, decode_body, encode_body, encode_response, parse_infer_request
from edge_runtime import TensorSpec


def _spec(dtype: str, shape: list[int]) -> list[TensorSpec]:
    return [TensorSpec(name="x", shape=shape, dtype=dtype)]


def _body(datatype: str, shape: list[int], data: object, **extra: object) -> bytes:
    return json.dumps({"inputs": [{"name": "x", "datatype": datatype, "shape": shape, "data": data}],
                       **extra}).encode()


@pytest.mark.parametrize(("dtype", "datatype", "values"), [
    ("uint8", "UINT8", [0, 1, 254, 255, 7, 9]),
    ("int8", "INT8", [-128, 127, 0, -1, 5, 6]),
    ("int32", "INT32", [2**31 - 1, -(2**31), 0, 1, 2, 3]),
    ("int64", "INT64", [2**62, -(2**62), 0, 1, 2, 3]),
    ("float32", "FP32", [0.1, -1.5, 3.0, 1e-8, 2, 0]),
    ("float16", "FP16", [0.5, -2.0, 65504.0, 0, 1, 2]),
    ("float64", "FP64", [0.1, 1e300, -1e-300, 0, 1, 2]),
])
def test_json_tensors_flat_and_nested_are_exact(dtype: str, datatype: str, values: list) -> None:
    want = np.array(values, dtype=dtype).reshape(1, 2, 3)
    for data in (values, want.tolist()):  # flat (fast path) and nested (careful path)
        req = parse_infer_request(_body(datatype, [1, 2, 3], data), None, _spec(dtype, [-1, 2, 3]))
        (got,) = req.tensors
        assert got.dtype == np.dtype(dtype) and got.shape == (1, 2, 3)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(("dtype", "datatype", "values", "needle"), [
    ("uint8", "UINT8", [0, 300, 0, 0], "do not fit"),
    ("uint8", "UINT8", [0, -1, 0, 0], "do not fit"),
    ("uint8", "UINT8", [0, 0.5, 0, 0], "integers"),
    ("uint8", "UINT8", [0, "a", 0, 0], "numbers"),
    ("int32", "INT32", [1, 2.5, 3, 4], "integers"),
    ("int32", "INT32", [1.0, 2, 3, 4], "integers"),
    ("int8", "INT8", [1, 2, 3, 200], "do not fit"),
    ("float16", "FP16", [1.0, 1e6, 0, 0], "overflow"),
    ("float32", "FP32", [1.0, None, 0, 0], "numbers"),
])
def test_json_tensors_refuse_what_does_not_fit(dtype: str, datatype: str, values: list, needle: str) -> None:
    with pytest.raises(BadRequestError) as e:
        parse_infer_request(_body(datatype, [1, 4], values), None, _spec(dtype, [-1, 4]))
    assert e.value.code == "bad_data" and needle in e.value.message, e.value.message


def test_wrong_count_is_a_shape_error() -> None:
    with pytest.raises(BadRequestError) as e:
        parse_infer_request(_body("UINT8", [1, 4], [1, 2, 3]), None, _spec("uint8", [-1, 4]))
    assert e.value.code == "bad_shape"


def test_binary_outputs_follow_the_request() -> None:
    specs = [TensorSpec(name="a", shape=[-1, 3], dtype="float32"), TensorSpec(name="b", shape=[-1, 2], dtype="uint8")]
    outs = [np.array([[0.5, 1.5, -2.0]], np.float32), np.array([[7, 9]], np.uint8)]
    inp = _spec("uint8", [-1, 1])

    # binary_data_output: every output in binary, after the JSON header
    req = parse_infer_request(_body("UINT8", [1, 1], [1], parameters={"binary_data_output": True}), None, inp)
    body, headers = encode_response("m", 3, req, outs, specs)
    n = int(headers["Inference-Header-Content-Length"])
    head = orjson.loads(body[:n])
    assert "id" not in head and head["model_version"] == "3"
    assert [o["parameters"]["binary_data_size"] for o in head["outputs"]] == [12, 2]
    assert np.frombuffer(body[n:n + 12], np.float32).tolist() == [0.5, 1.5, -2.0]
    assert body[n + 12:] == bytes([7, 9])

    # per output: "a" as JSON, "b" in binary; an id is echoed
    req = parse_infer_request(_body("UINT8", [1, 1], [1], id="r1", outputs=[
        {"name": "a", "parameters": {"binary_data": False}}, {"name": "b", "parameters": {"binary_data": True}}]),
        None, inp)
    body, headers = encode_response("m", 3, req, outs, specs)
    n = int(headers["Inference-Header-Content-Length"])
    head = orjson.loads(body[:n])
    assert head["id"] == "r1"
    assert head["outputs"][0]["data"] == [0.5, 1.5, -2.0] and "parameters" not in head["outputs"][0]
    assert body[n:] == bytes([7, 9])

    # plain JSON: no header, no binary part; only the outputs asked for
    req = parse_infer_request(_body("UINT8", [1, 1], [1], outputs=[{"name": "b"}]), None, inp)
    body, headers = encode_response("m", 3, req, outs, specs)
    assert "Inference-Header-Content-Length" not in headers
    assert orjson.loads(body)["outputs"] == [{"name": "b", "datatype": "UINT8", "shape": [1, 2], "data": [7, 9]}]


def test_compressed_bodies() -> None:
    raw = b'{"inputs": []}' * 100
    assert decode_body(gzip.compress(raw), "gzip", 10_000) == raw
    assert decode_body(zlib.compress(raw), "deflate", 10_000) == raw
    raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert decode_body(raw_deflate.compress(raw) + raw_deflate.flush(), "deflate", 10_000) == raw
    assert decode_body(raw, None, 10_000) == raw and decode_body(raw, "identity", 10_000) == raw
    with pytest.raises(PayloadTooLargeError):
        decode_body(gzip.compress(b"\0" * 100_000), "gzip", 10_000)
    with pytest.raises(BadRequestError) as e:
        decode_body(gzip.compress(raw)[:-20], "gzip", 10_000)
    assert e.value.code == "bad_encoding"


def test_answers_compressed_as_accepted() -> None:
    big = b"0," * MIN_COMPRESS_BYTES
    body, enc = encode_body(big, "gzip")
    assert enc == "gzip" and gzip.decompress(body) == big
    body, enc = encode_body(big, "deflate")
    assert enc == "deflate" and zlib.decompress(body) == big
    assert encode_body(big, "gzip;q=0.2, deflate;q=0.8")[1] == "deflate"
    assert encode_body(big, "gzip;q=0, br")[1] is None
    assert encode_body(big, None) == (big, None)
    assert encode_body(b"{}", "gzip") == (b"{}", None)  # too small to be worth it


def test_classification_strings() -> None:
    specs = [TensorSpec(name="p", shape=[-1, 3], dtype="float32")]
    outs = [np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]], np.float32)]
    req = parse_infer_request(_body("UINT8", [1, 1], [1], outputs=[
        {"name": "p", "parameters": {"classification": 2, "binary_data": False}}]), None, _spec("uint8", [-1, 1]))
    body, _ = encode_response("m", 1, req, outs, specs, ["a", "b", "c"])
    (out,) = orjson.loads(body)["outputs"]
    assert out == {"name": "p", "datatype": "BYTES", "shape": [2, 2],
                   "data": ["0.700000:1:b", "0.200000:2:c", "0.500000:0:a", "0.250000:1:b"]}
    with pytest.raises(BadRequestError):
        parse_infer_request(_body("UINT8", [1, 1], [1], outputs=[{"name": "p", "parameters": {"classification": 0}}]),
                            None, _spec("uint8", [-1, 1]))
