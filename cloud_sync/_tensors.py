"""The Open Inference Protocol's tensor datatypes and the checks on a JSON tensor's numbers, shared by
the service's ``/v2`` routes and the hosts without a web framework (queue workers, serverless).

Nothing here imports FastAPI: a worker or a Lambda function installs the runtime alone. Each caller
wraps :class:`TensorDataError` into its own error type (an HTTP 400, a dead-lettered message).
"""

from __future__ import annotations

import numpy as np

__all__ = ["DATATYPES", "MAX_ELEMENTS", "TensorDataError", "convert_data", "datatype_of"]

#: KServe v2 datatype -> numpy dtype
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64), "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
}
_BY_DTYPE = {v: k for k, v in DATATYPES.items()}
#: the most elements one request tensor may declare (64 Mi: a 4K RGB image batch of a few)
MAX_ELEMENTS = 64 * 1024 * 1024


class TensorDataError(ValueError):
    """A tensor's data does not fit its datatype (wrong kind of values, out of range, overflow)."""


def datatype_of(dtype: str | np.dtype) -> str:
    dt = np.dtype(dtype)
    try:
        return _BY_DTYPE[dt]
    except KeyError:
        return "BYTES"


def convert_data(raw: np.ndarray, want: np.dtype, name: str) -> np.ndarray:
    """``raw`` (as NumPy read the JSON numbers) as ``want``, refusing what would change the values:
    non-numbers, floats for an integer type, integers out of range, finite values that overflow."""
    kind = raw.dtype.kind
    if raw.size == 0:
        return raw.astype(want)
    if want.kind == "b":
        if kind != "b":
            raise TensorDataError(f"input {name!r} is BOOL; data must be true/false")
        return raw
    if kind not in "biuf":
        raise TensorDataError(f"input {name!r}: data must be numbers, got {raw.dtype.name} values")
    if want.kind in "iu":
        if kind == "f":
            raise TensorDataError(f"input {name!r} is {datatype_of(want)}; data must be integers")
        info = np.iinfo(want)
        lo, hi = int(raw.min()), int(raw.max())
        if lo < info.min or hi > info.max:
            raise TensorDataError(f"input {name!r}: values {lo}..{hi} do not fit {datatype_of(want)} "
                                  f"({info.min}..{info.max})")
        return raw.astype(want)
    with np.errstate(over="ignore"):
        out = raw.astype(want)
    if not np.isfinite(out).all() and np.isfinite(raw.astype(np.float64)).all():
        raise TensorDataError(f"input {name!r}: values overflow {datatype_of(want)}")
    return out
