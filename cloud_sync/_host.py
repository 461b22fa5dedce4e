"""One bundle hosted outside the HTTP service: the queue worker and the serverless handlers.

A :class:`BundleHost` loads a bundle once and turns one request body into one record
(``edge_runtime.make_record``), the same record ``edge run`` and the service give. A body is either

- an encoded image (JPEG, PNG, ... whatever Pillow reads), decoded as ``edge_runtime.load_image``
  decodes files, then preprocessed from the manifest; or
- a tensor in the Open Inference Protocol's JSON form (KServe v2 REST), one frame (batch 1)::

      {"id": "r1", "inputs": [{"name": "input", "datatype": "UINT8", "shape": [1, 224, 224, 3],
                               "data": [...]}]}

  sent as ``application/json`` (or any body starting with ``{``). The tensor skips preprocessing:
  it is the model's own input, checked against the manifest's name, datatype and shape.

Bad input of any kind raises :class:`RequestError` with a short ``code`` and a message naming the
problem; the caller decides what that means (a dead-letter queue, an HTTP 400).

The JSON tensor checks follow ``cloud_sync.service``'s parser (same messages and codes) but live
here, so that a worker or a Lambda function does not import FastAPI and SQLAlchemy to read a list
of numbers (that import costs seconds of cold start and the ``[cloud]`` extra).
"""

from __future__ import annotations

import io
import json
import logging
import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import (
    MAX_IMAGE_PIXELS,
    EdgeError,
    Model,
    Prediction,
    PublicKey,
    Record,
    TensorSpec,
    error_record,
    make_record,
)
from edge_runtime.sources import Frame

from ._errors import CloudError
from ._tensors import DATATYPES, MAX_ELEMENTS, TensorDataError, convert_data, datatype_of

__all__ = ["MAX_BODY_BYTES", "BundleHost", "HostError", "RequestError"]

log = logging.getLogger(__name__)

#: the largest request body a host reads (an image or a JSON tensor)
MAX_BODY_BYTES = 16 * 1024 * 1024

_orjson: Any
try:  # orjson parses the long number lists of image tensors several times faster ([cloud] extra)
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None


class HostError(CloudError):
    """The bundle cannot be hosted: it is missing, cannot be downloaded, verified or loaded."""


class RequestError(CloudError):
    """One request body cannot be answered: not an image, malformed JSON, a tensor of the wrong
    shape or datatype, too large. ``code`` is short and machine-readable (``bad_image``,
    ``bad_json``, ``bad_shape``, ``too_large`` ...)."""

    def __init__(self, message: str, *, code: str = "bad_request") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class BundleHost:
    """A loaded bundle answering request bodies with records. Thread-safe (one prediction at a time).

    >>> host = BundleHost.open("mobilenet-bundle/")                               # doctest: +SKIP
    >>> host.answer(Path("cat.png").read_bytes(), source="cat.png")["top_k"][0]  # doctest: +SKIP
    {'label': 'Egyptian cat', 'score': 0.79}
    """

    def __init__(self, model: Model) -> None:
        self.model = model
        self._lock = threading.Lock()

    @classmethod
    def open(cls, bundle: str | Path, *, backend: str | None = None, threads: int | None = None,
             pubkey: PublicKey | list[PublicKey] | None = None) -> BundleHost:
        try:
            model = Model.load(bundle, backend=backend, threads=threads, pubkey=pubkey)
        except EdgeError as exc:
            raise HostError(f"cannot load the bundle {bundle}: {exc}") from exc
        log.info("hosting %s v%s on %s", model.name, model.version, model.backend_name)
        return cls(model)

    @property
    def info(self) -> dict[str, Any]:
        m = self.model
        return {"name": m.name, "version": m.version, "backend": m.backend_name, "task": m.manifest.task,
                "inputs": [{"name": s.name, "datatype": datatype_of(s.dtype),
                            "shape": list(s.shape)} for s in m.manifest.inputs]}

    def answer(self, body: bytes, *, content_type: str | None = None, source: str = "request",
               frame: int = 0) -> Record:
        """The record for one request body; :class:`RequestError` when the body is bad."""
        if len(body) > MAX_BODY_BYTES:
            raise RequestError(f"the body is {len(body)} bytes, more than {MAX_BODY_BYTES}", code="too_large")
        if not body:
            raise RequestError("the body is empty (0 bytes)", code="empty_body")
        fr = Frame(index=frame, source=source)
        if is_json(body, content_type):
            tensor = parse_tensor(body, self.model.manifest.inputs)
            with self._lock:
                pred = self._run_tensor(tensor)
        else:
            image = decode_image(body)
            with self._lock:
                try:
                    pred = self.model.predict(image)
                except EdgeError as exc:
                    raise RequestError(f"the model cannot take this image: {exc}", code="bad_input") from exc
        return make_record(self.model, fr, pred)

    def error(self, exc: Exception, *, source: str = "request", frame: int = 0) -> Record:
        """The record saying why a request failed, for callers that wait on an answer."""
        return error_record(self.model, Frame(index=frame, source=source), str(exc))

    def _run_tensor(self, tensor: np.ndarray) -> Prediction:
        t0 = time.perf_counter()
        try:
            outs = self.model.infer([tensor])
            t1 = time.perf_counter()
            pred = self.model.postprocess(outs)
        except EdgeError as exc:
            raise RequestError(f"the model cannot take this tensor: {exc}", code="bad_input") from exc
        t2 = time.perf_counter()
        pred.latency_ms = {"preprocess": 0.0, "inference": round((t1 - t0) * 1000, 3),
                           "postprocess": round((t2 - t1) * 1000, 3), "total": round((t2 - t0) * 1000, 3)}
        return pred

    def close(self) -> None:
        self.model.close()


