"""The Open Inference Protocol (KServe v2 REST) tensor format: parsing requests, building answers.

JSON tensors (``"data"``: flat row-major or nested lists) and the protocol's binary tensor
extension (``Inference-Header-Content-Length`` header; the JSON header is followed by the raw
bytes of each input that has ``parameters.binary_data_size``) are both accepted, as NVIDIA's
tritonclient sends them: JSON when there is no ``Inference-Header-Content-Length``, the binary
layout when there is, whatever the Content-Type says, and gzip/deflate bodies
(``Content-Encoding``; answers are compressed when ``Accept-Encoding`` asks for it). Outputs
go back in binary when the request asks for it (``parameters.binary_data_output``, or
``binary_data`` per requested output). Every check happens here, before anything reaches a
backend, and fails with a 400 naming the input.

JSON tensors are the slow path of the protocol (a 224x224x3 image is ~600 kB of digits), so
they are parsed without Python-level work per element: orjson builds the list, and one C call
turns it into an array (``bytes(list)`` for UINT8, ``np.array(list, dtype)`` otherwise); only a
tensor that fails there goes through the careful path that names what is wrong.
"""

from __future__ import annotations

import gzip
import json
import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_runtime import TensorSpec

from .._tensors import DATATYPES, MAX_ELEMENTS, TensorDataError, convert_data, datatype_of
from ._errors import BadRequestError, PayloadTooLargeError, UnsupportedMediaTypeError

__all__ = ["DATATYPES", "MIN_COMPRESS_BYTES", "InferRequest", "check_outputs", "datatype_of", "decode_body",
           "encode_body", "encode_outputs", "encode_response", "json_dumps", "json_loads", "parse_infer_request"]

_orjson: Any
try:  # orjson parses the large number arrays of image tensors several times faster
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

def json_loads(raw: bytes) -> Any:
    if _orjson is not None:
        return _orjson.loads(raw)
    return json.loads(raw)


