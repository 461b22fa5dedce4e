"""The service's Prometheus metrics, through prometheus_client, correct with several workers.

One process (``edge cloud serve``, ``--workers 1``, tests): each ``MetricsRegistry`` has its own
``CollectorRegistry`` with the service's metrics and the standard ``process_*`` metrics.

Several worker processes (``edge cloud serve --workers N``): a scrape reaches one worker, so
per-process numbers would jump between workers and counters would go backwards. ``edge cloud
serve`` then sets ``PROMETHEUS_MULTIPROC_DIR`` to a fresh directory before the workers start;
prometheus_client's multiprocess mode keeps every worker's values in memory-mapped files there,
and ``/metrics`` (whichever worker answers) adds them up: counters and histograms summed over
every worker that ever ran (a restarted worker's counts are kept), ``edge_models_loaded`` summed
over live workers. The ``process_*`` metrics cannot be added up (two workers' resident memory is
not one process's): they come once per live worker, labelled ``worker="<pid>"``, read from
``/proc/<pid>`` by the worker that answers the scrape. A worker that exits is marked dead
(``multiprocess.mark_process_dead``) on its way out, and any worker that vanished without
saying so (SIGKILL) at the next scrape.

Anyone running ``uvicorn --workers N cloud_sync.service:create_app_from_env`` directly must set
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory the same way, before uvicorn starts.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

__all__ = ["MULTIPROC_ENV", "MetricsRegistry", "clean_multiprocess_dir", "multiprocess_dir"]

log = logging.getLogger(__name__)

#: prometheus_client's variable: where the workers' metric files live
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_DB_FILE = re.compile(r"_(\d+)\.db$")

# The *_created samples double the exposition and multiprocess mode has none: off in both modes.
disable_created_metrics()


def multiprocess_dir() -> Path | None:
    """The multiprocess directory when prometheus_client runs in multiprocess mode, else None.

    The mode is fixed when prometheus_client is imported (it picks its value class then), so the
    variable alone is not enough: set after the import, it would make ``/metrics`` read files
    nothing writes."""
    d = os.environ.get(MULTIPROC_ENV)
    if not d:
        return None
    if not getattr(values.ValueClass, "_multiprocess", False):
        log.warning("%s is set but prometheus_client was imported before it; metrics stay per process",
                    MULTIPROC_ENV)
        return None
    return Path(d)


def clean_multiprocess_dir(path: Path) -> None:
    """Empty (or create) a multiprocess directory before the workers start: files of an earlier
    run would otherwise be added to this one's counters."""
    path.mkdir(parents=True, exist_ok=True)
    for f in path.glob("*.db"):
        f.unlink(missing_ok=True)


class _Labelled:
    def __init__(self, metric: Counter | Gauge | Histogram, labelnames: Sequence[str]) -> None:
        self._metric = metric
        self._labelled = bool(labelnames)

    def _child(self, labels: dict[str, str]) -> Counter | Gauge | Histogram:
        return self._metric.labels(**labels) if self._labelled else self._metric


class _Counter(_Labelled):
    def inc(self, amount: float = 1.0, **labels: str) -> None:
        child = self._child(labels)
        assert isinstance(child, Counter)
        child.inc(amount)


class _Gauge(_Labelled):
    def set(self, value: float, **labels: str) -> None:
        child = self._child(labels)
        assert isinstance(child, Gauge)
        child.set(value)


class _Histogram(_Labelled):
    def observe(self, value: float, **labels: str) -> None:
        child = self._child(labels)
        assert isinstance(child, Histogram)
        child.observe(value)


class WorkerProcessCollector(Collector):
    """The standard ``process_*`` metrics of every live worker, labelled ``worker="<pid>"``; the
    workers are the processes with metric files in the multiprocess directory. Workers found dead
    are marked so (their live gauges drop out of the sums)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        for pid in sorted(self._pids()):
            if not _alive(pid):
                with contextlib.suppress(OSError):
                    multiprocess.mark_process_dead(pid, str(self.path))
                continue
            for fam in ProcessCollector(pid=_constant(pid), registry=None).collect():
                out = merged.get(fam.name)
                if out is None:
                    out = merged[fam.name] = Metric(fam.name, fam.documentation, fam.type)
                for s in fam.samples:
                    out.add_sample(s.name, {**s.labels, "worker": str(pid)}, s.value)
        return list(merged.values())

    def _pids(self) -> set[int]:
        pids = set()
        for f in self.path.glob("*.db"):
            m = _DB_FILE.search(f.name)
            if m:
                pids.add(int(m.group(1)))
        return pids


def _constant(pid: int) -> Callable[[], int]:
    return lambda: pid


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")  # a zombie has exited; its parent just has not reaped it


class MetricsRegistry:
    """The service's metrics (one per ``Service``). Labels are bounded: routes by template,
    models by registry name, error codes from the service's own list."""

    def __init__(self) -> None:
        self.multiprocess_dir = multiprocess_dir()
        # each instance its own registry: tests build several apps in one process
        self.registry = CollectorRegistry(auto_describe=True)
        lat = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
        self.http_requests = self._counter("edge_http_requests", "HTTP requests by route and status",
                                           ("method", "route", "status"))
        self.http_latency = self._histogram("edge_http_request_duration_seconds", "HTTP request latency by route",
                                            ("route",), lat)
        self.inferences = self._counter("edge_inference_items", "items inferred, by model", ("model",))
        self.inference_errors = self._counter("edge_inference_errors",
                                              "inference requests (infer, classify) that failed, by model and "
                                              "error code", ("model", "code"))
        self.batch_size = self._histogram("edge_inference_batch_size", "items per backend batch", ("model",),
                                          (1, 2, 4, 8, 16, 32, 64))
        self.queue_wait = self._histogram("edge_inference_queue_seconds", "time an item waited for its batch",
                                          (), lat)
        self.uploads = self._counter("edge_registry_uploads", "bundle uploads by result", ("result",))
        gauge = Gauge("edge_models_loaded", "models loaded for inference", registry=self.registry,
                      multiprocess_mode="livesum")
        self.loaded_models = _Gauge(gauge, ())
        if self.multiprocess_dir is None:
            ProcessCollector(registry=self.registry)
        else:
            # on the way out (a graceful stop or restart), drop this worker's live gauges
            atexit.register(_mark_dead, os.getpid(), str(self.multiprocess_dir))

    def _counter(self, name: str, help_: str, labels: Sequence[str]) -> _Counter:
        return _Counter(Counter(name, help_, labels, registry=self.registry), labels)

    def _histogram(self, name: str, help_: str, labels: Sequence[str], buckets: Sequence[float]) -> _Histogram:
        return _Histogram(Histogram(name, help_, labels, buckets=buckets, registry=self.registry), labels)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type: this process's metrics, or in
        multiprocess mode every worker's."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        reg = CollectorRegistry()
        multiprocess.MultiProcessCollector(reg, path=str(self.multiprocess_dir))
        reg.register(WorkerProcessCollector(self.multiprocess_dir))
        return generate_latest(reg), CONTENT_TYPE_LATEST


def _mark_dead(pid: int, path: str) -> None:
    if os.getpid() == pid:  # not in a forked child that inherited the hook
        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(pid, path)
