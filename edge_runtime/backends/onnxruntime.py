"""onnxruntime backend (CPU execution provider)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._errors import BackendUnavailableError, InferenceError, InputError, ModelError, first_line
from ._base import Backend, BackendOptions, RawCall, TensorInfo

__all__ = ["OnnxRuntimeBackend"]

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


class OnnxRuntimeBackend(Backend):
    name: ClassVar[str] = "onnxruntime"
    formats: ClassVar[tuple[str, ...]] = ("onnx",)
    modules: ClassVar[tuple[str, ...]] = ("onnxruntime",)
    install_hint: ClassVar[str] = "pip install 'edge-runtime[onnx]'  (installs onnxruntime)"
    extra: ClassVar[str] = "onnx"
    no_wheel: ClassVar[dict[str, str]] = {"armv7l": ""}

    def __init__(self, session: Any, errors: tuple[type[BaseException], ...], version: str,
                 threads: int | None) -> None:
        self._sess = session
        self._errors = errors
        self._version = version
        self.threads = threads
        self.inputs = [_info(x) for x in session.get_inputs()]
        self.outputs = [_info(x) for x in session.get_outputs()]
        self._in_names = [i.name for i in self.inputs]
        self._out_names = [o.name for o in self.outputs]
        # InferenceSession.run checks the feed's names and offers an EP fallback in Python before
        # calling its C++ session (``_sess``) with the same arguments: ~1.5 us per call, a quarter
        # of a small tabular model's run. The feed here always has the model's own input names and
        # only the CPU provider is used, so the C++ call is taken directly when it is there.
        inner = getattr(session, "_sess", None)
        self._run = inner.run if inner is not None and hasattr(inner, "run") else None

    @classmethod
    def load(cls, model_path: Path, options: BackendOptions) -> OnnxRuntimeBackend:
        try:
            import onnxruntime as ort
            from onnxruntime.capi import onnxruntime_pybind11_state as state
        except ImportError as exc:
            raise BackendUnavailableError(f"the onnxruntime backend needs onnxruntime: {cls.install_hint}") from exc
        # onnxruntime's pybind errors derive from Exception directly; name them so that only
        # they (and the Python errors it raises) are wrapped, never a bug of ours.
        names = ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "EngineError", "RuntimeException",
                 "InvalidProtobuf", "ModelLoaded", "NotImplemented", "InvalidGraph", "EPFail")
        found: list[type[BaseException]] = [
            c for c in (getattr(state, n, None) for n in names) if isinstance(c, type) and issubclass(c, BaseException)
        ]
        errors: tuple[type[BaseException], ...] = (*found, RuntimeError, ValueError)
        so = ort.SessionOptions()
        if options.threads:
            so.intra_op_num_threads = options.threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            sess = ort.InferenceSession(str(model_path), sess_options=so, providers=["CPUExecutionProvider"])
        except errors as exc:
            raise ModelError(f"{model_path}: onnxruntime cannot load it: {first_line(exc)}") from exc
        return cls(sess, errors, ort.__version__, options.threads)

    @classmethod
    def raw(cls, model_path: Path, options: BackendOptions) -> RawCall:
        import onnxruntime as ort

        so = ort.SessionOptions()
        if options.threads:
            so.intra_op_num_threads = options.threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(model_path), sess_options=so, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]

        def call(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
            return list(sess.run(None, dict(zip(names, arrays, strict=True))))

        return call

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        if len(inputs) != len(self._in_names):
            raise InputError(f"model takes {len(self._in_names)} input(s), got {len(inputs)}")
        names = self._in_names
        feed = {names[0]: inputs[0]} if len(names) == 1 else dict(zip(names, inputs, strict=True))
        try:
            if self._run is not None:
                return list(self._run(self._out_names, feed, None))
            return list(self._sess.run(self._out_names, feed))
        except self._errors as exc:
            msg = first_line(exc)
            if "dimension" in msg.lower() or "shape" in msg.lower() or "type" in msg.lower():
                raise InputError(f"input does not fit the model: {msg}") from exc
            raise InferenceError(f"onnxruntime failed while running the model: {msg}") from exc

    def library_version(self) -> str:
        return f"onnxruntime {self._version}"


def _info(arg: Any) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape)
    dtype = _ORT_TYPES.get(arg.type)
    if dtype is None:
        raise ModelError(f"tensor {arg.name!r} has type {arg.type}, which the runtime does not handle")
    return TensorInfo(name=arg.name, shape=shape, dtype=np.dtype(dtype))

