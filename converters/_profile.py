"""Where latency is measured: the device profile's backend and threads, or this machine's defaults."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

from edge_runtime.backends import backends_for, get_backend

from ._errors import ConversionError, MissingDependencyError

__all__ = ["MeasureOn", "resolve_measurement"]


@dataclass(frozen=True)
class MeasureOn:
    backend: str
    threads: int
    profile: str | None
    quantization: str | None = None


def resolve_measurement(fmt: str, *, profile: str | None, backend: str | None, threads: int | None) -> MeasureOn:
    order: list[str] | None = None
    prof_threads: int | None = None
    prof_quant: str | None = None
    if profile is not None:
        try:
            dp = importlib.import_module("device_profiles")
        except ImportError as exc:
            raise MissingDependencyError(f"--profile {profile} needs the device_profiles package, which is not "
                                         "importable; install edge-runtime or drop --profile") from exc
        loader = getattr(dp, "load_profile", None) or getattr(dp, "profile_for", None)
        if loader is None:
            raise MissingDependencyError("device_profiles has no load_profile(); update edge-runtime")
        profile_error = getattr(dp, "ProfileError", LookupError)
        try:
            prof = loader(profile)
        except (profile_error, LookupError, ValueError, OSError) as exc:
            raise ConversionError(f"device profile {profile!r}: {exc}") from exc
        order = list(getattr(prof, "backends", []) or [])
        prof_threads = getattr(prof, "threads", None)
        q = getattr(prof, "quantization", None)
        prof_quant = q if isinstance(q, str) else (q[0] if isinstance(q, list | tuple) and q else None)
    if backend is not None:
        cls = get_backend(backend)
        if fmt not in cls.formats:
            raise ConversionError(f"backend {backend!r} cannot run {fmt} models; it runs {', '.join(cls.formats)}")
        name = backend
    else:
        usable = [c for c in backends_for(fmt, order) if c.available() and c.reads_io]
        if order:
            # The profile's own order first; a backend it does not list is not where it will run.
            listed = [c for c in usable if c.name in order]
            usable = listed or usable
        if not usable:
            raise MissingDependencyError(f"no backend to run {fmt} models is installed; pip install "
                                         f"'edge-runtime[{'tflite' if fmt == 'tflite' else 'onnx'}]'")
        name = usable[0].name
    cores = os.cpu_count() or 1
    # A profile written for an 8-core phone would oversubscribe this machine; cap at its cores.
    n = threads or min(prof_threads or cores, cores)
    return MeasureOn(name, int(n), profile, prof_quant)
