"""LiteRT backend: ai-edge-litert, else tflite-runtime, else tensorflow.lite."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._errors import BackendUnavailableError, InferenceError, InputError, ModelError, first_line
from .._manifest import Quantization
from ._base import Backend, BackendOptions, RawCall, TensorInfo

__all__ = ["LiteRTBackend"]

# In order of preference: the maintained runtime first; tflite-runtime does not load with NumPy 2.
_CANDIDATES: tuple[tuple[str, str], ...] = (
    ("ai_edge_litert.interpreter", "ai-edge-litert"),
    ("tflite_runtime.interpreter", "tflite-runtime"),
    ("tensorflow.lite.python.interpreter", "tensorflow"),
)


class LiteRTBackend(Backend):
    name: ClassVar[str] = "litert"
    formats: ClassVar[tuple[str, ...]] = ("tflite",)
    modules: ClassVar[tuple[str, ...]] = ("ai_edge_litert", "tflite_runtime", "tensorflow")
    install_hint: ClassVar[str] = "pip install 'edge-runtime[tflite]'  (installs ai-edge-litert)"
    extra: ClassVar[str] = "tflite"
    no_wheel: ClassVar[dict[str, str]] = {"armv7l": "tflite-runtime"}

    def __init__(self, interpreter: Any, library: str, version: str | None, threads: int | None) -> None:
        self._it = interpreter
        self._library = library
        #: None: looked up on first ``library_version()`` (importlib.metadata scans every installed
        #: distribution: ~3 ms that `edge run` does not need)
        self._version = version
        self.threads = threads
        ins, outs = interpreter.get_input_details(), interpreter.get_output_details()
        self._in_idx = [d["index"] for d in ins]
        self._out_idx = [d["index"] for d in outs]
        self.inputs = [_info(d) for d in ins]
        self.outputs = [_info(d) for d in outs]
        self._set = interpreter.set_tensor
        self._get = interpreter.get_tensor
        self._invoke = interpreter.invoke

    @classmethod
    def load(cls, model_path: Path, options: BackendOptions) -> LiteRTBackend:
        interp_cls, library, version = _import_interpreter()
        try:
            it = interp_cls(model_path=str(model_path), num_threads=options.threads)
            it.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{model_path}: LiteRT cannot load it: {first_line(exc)}") from exc
        return cls(it, library, version, options.threads)

    @classmethod
    def raw(cls, model_path: Path, options: BackendOptions) -> RawCall:
        interp_cls, _, _ = _import_interpreter()
        it = interp_cls(model_path=str(model_path), num_threads=options.threads)
        it.allocate_tensors()
        ins = [d["index"] for d in it.get_input_details()]
        outs = [d["index"] for d in it.get_output_details()]

        def call(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
            for i, a in zip(ins, arrays, strict=True):
                it.set_tensor(i, a)
            it.invoke()
            return [it.get_tensor(o) for o in outs]

        return call

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        if len(inputs) != len(self._in_idx):
            raise InputError(f"model takes {len(self._in_idx)} input(s), got {len(inputs)}")
        try:
            for idx, arr in zip(self._in_idx, inputs, strict=True):
                self._set(idx, arr)
            self._invoke()
            return [self._get(i) for i in self._out_idx]
        except ValueError as exc:
            # set_tensor reports shape/dtype mismatches as ValueError.
            raise InputError(f"input does not fit the model: {first_line(exc)}") from exc
        except RuntimeError as exc:
            raise InferenceError(f"LiteRT failed while running the model: {first_line(exc)}") from exc

    def resize_input(self, index: int, shape: Sequence[int]) -> None:
        self._it.resize_tensor_input(self._in_idx[index], list(shape))
        self._it.allocate_tensors()
        self.inputs = [_info(d) for d in self._it.get_input_details()]
        self.outputs = [_info(d) for d in self._it.get_output_details()]

    def library_version(self) -> str:
        if self._version is None:
            self._version = _dist_version(self._library)
        return f"{self._library} {self._version}"


def _import_interpreter() -> tuple[Any, str, None]:
    for module, dist in _CANDIDATES:
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        interp = getattr(mod, "Interpreter", None)
        if interp is None:
            continue
        return interp, dist, None  # the version: see LiteRTBackend.library_version
    raise BackendUnavailableError(
        f"the litert backend needs ai-edge-litert (or tflite-runtime / tensorflow): {LiteRTBackend.install_hint}"
    )


def _dist_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


def _info(d: dict[str, Any]) -> TensorInfo:
    sig = d.get("shape_signature")
    shape = tuple(int(x) for x in (sig if sig is not None and len(sig) else d["shape"]))
    scale, zp = d.get("quantization", (0.0, 0))
    q = Quantization(scale=float(scale), zero_point=int(zp)) if scale and scale > 0 else None
    return TensorInfo(name=str(d["name"]), shape=shape, dtype=np.dtype(d["dtype"]), quantization=q)

