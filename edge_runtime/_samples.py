"""Sample inputs and expiry dates of bundles: what lets a bundle pass a device's update policy.

A device runs a new bundle on its own sample inputs before switching to it (the health check) and
refuses bundles past their ``expires``. The bundle-making side uses the same reading of samples to
check them at the source, so that a bundle whose samples do not decode or do not run is never made.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from ._bundle import Bundle
from ._errors import DecodeError, EdgeError, InputError, ManifestError, first_line

__all__ = [
    "SAMPLE_IMAGE_SUFFIXES",
    "SampleCheck",
    "check_samples",
    "load_sample",
    "parse_expires",
    "prediction_is_sane",
    "sample_names",
]

log = logging.getLogger(__name__)

#: sample files decoded as images; ``.npy`` files are arrays (a tabular row, or an image array)
SAMPLE_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff")
SAMPLE_DIR = "samples"

_DURATION_RE = re.compile(r"^\s*([0-9]+)\s*([hdw])\s*$", re.IGNORECASE)
_UNITS = {"h": "hours", "d": "days", "w": "weeks"}


def load_sample(path: str | Path) -> Any:
    """Decode one sample file: an image to an HxWx3 uint8 array, a ``.npy`` to its array.

    ``.npy`` files are read with ``allow_pickle=False``: a sample never makes anyone unpickle anything.
    Raises :class:`DecodeError` naming the file and the problem.
    """
    from ._imaging import load_image

    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in SAMPLE_IMAGE_SUFFIXES:
        return load_image(p)
    if suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except FileNotFoundError as exc:
            raise DecodeError(f"{p}: no such file") from exc
        except (OSError, ValueError, EOFError) as exc:
            raise DecodeError(f"{p}: not a readable .npy array ({exc})") from exc
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
            raise DecodeError(f"{p}: a sample array must hold numbers, not {getattr(arr, 'dtype', type(arr))}")
        return arr
    raise DecodeError(f"{p}: unknown sample type {suffix or '(no extension)'!r}; use an image "
                      f"({', '.join(SAMPLE_IMAGE_SUFFIXES)}) or a .npy array")


def sample_names(files: Sequence[str | Path], taken: Sequence[str] = ()) -> dict[str, Path]:
    """Bundle names (``samples/<file name>``) for sample files, made unique; name → source file."""
    out: dict[str, Path] = {}
    used = set(taken)
    for f in files:
        p = Path(f)
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", p.name).lstrip(".") or "sample"
        name, i = f"{SAMPLE_DIR}/{base}", 1
        while name in used:
            name, i = f"{SAMPLE_DIR}/{i}-{base}", i + 1
        used.add(name)
        out[name] = p
    return out


def prediction_is_sane(pred: Any, task: str) -> str | None:
    """None when a prediction is sane (finite numbers; a label for a classifier), else what is wrong."""
    values = getattr(pred, "values", None)
    if values is not None:
        if not values:
            return "no output values"
        if not all(math.isfinite(v) for v in values):
            return "non-finite output values"
        return None
    detections = getattr(pred, "detections", None)
    if detections is not None:
        # no object in a sample is a sane answer; a NaN score or box is not
        numbers = [float(d["score"]) for d in detections] + [float(v) for d in detections for v in d["box"]]
        return None if all(math.isfinite(v) for v in numbers) else "non-finite detection scores or boxes"
    scores = getattr(pred, "scores", None)
    if scores is not None and not bool(np.all(np.isfinite(scores))):
        return "non-finite scores"
    top = getattr(pred, "top_k", None) or []
    if not all(math.isfinite(s) for _, s in top):
        return "non-finite scores"
    if task == "classification" and not top:
        return "no label (every score is below the threshold)"
    return None


@dataclass(frozen=True)
class SampleCheck:
    """What the model answered on one sample at the source."""

    name: str
    label: str | None
    score: float | None
    values: list[float] | None = None


def check_samples(bundle: str | Path | Bundle, *, backend: str | None = None,
                  threads: int | None = 1) -> list[SampleCheck]:
    """Load the bundle and run every sample of its manifest through it: the device's health check,
    done where the bundle is made. Raises :class:`InputError` (a sample that does not decode or does
    not fit the model) or the model's own error, each naming the sample."""
    from ._model import Model

    model = Model.load(bundle, backend=backend, threads=threads)
    try:
        m = model.manifest
        results: list[SampleCheck] = []
        for name in m.samples:
            x = load_sample(model.bundle.file(name))
            try:
                pred = model.predict(x)
            except Exception as exc:
                # broad on purpose: a native library may raise anything on an input it cannot take, and
                # the device's health check counts any of them as a failure
                why = str(exc) if isinstance(exc, EdgeError) else f"{type(exc).__name__}: {first_line(exc)}"
                raise InputError(f"sample {name}: the model cannot run it: {why}") from exc
            problem = prediction_is_sane(pred, m.task)
            if problem is not None:
                raise InputError(f"sample {name}: the model gives an insane answer ({problem}); a device's "
                                 "health check would refuse this bundle")
            results.append(SampleCheck(name, pred.label, pred.score, pred.values))
            log.debug("sample %s: %s", name, pred.label if pred.values is None else pred.values)
        return results
    finally:
        model.close()


def parse_expires(value: str, *, now: datetime | None = None) -> str:
    """An expiry for ``manifest.expires`` from a duration (``90d``, ``12h``, ``4w``) or an ISO 8601
    date or time (``2027-06-01``, ``2027-06-01T00:00:00Z``); a time without zone is UTC.

    Returns it as ``YYYY-MM-DDTHH:MM:SSZ``. Raises :class:`ManifestError` for anything else and for
    a time that is not in the future (a device would refuse the bundle at once).
    """
    t = now or datetime.now(UTC)
    text = value.strip()
    m = _DURATION_RE.match(text)
    if m:
        n = int(m.group(1))
        if n <= 0:
            raise ManifestError(f"expires {value!r}: the duration must be positive")
        try:
            exp = t + timedelta(**{_UNITS[m.group(2).lower()]: n})
        except OverflowError as exc:
            raise ManifestError(f"expires {value!r}: the duration is too long") from exc
    else:
        try:
            exp = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError as exc:
            raise ManifestError(f"expires {value!r}: write a duration such as 90d, 12h or 4w, or an ISO 8601 "
                                "date or time such as 2027-06-01 or 2027-06-01T00:00:00Z") from exc
        exp = exp.replace(tzinfo=UTC) if exp.tzinfo is None else exp.astimezone(UTC)
    if exp <= t:
        raise ManifestError(f"expires {value!r}: {exp.isoformat(timespec='seconds')} is in the past; devices "
                            "would refuse the bundle at once")
    return exp.strftime("%Y-%m-%dT%H:%M:%SZ")
