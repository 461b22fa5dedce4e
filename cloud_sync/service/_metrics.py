"""A small Prometheus text-format registry (counters, gauges, histograms) with no dependency.

Each replica exposes its own numbers at ``/metrics``; Prometheus scrapes every replica and adds
them up, which is how per-process metrics are meant to work behind a load balancer.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from typing import TypeVar

__all__ = ["Counter", "Gauge", "Histogram", "MetricsRegistry"]

LabelKey = tuple[tuple[str, str], ...]


def _key(labels: dict[str, str]) -> LabelKey:
    return tuple(sorted(labels.items()))


def _fmt_labels(key: LabelKey, extra: tuple[tuple[str, str], ...] = ()) -> str:
    items = key + extra
    if not items:
        return ""
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in items)
    return "{" + body + "}"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v: float) -> str:
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help_: str) -> None:
        self.name, self.help = name, help_
        self._lock = threading.Lock()

    def render(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}", *self._samples()]

    def _samples(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_: str) -> None:
        super().__init__(name, help_)
        self._values: dict[LabelKey, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        k = _key(labels)
        with self._lock:
            self._values[k] = self._values.get(k, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(_key(labels), 0.0)

    def _samples(self) -> list[str]:
        with self._lock:
            return [f"{self.name}{_fmt_labels(k)} {_num(v)}" for k, v in sorted(self._values.items())]


class Gauge(Counter):
    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        with self._lock:
            self._values[_key(labels)] = value


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help_: str, buckets: Sequence[float]) -> None:
        super().__init__(name, help_)
        self.buckets = sorted(buckets)
        self._data: dict[LabelKey, tuple[list[int], list[float]]] = {}

    def observe(self, value: float, **labels: str) -> None:
        k = _key(labels)
        i = bisect.bisect_left(self.buckets, value)
        with self._lock:
            counts, sums = self._data.setdefault(k, ([0] * (len(self.buckets) + 1), [0.0, 0.0]))
            counts[i] += 1
            sums[0] += value
            sums[1] += 1

    def _samples(self) -> list[str]:
        out: list[str] = []
        with self._lock:
            for k, (counts, sums) in sorted(self._data.items()):
                acc = 0
                for b, c in zip([*self.buckets, float("inf")], counts, strict=True):
                    acc += c
                    le = "+Inf" if b == float("inf") else _num(b)
                    out.append(f"{self.name}_bucket{_fmt_labels(k, (('le', le),))} {acc}")
                out.append(f"{self.name}_sum{_fmt_labels(k)} {_num(sums[0])}")
                out.append(f"{self.name}_count{_fmt_labels(k)} {_num(sums[1])}")
        return out


_M = TypeVar("_M", bound=_Metric)


class MetricsRegistry:
    def __init__(self) -> None:
        self._metrics: list[_Metric] = []
        lat = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
        self.http_requests = self._add(Counter("edge_http_requests_total", "HTTP requests by route and status"))
        self.http_latency = self._add(Histogram("edge_http_request_duration_seconds",
                                                "HTTP request latency by route", lat))
        self.inferences = self._add(Counter("edge_inference_items_total", "items inferred, by model"))
        self.inference_errors = self._add(Counter("edge_inference_errors_total", "failed inference items"))
        self.batch_size = self._add(Histogram("edge_inference_batch_size", "items per backend batch",
                                              (1, 2, 4, 8, 16, 32, 64)))
        self.queue_wait = self._add(Histogram("edge_inference_queue_seconds",
                                              "time an item waited for its batch", lat))
        self.uploads = self._add(Counter("edge_registry_uploads_total", "bundle uploads by result"))
        self.loaded_models = self._add(Gauge("edge_models_loaded", "models loaded for inference"))

    def _add(self, m: _M) -> _M:
        self._metrics.append(m)
        return m

    def render(self) -> str:
        lines: list[str] = []
        for m in self._metrics:
            lines.extend(m.render())
        return "\n".join(lines) + "\n"
