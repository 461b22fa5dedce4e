"""Backends and the explicit registry that maps model formats to them.

Each backend lives in its own module and imports its library only when it loads a model, so
listing or choosing backends never imports LiteRT, onnxruntime or OpenCV.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .._errors import BackendError, BackendUnavailableError
from ._base import Backend, BackendOptions, TensorInfo, guess_layout
from .litert import LiteRTBackend
from .onnxruntime import OnnxRuntimeBackend
from .opencv_dnn import OpenCVDnnBackend

__all__ = [
    "BACKENDS",
    "BACKEND_NAMES",
    "DEFAULT_ORDER",
    "Backend",
    "BackendOptions",
    "TensorInfo",
    "backends_for",
    "get_backend",
    "guess_layout",
    "load_backend",
]

BACKENDS: dict[str, type[Backend]] = {
    LiteRTBackend.name: LiteRTBackend,
    OnnxRuntimeBackend.name: OnnxRuntimeBackend,
    OpenCVDnnBackend.name: OpenCVDnnBackend,
}

#: every backend's name: the one list the CLI's choices, config validation and profile checks use
BACKEND_NAMES: tuple[str, ...] = tuple(BACKENDS)

#: used when no device profile says otherwise
DEFAULT_ORDER: tuple[str, ...] = BACKEND_NAMES


def get_backend(name: str) -> type[Backend]:
    try:
        return BACKENDS[name]
    except KeyError:
        raise BackendError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}") from None


def backends_for(fmt: str, order: Sequence[str] | None = None) -> list[type[Backend]]:
    """Backends able to run ``fmt``, in ``order`` (a profile's preference) then registry order."""
    names = list(order or DEFAULT_ORDER) + [n for n in BACKENDS if n not in (order or DEFAULT_ORDER)]
    return [BACKENDS[n] for n in names if n in BACKENDS and fmt in BACKENDS[n].formats]


def load_backend(
    model_path: Path,
    fmt: str,
    options: BackendOptions,
    *,
    backend: str | None = None,
    order: Sequence[str] | None = None,
) -> Backend:
    """Load with the named backend, or the first installed one for ``fmt`` in ``order``."""
    if backend is not None:
        cls = get_backend(backend)
        if fmt not in cls.formats:
            raise BackendError(f"backend {backend!r} cannot run {fmt} models; it runs {', '.join(cls.formats)}")
        return cls.load(model_path, options)
    candidates = backends_for(fmt, order)
    if not candidates:
        raise BackendError(f"no backend runs {fmt} models")
    missing: list[str] = []
    for cls in candidates:
        if not cls.available():
            missing.append(f"{cls.name} ({cls.install_hint})")
            continue
        try:
            return cls.load(model_path, options)
        except BackendUnavailableError as exc:
            missing.append(f"{cls.name} ({exc})")
    raise BackendUnavailableError(f"no backend for {fmt} is installed; install one of: " + "; ".join(missing))
