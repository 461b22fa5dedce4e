"""Pick the variant to ship: the fastest (or smallest) whose quality drop stays within the limit."""

from __future__ import annotations

from collections.abc import Sequence

from ._report import VariantReport

__all__ = ["recommend"]


def recommend(variants: Sequence[VariantReport], *, prefer: str, max_drop: float,
              measured: bool) -> tuple[str | None, str]:
    """The recommended variant's name and a sentence saying why, from the measured numbers only."""
    ok = [v for v in variants if v.status == "ok" and v.p50_ms is not None]
    if not ok:
        return None, "no variant could be measured"
    if not measured:
        float_v = ok[0]
        return float_v.variant, (f"{float_v.variant}: quality of the quantized variants was not measured (no --eval or "
                                 "--calibration data), so only the float model is safe to recommend")
    fit = [v for v in ok if v.within_max_drop]
    if not fit:
        return None, f"no variant stays within {max_drop:g} point(s) of the float model"

    def key(v: VariantReport) -> tuple[float, float]:
        size = float(v.size_bytes or 0)
        lat = float(v.p50_ms or 0.0)
        return (lat, size) if prefer == "latency" else (size, lat)

    best = min(fit, key=key)
    p50 = best.p50_ms or 0.0
    parts = [f"{best.variant}: p50 {p50:.3f} ms" if p50 < 1 else f"{best.variant}: p50 {p50:.2f} ms"]
    if best.latency_ratio is not None and best is not ok[0]:
        parts[0] += f" ({best.latency_ratio:.2f}× float)"
    if best.size_ratio is not None:
        parts.append(f"{best.size_ratio:.2f}× the float size")
    if best.recall is not None and best.precision is not None:
        parts.append(f"boxes vs float: recall {best.recall:.1f}%, precision {best.precision:.1f}%")
    if best.accuracy_drop is not None:
        parts.append(f"quality drop {best.accuracy_drop:.2f} point(s) ≤ {max_drop:g}")
    over = [v.variant for v in ok if not v.within_max_drop]
    slower = [v.variant for v in fit if v.slower_than_float]
    tail = []
    if over:
        tail.append(f"excluded for losing more than {max_drop:g} point(s): {', '.join(over)}")
    if slower:
        tail.append(f"slower than float on this CPU: {', '.join(slower)}")
    return best.variant, ", ".join(parts) + ("; " + "; ".join(tail) if tail else "")