def is_json(body: bytes, content_type: str | None) -> bool:
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype == "application/json" or ctype.endswith("+json"):
        return True
    if ctype.startswith("image/"):
        return False
    return body[:64].lstrip()[:1] == b"{"


def decode_image(data: bytes) -> np.ndarray:
    """Decode like ``edge_runtime.load_image`` does for files: the same pixels wherever they came from."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise RequestError(f"the image is {im.width}x{im.height}, more than {MAX_IMAGE_PIXELS} pixels",
                                   code="too_large")
            return np.asarray(im.convert("RGB"))
    except UnidentifiedImageError as exc:
        raise RequestError("the body is not an image Pillow can read (JPEG, PNG, ...), and not an Open "
                           "Inference Protocol JSON tensor either", code="bad_image") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise RequestError(f"the image is corrupt or truncated ({exc})", code="bad_image") from exc


def parse_tensor(body: bytes, specs: list[TensorSpec]) -> np.ndarray:
    """The one input tensor of a single-input model from an OIP JSON request, batch 1."""
    try:
        doc = _orjson.loads(body) if _orjson is not None else json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:  # orjson.JSONDecodeError is a ValueError
        raise RequestError(f"the body is not valid JSON: {exc}", code="bad_json") from exc
    if not isinstance(doc, dict):
        raise RequestError("the JSON body must be an object with an 'inputs' list", code="bad_request")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError("'inputs' must be a non-empty list of tensors", code="bad_request")
    if len(specs) != 1:
        raise RequestError(f"the model takes {len(specs)} inputs; this host reads single-input models "
                           "(the cloud service's /v2 endpoint takes several)", code="unsupported")
    spec = specs[0]
    if len(inputs) != 1:
        raise RequestError(f"the model takes one input ({spec.name!r}); the request has {len(inputs)}",
                           code="bad_request")
    t = inputs[0]
    if not isinstance(t, dict):
        raise RequestError("inputs[0] must be an object", code="bad_request")
    name = t.get("name")
    if name != spec.name:
        raise RequestError(f"inputs[0]: unknown input {name!r}; the model takes {spec.name!r}", code="unknown_input")
    want = np.dtype(spec.dtype)
    datatype = t.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise RequestError(f"input {name!r}: datatype {datatype!r} is not one of {', '.join(DATATYPES)}",
                           code="bad_datatype")
    if DATATYPES[datatype] != want:
        raise RequestError(f"input {name!r} is {datatype_of(want)}, the request says {datatype}",
                           code="bad_datatype")
    shape = t.get("shape")
    if (not isinstance(shape, list) or not shape or
            not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise RequestError(f"input {name!r}: shape must be a non-empty list of non-negative integers",
                           code="bad_shape")
    exp = list(spec.shape)
    if len(shape) != len(exp) or any(e > 0 and g != e for g, e in zip(shape[1:], exp[1:], strict=True)):
        raise RequestError(f"input {name!r} takes shape {exp}, got {shape}", code="bad_shape")
    if shape[0] != 1:
        raise RequestError(f"input {name!r}: send one frame per request (batch 1), got batch {shape[0]}",
                           code="bad_shape")
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise RequestError(f"input {name!r}: {count} elements is more than {MAX_ELEMENTS}", code="too_large")
    data = t.get("data")
    if not isinstance(data, list):
        raise RequestError(f"input {name!r}: 'data' must be a list of numbers", code="bad_data")
    try:
        raw = np.asarray(data)
    except (ValueError, TypeError) as exc:
        raise RequestError(f"input {name!r}: data is ragged or not numeric ({exc})", code="bad_data") from exc
    if raw.size != count:
        raise RequestError(f"input {name!r}: shape {shape} needs {count} values, data has {raw.size}",
                           code="bad_shape")
    return _convert(raw, want, name).reshape(shape)


def _convert(raw: np.ndarray, want: np.dtype, name: str) -> np.ndarray:
    try:
        return convert_data(raw, want, name)
    except TensorDataError as exc:
        raise RequestError(str(exc), code="bad_data") from exc