def json_dumps(obj: Any) -> bytes:
    if _orjson is not None:
        return _orjson.dumps(obj, option=_orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(obj, separators=(",", ":"), default=_numpy_default).encode()


def _numpy_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


#: answers smaller than this go uncompressed whatever the client accepts: not worth the CPU
MIN_COMPRESS_BYTES = 1024


def encode_body(body: bytes, accept_encoding: str | None) -> tuple[bytes, str | None]:
    """The response body compressed the way the client asked (``Accept-Encoding``: gzip or
    deflate, what tritonclient's ``response_compression_algorithm`` sends), and the encoding used
    (None: sent as it is)."""
    if not accept_encoding or len(body) < MIN_COMPRESS_BYTES:
        return body, None
    best, best_q = None, 0.0
    for part in accept_encoding.split(","):
        name, _, params = part.strip().partition(";")
        q = 1.0
        for prm in params.split(";"):
            k, _, v = prm.strip().partition("=")
            if k.strip().lower() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        name = name.strip().lower()
        if name in ("gzip", "deflate") and q > best_q:
            best, best_q = name, q
    if best == "gzip":
        return gzip.compress(body, compresslevel=1), "gzip"
    if best == "deflate":
        return zlib.compress(body, 1), "deflate"
    return body, None


def decode_body(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The request body without its ``Content-Encoding`` (gzip or deflate, what tritonclient's
    ``request_compression_algorithm`` sends), refusing (413) to inflate past ``limit``."""
    enc = (encoding or "identity").strip().lower()
    if enc == "identity":
        return body
    if enc in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif enc == "deflate":  # zlib-wrapped, as HTTP means it; raw deflate is accepted too
        zlib_header = len(body) >= 2 and (body[0] & 0x0F) == 8 and ((body[0] << 8) | body[1]) % 31 == 0
        wbits = zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS
    else:
        raise UnsupportedMediaTypeError(f"Content-Encoding {encoding!r} is not supported (gzip, deflate or "
                                        "identity)", code="unsupported_encoding")
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequestError(f"request body is not valid {enc} data: {exc}", code="bad_encoding") from exc
    if len(out) > limit:
        raise PayloadTooLargeError(f"the request body inflates to more than the limit of {limit} bytes")
    if not d.eof:
        raise BadRequestError(f"request body is truncated {enc} data", code="bad_encoding")
    return out


@dataclass
class InferRequest:
    id: str | None
    #: one array per model input, in the model's input order, whole batch
    tensors: list[np.ndarray]
    #: the batch size shared by every input
    batch: int
    #: output names asked for (None: all)
    outputs: list[str] | None
    #: outputs to send in the binary tensor layout: the request's ``binary_data_output``, and
    #: each requested output's ``parameters.binary_data``
    binary_default: bool = False
    binary: dict[str, bool] = field(default_factory=dict)
    #: Triton's classification extension: output name -> how many top classes to answer with
    classification: dict[str, int] = field(default_factory=dict)

    def wants_binary(self, name: str) -> bool:
        return self.binary.get(name, self.binary_default)


def parse_infer_request(body: bytes, header_length: str | None, specs: list[TensorSpec]) -> InferRequest:
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise BadRequestError("Inference-Header-Content-Length must be an integer",
                                  code="bad_header") from None
        if not 0 < n <= len(body):
            raise BadRequestError(f"Inference-Header-Content-Length {n} does not fit the {len(body)}-byte body",
                                  code="bad_header")
        head, binary = body[:n], memoryview(body)[n:]
    else:
        head, binary = body, memoryview(b"")
    try:
        doc = json_loads(head)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequestError(f"request body is not valid JSON: {exc}", code="bad_json") from exc
    if not isinstance(doc, dict):
        raise BadRequestError("request body must be a JSON object with an 'inputs' list", code="bad_request")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequestError("'inputs' must be a non-empty list of tensors", code="bad_request")
    rid = doc.get("id")
    if rid is not None and not isinstance(rid, str):
        raise BadRequestError("'id' must be a string", code="bad_request")
    rparams = doc.get("parameters") or {}
    if not isinstance(rparams, dict):
        raise BadRequestError("'parameters' must be an object", code="bad_request")
    binary_default = rparams.get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise BadRequestError("parameters.binary_data_output must be true or false", code="bad_request")
    by_name = {s.name: (i, s) for i, s in enumerate(specs)}
    tensors: list[np.ndarray | None] = [None] * len(specs)
    offset = 0
    for k, t in enumerate(inputs):
        if not isinstance(t, dict):
            raise BadRequestError(f"inputs[{k}] must be an object", code="bad_request")
        name = t.get("name")
        if not isinstance(name, str) or name not in by_name:
            raise BadRequestError(f"inputs[{k}]: unknown input {name!r}; the model takes "
                                  f"{', '.join(repr(s.name) for s in specs)}", code="unknown_input")
        idx, spec = by_name[name]
        if tensors[idx] is not None:
            raise BadRequestError(f"input {name!r} is given twice", code="bad_request")
        arr, used = _tensor(t, spec, binary[offset:])
        offset += used
        tensors[idx] = arr
    missing = [s.name for s, a in zip(specs, tensors, strict=True) if a is None]
    if missing:
        raise BadRequestError(f"missing input(s): {', '.join(missing)}", code="missing_input")
    if offset != len(binary):
        raise BadRequestError(f"{len(binary) - offset} byte(s) of binary data are not claimed by any input",
                              code="bad_binary")
    arrays = [a for a in tensors if a is not None]
    batches = {int(a.shape[0]) for a in arrays if a.ndim}
    if len(batches) > 1:
        raise BadRequestError(f"inputs disagree on the batch size: {sorted(batches)}", code="bad_shape")
    outs = doc.get("outputs")
    names: list[str] | None = None
    out_binary: dict[str, bool] = {}
    classification: dict[str, int] = {}
    if outs is not None:
        if not isinstance(outs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                 for o in outs):
            raise BadRequestError("'outputs' must be a list of {\"name\": ...} objects", code="bad_request")
        names = [o["name"] for o in outs]
        for o in outs:
            p = o.get("parameters") or {}
            if not isinstance(p, dict):
                raise BadRequestError(f"output {o['name']!r}: parameters must be an object", code="bad_request")
            top = p.get("classification")
            if top is not None:
                if not isinstance(top, int) or isinstance(top, bool) or top < 1:
                    raise BadRequestError(f"output {o['name']!r}: classification must be a positive integer "
                                          "(the number of top classes)", code="bad_request")
                classification[o["name"]] = top
            b = p.get("binary_data")
            if b is not None:
                if not isinstance(b, bool):
                    raise BadRequestError(f"output {o['name']!r}: binary_data must be true or false",
                                          code="bad_request")
                out_binary[o["name"]] = b
    return InferRequest(rid, arrays, batches.pop() if batches else 1, names, binary_default, out_binary,
                        classification)


def _tensor(t: dict[str, Any], spec: TensorSpec, binary: memoryview) -> tuple[np.ndarray, int]:
    name = spec.name
    want = np.dtype(spec.dtype)
    datatype = t.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise BadRequestError(f"input {name!r}: datatype {datatype!r} is not one of {', '.join(DATATYPES)}",
                              code="bad_datatype")
    if DATATYPES[datatype] != want:
        raise BadRequestError(f"input {name!r} is {datatype_of(want)}, the request says {datatype}",
                              code="bad_datatype")
    shape = t.get("shape")
    if (not isinstance(shape, list) or not shape or
            not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise BadRequestError(f"input {name!r}: shape must be a non-empty list of non-negative integers",
                              code="bad_shape")
    _check_shape(shape, spec)
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise BadRequestError(f"input {name!r}: {count} elements is more than {MAX_ELEMENTS}", code="too_large")
    params = t.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequestError(f"input {name!r}: parameters must be an object", code="bad_request")
    bsize = params.get("binary_data_size")
    if bsize is not None:
        if not isinstance(bsize, int) or bsize < 0 or bsize > len(binary):
            raise BadRequestError(f"input {name!r}: binary_data_size {bsize!r} does not fit the binary data",
                                  code="bad_binary")
        if bsize != count * want.itemsize:
            raise BadRequestError(f"input {name!r}: shape {shape} of {datatype} is {count * want.itemsize} bytes, "
                                  f"binary_data_size says {bsize}", code="bad_shape")
        return np.frombuffer(binary[:bsize], dtype=want).reshape(shape), bsize
    data = t.get("data")
    if not isinstance(data, list):
        raise BadRequestError(f"input {name!r}: 'data' must be a list (or use binary_data_size)", code="bad_data")
    fast = _fast_array(data, want, count)
    if fast is not None:
        return fast.reshape(shape), 0
    try:
        raw = np.asarray(data)
    except (ValueError, TypeError) as exc:
        raise BadRequestError(f"input {name!r}: data is ragged or not numeric ({exc})", code="bad_data") from exc
    if raw.size != count:
        raise BadRequestError(f"input {name!r}: shape {shape} needs {count} values, data has {raw.size}",
                              code="bad_shape")
    return _convert(raw, want, name).reshape(shape), 0


def _fast_array(data: list[Any], want: np.dtype, count: int) -> np.ndarray | None:
    """A flat list of ``count`` plain numbers as an array of ``want`` in one C call, or None when
    the list is anything else (nested, the wrong count, out of range, floats for an integer type,
    strings, nulls): the careful path then says what is wrong."""
    if len(data) != count or not data:
        return None
    try:
        if want == np.uint8:
            # bytes() takes ints 0..255 only: a float, string, null or list raises (True is 1, as in NumPy)
            return np.frombuffer(bytes(data), dtype=np.uint8)
        # np.array(list, dtype) would cast floats to ints, and strings and nulls to floats, silently
        types = set(map(type, data))
        if want.kind in "iu" and types == {int}:
            return np.array(data, dtype=want)  # NumPy 2 raises OverflowError for out-of-range ints
        if want.kind == "f" and types <= {int, float}:
            arr = np.array(data, dtype=np.float64)
            if want == np.float64:
                return arr
            with np.errstate(over="ignore"):
                out = arr.astype(want)
            return out if np.isfinite(out).all() else None
    except (TypeError, ValueError, OverflowError):
        return None
    return None


def _convert(raw: np.ndarray, want: np.dtype, name: str) -> np.ndarray:
    try:
        return convert_data(raw, want, name)
    except TensorDataError as exc:
        raise BadRequestError(str(exc), code="bad_data") from exc


def _check_shape(shape: list[int], spec: TensorSpec) -> None:
    want = spec.shape
    if len(shape) != len(want):
        raise BadRequestError(f"input {spec.name!r} takes shape {want}, got {shape} (rank {len(shape)})",
                              code="bad_shape")
    if shape[0] < 1:
        raise BadRequestError(f"input {spec.name!r}: batch size must be at least 1", code="bad_shape")
    # The batch dimension may be anything: a fixed-batch model gets the items one by one.
    for i, (got, exp) in enumerate(zip(shape[1:], want[1:], strict=True), start=1):
        if exp > 0 and got != exp:
            raise BadRequestError(f"input {spec.name!r} takes shape {want}, got {shape} (dimension {i})",
                                  code="bad_shape")


def _top_classes(arr: np.ndarray, k: int, labels: Sequence[str]) -> list[list[bytes]]:
    """Triton's classification strings: per batch item, the k largest values, best first."""
    items = arr.reshape(arr.shape[0] if arr.ndim > 1 else 1, -1)
    k = min(k, items.shape[1])
    with_labels = len(labels) == items.shape[1]
    out = []
    for row in items:
        idx = np.argsort(-row.astype(np.float64), kind="stable")[:k]
        strs = []
        for i in idx:
            v = row[i]
            value = f"{float(v):f}" if row.dtype.kind == "f" else str(int(v))
            strs.append((f"{value}:{int(i)}:{labels[i]}" if with_labels else f"{value}:{int(i)}").encode())
        out.append(strs)
    return out


def check_outputs(wanted: list[str] | None, specs: list[TensorSpec]) -> None:
    """Refuse (400) output names the model does not have: before the model runs, not after."""
    if wanted is None:
        return
    names = [s.name for s in specs]
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise BadRequestError(f"unknown output(s) {', '.join(map(repr, unknown))}; the model gives "
                              f"{', '.join(map(repr, names))}", code="unknown_output")


def encode_outputs(outputs: list[np.ndarray], specs: list[TensorSpec],
                   wanted: list[str] | None) -> list[dict[str, Any]]:
    """The outputs as JSON tensors (``data`` as NumPy arrays: ``json_dumps`` writes them in C)."""
    check_outputs(wanted, specs)
    return [{"name": spec.name, "datatype": datatype_of(arr.dtype), "shape": list(arr.shape),
             "data": _flat(arr)}
            for spec, arr in zip(specs, outputs, strict=True) if wanted is None or spec.name in wanted]


def _flat(arr: np.ndarray) -> Any:
    flat = np.ascontiguousarray(arr).reshape(-1)
    if flat.dtype.kind in "biuf" and flat.dtype.byteorder in "=|":
        return flat
    return flat.tolist()


def encode_response(model_name: str, model_version: int | str, req: InferRequest, outputs: list[np.ndarray],
                    specs: list[TensorSpec], labels: Sequence[str] = ()) -> tuple[bytes, dict[str, str]]:
    """The inference response body and its headers. Outputs asked for in binary go after the JSON
    header (``Inference-Header-Content-Length``), each with ``parameters.binary_data_size``; the
    others carry ``data``. ``id`` is echoed only when the request had one. An output asked for
    with ``classification: k`` is answered as Triton does: BYTES ``"<value>:<index>[:<label>]"``,
    the top k of each batch item (``labels`` when there is one per class)."""
    check_outputs(req.outputs, specs)
    tensors: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for spec, arr in zip(specs, outputs, strict=True):
        if req.outputs is not None and spec.name not in req.outputs:
            continue
        k = req.classification.get(spec.name)
        t: dict[str, Any] = {"name": spec.name}
        if k is not None:
            classes = _top_classes(arr, k, labels)
            t.update(datatype="BYTES", shape=[len(classes), len(classes[0]) if classes else 0])
            if req.wants_binary(spec.name):
                raw = b"".join(struct.pack("<I", len(c)) + c for row in classes for c in row)
                t["parameters"] = {"binary_data_size": len(raw)}
                chunks.append(raw)
            else:
                t["data"] = [c.decode() for row in classes for c in row]
        elif req.wants_binary(spec.name) and datatype_of(arr.dtype) != "BYTES":
            raw = np.ascontiguousarray(arr).tobytes()
            t.update(datatype=datatype_of(arr.dtype), shape=list(arr.shape),
                     parameters={"binary_data_size": len(raw)})
            chunks.append(raw)
        else:
            t.update(datatype=datatype_of(arr.dtype), shape=list(arr.shape), data=_flat(arr))
        tensors.append(t)
    payload: dict[str, Any] = {"model_name": model_name, "model_version": str(model_version)}
    if req.id is not None:
        payload["id"] = req.id
    payload["outputs"] = tensors
    head = json_dumps(payload)
    if not chunks:
        return head, {"Content-Type": "application/json"}
    return b"".join([head, *chunks]), {"Content-Type": "application/octet-stream",
                                       "Inference-Header-Content-Length": str(len(head))}
