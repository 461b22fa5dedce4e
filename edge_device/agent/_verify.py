"""The rules a bundle must pass before the device runs it, and the health check.

Startup and updates share these functions, so a bundle is judged the same way whether it arrives
from the registry, is found on disk after a restart, or is installed by hand.
"""

from __future__ import annotations

import errno
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import (
    Bundle,
    BundleError,
    EdgeError,
    IntegrityError,
    Manifest,
    Model,
    Prediction,
    PublicKey,
    SignatureError,
    UnsafeArchiveError,
    __version__,
    first_line,
    load_sample,
    open_bundle,
)

from ._errors import UpdateError, UpdateRefused

__all__ = ["ModelOptions", "check_rules", "health_check", "load_model", "prediction_ok", "verify_bundle"]

log = logging.getLogger(__name__)

#: manifest.metrics key mapping a sample file to the top-1 label it must give (optional)
EXPECTED_KEY = "sample_top1"


@dataclass(frozen=True)
class ModelOptions:
    """How models are loaded on this device (from agent.toml's [model])."""

    backend: str | None = None
    threads: int | None = None
    profile: str | None = None
    top_k: int | None = None


def verify_bundle(path: Path, keys: Sequence[PublicKey], *, extract_to: Path | None = None) -> Bundle:
    """Open ``path`` checking every hash and, when keys are pinned, the signature.

    Bundle errors become :class:`UpdateRefused` with reason ``signature`` or ``integrity``.
    """
    try:
        return open_bundle(path, pubkey=list(keys) or None, extract_to=extract_to)
    except SignatureError as exc:
        raise UpdateRefused("signature", str(exc)) from exc
    except (IntegrityError, UnsafeArchiveError) as exc:
        raise UpdateRefused("integrity", str(exc)) from exc
    except BundleError as exc:
        cause = exc.__cause__
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EROFS):
            # The disk, not the bundle: not a refusal, the next attempt may succeed.
            raise UpdateError(f"cannot unpack {path}: {cause.strerror}") from exc
        raise UpdateRefused("integrity", str(exc)) from exc


def parse_expiry(value: str) -> datetime:
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise UpdateRefused("expired", f"manifest expires {value!r} is not an ISO 8601 time") from exc
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def check_rules(manifest: Manifest, *, highest: int, bad: dict[int, str], expected_name: str | None,
                expected_version: int | None = None, require_expiry: bool = True, require_samples: bool = True,
                grace_s: float = 0.0, now: datetime | None = None, runtime_version: str = __version__) -> None:
    """TUF's client rules for one bundle: right model, announced version, newer than anything ever
    accepted (no rollback attack), not known bad, not expired (no freeze attack); then this device's
    policy: samples for the health check, a runtime new enough.

    The verdicts (``bad-version``, ``downgrade``) come first; the policy refusals after them
    (``UpdateRefused.policy``) never mark the version bad."""
    v = manifest.version
    if expected_name is not None and manifest.name != expected_name:
        raise UpdateRefused("wrong-model", f"bundle is model {manifest.name!r}, this device runs {expected_name!r}",
                            version=v)
    if expected_version is not None and v != expected_version:
        raise UpdateRefused("wrong-model", f"the registry announced version {expected_version}, the signed "
                            f"manifest says {v}", version=v)
    if v in bad:
        raise UpdateRefused("bad-version", f"version {v} was refused before ({bad[v]}); publish a new version",
                            version=v)
    if v <= highest:
        raise UpdateRefused("downgrade", f"version {v} is not newer than version {highest}, the highest ever "
                            "accepted", version=v)
    if manifest.expires is None:
        if require_expiry:
            raise UpdateRefused("expired", f"version {v} has no expiry date (updates.require_expiry is on; "
                                "build bundles with `edge bundle --expires 90d`, or expires=...)", version=v)
    else:
        exp = parse_expiry(manifest.expires)
        t = now or datetime.now(UTC)
        if t > exp + timedelta(seconds=grace_s):
            raise UpdateRefused("expired", f"version {v} expired at {manifest.expires}", version=v)
    if not manifest.samples and require_samples:
        raise UpdateRefused("no-samples", f"version {v} has no sample inputs to check it with "
                            "(updates.require_samples is on; build bundles with `edge bundle --sample IMG`, "
                            "or samples=[...])", version=v)
    if _version_key(manifest.min_runtime) > _version_key(runtime_version):
        raise UpdateRefused("min-runtime", f"version {v} needs runtime {manifest.min_runtime} or newer, this "
                            f"device has {runtime_version}", version=v)


