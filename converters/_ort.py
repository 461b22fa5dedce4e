"""onnxruntime helpers: its Python errors share no base class, so they are listed once here."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from ._deps import require

__all__ = ["first_line", "ort_errors", "ort_session"]

_NAMES = ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "EngineError", "RuntimeException",
          "InvalidProtobuf", "ModelLoaded", "NotImplemented", "InvalidGraph", "EPFail")


@functools.cache
def ort_errors() -> tuple[type[BaseException], ...]:
    require("onnxruntime", "running ONNX models")
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    found = tuple(c for c in (getattr(state, n, None) for n in _NAMES) if isinstance(c, type))
    return (*found, RuntimeError, ValueError)


def ort_session(model: str | Path | bytes, threads: int | None = 1) -> Any:
    """A CPU session; raises the errors in :func:`ort_errors`."""
    ort = require("onnxruntime", "running ONNX models")
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, sess_options=so, providers=["CPUExecutionProvider"])


def first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
