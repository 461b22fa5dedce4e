"""The interface every backend implements.

Backends import their library inside :meth:`Backend.load`, never at module import, so that
importing ``edge_runtime`` stays light and a device only needs the library it actually uses.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from .._manifest import Quantization, TensorSpec

__all__ = ["Backend", "BackendOptions", "RawCall", "TensorInfo", "guess_layout"]

RawCall = Callable[[Sequence[np.ndarray]], list[np.ndarray]]


@dataclass(frozen=True)
class TensorInfo:
    """An input or output as the loaded model reports it (-1 for a dynamic dimension)."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    quantization: Quantization | None = None

    def to_spec(self) -> TensorSpec:
        return TensorSpec(
            name=self.name,
            shape=list(self.shape),
            dtype=self.dtype.name,
            layout=guess_layout(self.shape),
            quantization=self.quantization,
        )

    @classmethod
    def from_spec(cls, spec: TensorSpec) -> TensorInfo:
        return cls(spec.name, tuple(spec.shape), np.dtype(spec.dtype), spec.quantization)


def guess_layout(shape: Sequence[int]) -> str:
    if len(shape) == 4:
        if shape[3] in (1, 3, 4) and shape[1] not in (1, 3, 4):
            return "NHWC"
        if shape[1] in (1, 3, 4):
            return "NCHW"
        return "NHWC" if shape[3] in (1, 3, 4) else "other"
    if len(shape) == 2:
        return "NC"
    return "other"


@dataclass(frozen=True)
class BackendOptions:
    threads: int | None = None
    # Specs from a bundle manifest, for backends that cannot read them from the model (OpenCV).
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()


class Backend(ABC):
    """Load a model file, describe it, run batches of arrays, close."""

    #: registry name, e.g. ``litert``
    name: ClassVar[str]
    #: model formats it can run
    formats: ClassVar[tuple[str, ...]]
    #: top-level modules it needs; the first importable one is used
    modules: ClassVar[tuple[str, ...]]
    #: what to run when none of them is installed
    install_hint: ClassVar[str]
    #: the edge-runtime extra that installs it (what a device install plan asks pip for)
    extra: ClassVar[str]
    #: CPU architectures (``uname -m``) for which its library publishes no wheel, mapped to a pip package that
    #: may stand in there ("" for none): a 32-bit Raspberry Pi gets neither ai-edge-litert nor onnxruntime
    no_wheel: ClassVar[dict[str, str]] = {}
    #: whether it reads input/output specs from the model file; OpenCV DNN cannot, and takes them from the
    #: manifest, so it can neither describe a bare model nor be checked against a manifest
    reads_io: ClassVar[bool] = True

    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    threads: int | None

    @classmethod
    def available(cls) -> bool:
        """Whether the library is installed, checked without importing it."""
        return any(_module_exists(m) for m in cls.modules)

    @classmethod
    @abstractmethod
    def load(cls, model_path: Path, options: BackendOptions) -> Backend:
        """Load ``model_path``; raise BackendUnavailableError or ModelError."""

    @classmethod
    @abstractmethod
    def raw(cls, model_path: Path, options: BackendOptions) -> RawCall:
        """The library called directly, as a user would without this runtime: the baseline that
        `edge bench` and the benchmarks compare against."""

    @abstractmethod
    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run one batch; arrays must already have the model's dtype and shape."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free native resources; most libraries do so on garbage collection."""

    def library_version(self) -> str:
        return "unknown"


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