def _version_key(text: str) -> tuple[int, ...]:
    """``0.1.0`` → (0, 1, 0); a part's leading digits only (``1.2rc1`` → (1, 2)); nothing parsed → ()."""
    parts: list[int] = []
    for part in text.strip().split("."):
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def load_model(bundle: Bundle, opts: ModelOptions) -> Model:
    model = Model.load(bundle, backend=opts.backend, threads=opts.threads, profile=opts.profile)
    if opts.top_k is not None:
        model.top_k = opts.top_k
    return model


def prediction_ok(pred: Prediction) -> bool:
    """A sane answer: finite numbers, at least one label for a classifier, a list for a detector."""
    if pred.values is not None:
        return bool(pred.values) and all(math.isfinite(v) for v in pred.values)
    if pred.scores is not None and not bool(np.all(np.isfinite(pred.scores))):
        return False
    if pred.detections is not None:
        # a detector that sees nothing in a frame answered: an empty list is a sane answer
        return all(math.isfinite(d["score"]) for d in pred.detections)
    top = pred.top_k or []
    return bool(top) and all(math.isfinite(s) for _, s in top)


def _load_sample(path: Path) -> Any:
    try:
        # the runtime's reading of samples, the same as where bundles are made (.npy: no pickles)
        return load_sample(path)
    except EdgeError as exc:
        raise UpdateRefused("health", f"sample {path.name}: {exc}") from exc


def health_check(bundle: Bundle, opts: ModelOptions, *, require_samples: bool = True) -> Model:
    """Load the bundle and run it on its own sample inputs; return the loaded model if all is sane.

    Sane: every sample predicts without error, with finite outputs and (classifiers) a label; where
    the manifest's ``metrics.sample_top1`` names the expected label of a sample, it must be that.
    """
    m = bundle.manifest
    if not m.samples and require_samples:
        raise UpdateRefused("no-samples", f"version {m.version} has no sample inputs to check it with "
                            "(updates.require_samples is on; build bundles with `edge bundle --sample IMG`, "
                            "or samples=[...])", version=m.version)
    # A candidate may fail in any way (MemoryError from a hostile size, a native library's RuntimeError):
    # whatever it raises is a failed health check, recorded against that version, never a crash of the
    # updater that would fetch and try it again on every poll.
    try:
        model = load_model(bundle, opts)
    except Exception as exc:
        raise UpdateRefused("health", f"version {m.version} does not load: {_describe(exc)}",
                            version=m.version) from exc
    declared = m.metrics.get(EXPECTED_KEY)
    expected: dict[str, Any] = declared if isinstance(declared, dict) else {}
    try:
        for name in m.samples:
            x = _load_sample(bundle.file(name))
            try:
                pred = model.predict(x)
            except Exception as exc:
                raise UpdateRefused("health", f"version {m.version} fails on its sample {name}: {_describe(exc)}",
                                    version=m.version) from exc
            if not prediction_ok(pred):
                raise UpdateRefused("health", f"version {m.version} gives an insane answer on its sample {name} "
                                    f"(non-finite or empty output)", version=m.version)
            want = expected.get(name)
            if want is not None and pred.label != want:
                raise UpdateRefused("health", f"version {m.version} answers {pred.label!r} on its sample {name}, "
                                    f"its manifest expects {want!r}", version=m.version)
            log.info("health check: version %d answers %s on its sample %s", m.version,
                     pred.values if pred.values is not None else f"{pred.label!r} ({pred.score or 0.0:.3f})", name)
    except BaseException:
        model.close()
        raise
    return model


def _describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, EdgeError) else f"{type(exc).__name__}: {first_line(exc)}"
