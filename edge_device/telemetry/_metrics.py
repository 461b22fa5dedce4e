"""What a device reports on ``edge/D/metrics``: latency percentiles, fps, CPU temperature, memory.

The outbox and connection parts of a metrics record are added by :class:`Telemetry`; this module
only watches records go by and reads the machine.
"""

from __future__ import annotations

import logging
import math
import resource
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["MetricsCollector", "cpu_temperature_c", "memory_info", "percentile"]

log = logging.getLogger(__name__)

_THERMAL = Path("/sys/class/thermal")
# Zone types that measure the CPU/SoC on the boards we run on (Raspberry Pi: cpu-thermal; x86: x86_pkg_temp).
_CPU_ZONE_HINTS = ("cpu", "soc", "x86_pkg", "k10temp", "coretemp")


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def cpu_temperature_c(root: Path = _THERMAL) -> float | None:
    """CPU temperature from the kernel's thermal zones, or None where there is none (containers, VMs)."""
    try:
        zones = sorted(root.glob("thermal_zone*"))
    except OSError:
        return None
    for zone in zones:
        try:
            kind = (zone / "type").read_text().strip().lower()
            if not any(h in kind for h in _CPU_ZONE_HINTS):
                continue
            return round(int((zone / "temp").read_text().strip()) / 1000.0, 1)
        except (OSError, ValueError):
            continue
    return None


def memory_info() -> dict[str, float | None]:
    """This process's resident memory and the machine's available memory, in MiB."""
    rss_mib: float | None = None
    available_mib: float | None = None
    try:
        import psutil  # optional: the [device] extra has it; /proc is the fallback

        rss_mib = psutil.Process().memory_info().rss / 2**20
        available_mib = psutil.virtual_memory().available / 2**20
    except ImportError:
        rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak, KiB on Linux
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    available_mib = int(line.split()[1]) / 1024
        except (OSError, ValueError, IndexError):
            available_mib = None
    return {"rss_mib": None if rss_mib is None else round(rss_mib, 1),
            "available_mib": None if available_mib is None else round(available_mib, 1)}


class MetricsCollector:
    """Watches records as they are written; :meth:`snapshot` summarises and restarts the interval."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_samples: int = 20_000) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._start = clock()
        self._frames = 0
        self._errors = 0
        self._frames_total = 0
        self._latency: deque[float] = deque(maxlen=max_samples)
        self._model: dict[str, Any] | None = None

    def observe(self, record: Mapping[str, Any]) -> None:
        lat = record.get("latency_ms")
        total = lat.get("total") if isinstance(lat, dict) else None
        with self._lock:
            self._frames += 1
            self._frames_total += 1
            if record.get("error") is not None:
                self._errors += 1
            if isinstance(total, (int, float)) and not isinstance(total, bool) and math.isfinite(total):
                self._latency.append(float(total))
            model = record.get("model")
            if isinstance(model, dict):
                self._model = {"name": model.get("name"), "version": model.get("version")}

    def snapshot(self) -> dict[str, Any]:
        now = self._clock()
        with self._lock:
            interval = max(now - self._start, 1e-9)
            frames, errors = self._frames, self._errors
            lat = sorted(self._latency)
            self._start, self._frames, self._errors = now, 0, 0
            self._latency.clear()
            model = self._model
            frames_total = self._frames_total
        return {
            "interval_s": round(interval, 3),
            "frames": frames,
            "frames_total": frames_total,
            "errors": errors,
            "fps": round(frames / interval, 3),
            "latency_ms": {"p50": percentile(lat, 50), "p90": percentile(lat, 90), "p99": percentile(lat, 99),
                           "max": lat[-1] if lat else None, "samples": len(lat)},
            "model": model,
            "cpu_temp_c": cpu_temperature_c(),
            "memory": memory_info(),
        }
