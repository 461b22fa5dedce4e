"""Frames the model was unsure about: kept on disk (bounded), uploaded when the cloud answers.

Each sample is two files in one folder, ``<n>-<time>.json`` (what the device knew: its scores, the
cloud's answer, the source) and ``<n>-<time>.jpg|.png`` (the picture). The JSON is renamed into
place first and the image last, so an image on disk always has its metadata, and a crash at any
point leaves either a whole sample or a stray ``.json`` that the next start removes.

The folder holds at most ``max_items`` samples: past that the oldest go (counted in ``dropped``),
because on a device offline for weeks the newest frames are the ones worth keeping within the
SD card's room. A sample leaves the folder only after the cloud acknowledged it (or refused it
for good: then it moves to ``rejected/``, which is bounded too, so one bad file cannot block
the queue nor be lost silently).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge_device.client import CloudClient

__all__ = ["PERMANENT_STATUSES", "Sample", "SampleStore", "UploadFailed", "UploadRejected", "Uploader",
           "cloud_sender"]

log = logging.getLogger("plant_disease.samples")

_NAME = re.compile(r"^(\d{8,})-[0-9TZ]+$")
_SUFFIXES = (".jpg", ".png")


class UploadFailed(Exception):
    """The cloud could not take the sample now (offline, timeout, 5xx, auth): try again later."""


class UploadRejected(Exception):
    """The cloud refused this sample for good (bad image, too large): retrying would not help."""


@dataclass(frozen=True)
class Sample:
    image: Path

    @property
    def meta_path(self) -> Path:
        return self.image.with_suffix(".json")

    @property
    def content_type(self) -> str:
        return "image/png" if self.image.suffix == ".png" else "image/jpeg"

    def read(self) -> tuple[bytes, dict[str, Any]]:
        data = self.image.read_bytes()
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            # The picture is the valuable part; send it with a note rather than lose it.
            log.warning("%s: metadata unreadable (%s); sending the image without it", self.meta_path, exc)
            meta = {"metadata_error": str(exc)}
        return data, meta if isinstance(meta, dict) else {"metadata": meta}


class SampleStore:
    def __init__(self, directory: str | Path, max_items: int) -> None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rejected_dir = self.dir / "rejected"
        self.max_items = max_items
        self.kept = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._next = 1
        for stray in self.dir.glob("*.part"):
            stray.unlink(missing_ok=True)
        for meta in self.dir.glob("*.json"):
            if not any(meta.with_suffix(s).exists() for s in _SUFFIXES):
                meta.unlink(missing_ok=True)  # a crash between the two renames
        existing = self._samples()
        if existing:
            m = _NAME.match(existing[-1].image.stem)
            self._next = int(m.group(1)) + 1 if m else len(existing) + 1
        with self._lock:
            self._trim()

    def _samples(self) -> list[Sample]:
        found = [p for p in self.dir.iterdir() if p.suffix in _SUFFIXES and _NAME.match(p.stem) and p.is_file()]
        return [Sample(p) for p in sorted(found, key=lambda p: p.name)]

    def __len__(self) -> int:
        return len(self._samples())

    def pending(self) -> list[Sample]:
        """Oldest first."""
        return self._samples()

    def keep(self, data: bytes, suffix: str, meta: dict[str, Any]) -> Sample:
        if suffix not in _SUFFIXES:
            raise ValueError(f"samples are stored as {' or '.join(_SUFFIXES)}, not {suffix}")
        with self._lock:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            stem = f"{self._next:08d}-{stamp}"
            self._next += 1
            image = self.dir / f"{stem}{suffix}"
            _write_atomic(image.with_suffix(".json"), json.dumps(meta, ensure_ascii=False).encode("utf-8"))
            _write_atomic(image, data)
            self.kept += 1
            self._trim()
        return Sample(image)

    def remove(self, sample: Sample) -> None:
        # Image first: without it the sidecar is a stray the next start cleans up.
        sample.image.unlink(missing_ok=True)
        sample.meta_path.unlink(missing_ok=True)

    def reject(self, sample: Sample, reason: str) -> None:
        """Move aside a sample the cloud will never take (kept for a human, bounded like the rest)."""
        self.rejected_dir.mkdir(exist_ok=True)
        try:
            meta = json.loads(sample.meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        meta = {**meta, "rejected": reason} if isinstance(meta, dict) else {"rejected": reason}
        _write_atomic(self.rejected_dir / sample.meta_path.name, json.dumps(meta).encode("utf-8"))
        os.replace(sample.image, self.rejected_dir / sample.image.name)
        sample.meta_path.unlink(missing_ok=True)
        old = sorted(p for p in self.rejected_dir.iterdir() if p.suffix in _SUFFIXES)
        for p in old[: max(0, len(old) - self.max_items)]:
            p.unlink(missing_ok=True)
            p.with_suffix(".json").unlink(missing_ok=True)

    def _trim(self) -> None:
        samples = self._samples()
        for s in samples[: max(0, len(samples) - self.max_items)]:
            self.remove(s)
            self.dropped += 1
            log.log(logging.WARNING if self.dropped == 1 else logging.DEBUG,
                    "unsure-frame folder full (%d): dropping the oldest (%s, %d so far)", self.max_items,
                    s.image.name, self.dropped)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".part")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


Send = Callable[[bytes, str, dict[str, Any]], Any]

#: the cloud refuses these for good (bad image, too large, bad metadata): resending cannot help
PERMANENT_STATUSES = frozenset({400, 413, 415, 422})


def cloud_sender(client: CloudClient, device_id: str, *, timeout: float = 30.0) -> Send:
    """``send`` for :class:`Uploader` through ``CloudClient.upload_sample``: a refusal of the sample
    itself is UploadRejected; anything else (offline, deadline, 5xx, a revoked token that an admin
    may restore) is UploadFailed, so the sample waits."""
    from edge_device.client import ClientError, HTTPStatusError

    def send(data: bytes, content_type: str, meta: dict[str, Any]) -> Any:
        try:
            return client.upload_sample(data, {**meta, "device_id": device_id}, content_type=content_type,
                                        timeout=timeout)
        except HTTPStatusError as exc:
            if exc.status in PERMANENT_STATUSES:
                raise UploadRejected(str(exc)) from exc
            raise UploadFailed(str(exc)) from exc
        except ClientError as exc:  # unreachable, reset, deadline, an answer that is not JSON
            raise UploadFailed(str(exc)) from exc

    return send


class Uploader:
    """A thread that empties the store into ``send`` (image bytes, content type, metadata).

    ``send`` raises :class:`UploadFailed` when the cloud cannot take it now (the uploader waits
    ``interval`` seconds and tries again, oldest first) or :class:`UploadRejected` when it never
    will. Returning means acknowledged: only then is the sample deleted.
    """

    def __init__(self, store: SampleStore, send: Send, *, interval: float = 10.0) -> None:
        self.store = store
        self.send = send
        self.interval = interval
        self.uploaded = 0
        self.rejected = 0
        self.last_error: str | None = None
        self.online: bool | None = None  # None: not tried yet
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sample-uploader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def notify(self) -> None:
        """A new sample was kept. Only worth a try now if the last one worked: an offline device
        would otherwise knock on the cloud at every unsure frame."""
        if self.online is not False:
            self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.drain()
            self._wake.wait(self.interval)
            self._wake.clear()

    def drain(self) -> bool:
        """Send what is pending, oldest first; False when the cloud could not be reached."""
        for sample in self.store.pending():
            if self._stop.is_set():
                return True
            try:
                data, meta = sample.read()
            except OSError as exc:
                log.warning("%s vanished before upload (%s)", sample.image.name, exc)
                continue
            try:
                self.send(data, sample.content_type, meta)
            except UploadRejected as exc:
                log.warning("cloud refused %s for good: %s", sample.image.name, exc)
                self.store.reject(sample, str(exc))
                self.rejected += 1
                continue
            except UploadFailed as exc:
                if self.online is not False:
                    log.info("cloud not reachable for samples (%s); retrying every %.0f s", exc, self.interval)
                self.online = False
                self.last_error = str(exc)
                return False
            self.store.remove(sample)
            self.uploaded += 1
            if self.online is not True:
                log.info("cloud reachable: uploading unsure frames")
            self.online = True
            self.last_error = None
        return True
