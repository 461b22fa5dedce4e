"""Latency and throughput of a bundle, side by side with the raw backend library in the same run."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._model import Model
from .backends import BackendOptions

__all__ = ["BenchResult", "bench_model", "peak_rss_mb", "synthetic_input"]


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB."""
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return ru / (1024 * 1024) if sys.platform == "darwin" else ru / 1024


def synthetic_input(model: Model, seed: int = 0) -> Any:
    """A deterministic input of the right kind: an RGB image, or a row of numbers."""
    rng = np.random.default_rng(seed)
    if model.manifest.preprocess.kind == "image":
        return rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    spec = model.manifest.inputs[0]
    n = int(np.prod([d for d in spec.shape[1:] if d > 0])) or 1
    return rng.normal(size=n).astype(np.float32)


def _stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean()),
            "throughput_per_s": float(1000.0 / a.mean()) if a.mean() > 0 else 0.0}


@dataclass
class BenchResult:
    model: str
    version: int
    backend: str
    library: str
    threads: int | None
    runs: int
    warmup: int
    runtime: dict[str, float]
    raw: dict[str, float]
    predict: dict[str, float]
    peak_rss_mb: float

    @property
    def ratio_p50(self) -> float:
        return self.runtime["p50_ms"] / self.raw["p50_ms"] if self.raw["p50_ms"] > 0 else float("nan")

    @property
    def ratio_mean(self) -> float:
        return self.runtime["mean_ms"] / self.raw["mean_ms"] if self.raw["mean_ms"] > 0 else float("nan")

    def as_dict(self) -> dict[str, Any]:
        r = lambda d: {k: round(v, 4) for k, v in d.items()}  # noqa: E731
        return {"model": self.model, "version": self.version, "backend": self.backend, "library": self.library,
                "threads": self.threads, "runs": self.runs, "warmup": self.warmup,
                "runtime_infer": r(self.runtime), "raw_backend": r(self.raw), "runtime_predict": r(self.predict),
                "ratio_p50": round(self.ratio_p50, 4), "ratio_mean": round(self.ratio_mean, 4),
                "peak_rss_mb": round(self.peak_rss_mb, 1)}


def bench_model(model: Model, *, runs: int = 200, warmup: int = 20, x: Any = None,
                progress: Callable[[int], None] | None = None) -> BenchResult:
    """Time ``model.infer`` against the raw library call on the same tensor: the same work, so
    the ratio is the runtime's own overhead. A full ``predict`` (preprocess, infer, postprocess
    to labelled top-k) is timed as a third row.

    The two are interleaved in blocks so that frequency scaling or a noisy neighbour hits both
    alike; a short pause after each block lets the other engine's thread pool stop spinning,
    which would otherwise steal a core from the one being timed.
    """
    x = synthetic_input(model) if x is None else x
    tensors = model.preprocess(x)
    opts = BackendOptions(threads=model.backend.threads, inputs=tuple(model.manifest.inputs),
                          outputs=tuple(model.manifest.outputs))
    raw_call = type(model.backend).raw(model.bundle.model_path, opts)
    for _ in range(warmup):
        raw_call(tensors)
        model.infer(tensors)
    rt_ms: list[float] = []
    raw_ms: list[float] = []
    pc = time.perf_counter
    block = 25
    done = 0
    infer = model.infer
    while done < runs:
        n = min(block, runs - done)
        time.sleep(0.005)
        for _ in range(n):
            t0 = pc()
            infer(tensors)
            rt_ms.append((pc() - t0) * 1000)
        time.sleep(0.005)
        for _ in range(n):
            t0 = pc()
            raw_call(tensors)
            raw_ms.append((pc() - t0) * 1000)
        done += n
        if progress:
            progress(n)
    pred_ms = []
    for _ in range(max(10, runs // 4)):
        t0 = pc()
        model.predict(x)
        pred_ms.append((pc() - t0) * 1000)
    return BenchResult(model.name, model.version, model.backend_name, model.backend.library_version(),
                       model.backend.threads, runs, warmup, _stats(rt_ms), _stats(raw_ms), _stats(pred_ms),
                       peak_rss_mb())
