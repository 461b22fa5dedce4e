"""OpenCV sources: video files (never drop), and cameras or network streams (live, drop stale)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from .._errors import BackendUnavailableError, SourceError
from ._base import Frame, Source

__all__ = ["LatestFrame", "OpenCVCameraSource", "VideoFileSource"]

log = logging.getLogger(__name__)

_HINT = "pip install 'edge-runtime[camera]'  (installs opencv-python-headless)"


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise BackendUnavailableError(f"video and camera sources need OpenCV: {_HINT}") from exc
    return cv2


class VideoFileSource(Source):
    live = False

    def __init__(self, path: str) -> None:
        self.name = path
        self._cv2 = _cv2()
        self._cap = self._cv2.VideoCapture(path)
        if not self._cap.isOpened():
            raise SourceError(f"{path}: OpenCV cannot open this video (unknown codec or corrupt file)")

    def __iter__(self) -> Iterator[Frame]:
        i = 0
        while True:
            ok, bgr = self._cap.read()
            if not ok:
                return
            yield Frame(index=i, source=self.name, data=self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB),
                        meta={"pos_ms": float(self._cap.get(self._cv2.CAP_PROP_POS_MSEC))})
            i += 1

    def close(self) -> None:
        self._cap.release()


class LatestFrame:
    """A one-slot mailbox: the capture thread overwrites, the consumer takes the newest.

    This is how live sources drop stale frames instead of queueing them: a slow model always
    sees the most recent picture, and ``dropped`` counts what it never saw.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: tuple[np.ndarray, float] | None = None
        self._closed = False
        self.dropped = 0
        self.captured = 0

    def put(self, arr: np.ndarray) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = (arr, time.time())
            self.captured += 1
            self._cond.notify()

    def take(self, timeout: float | None = None) -> tuple[np.ndarray, float] | None:
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


class LiveSource(Source):
    """A capture thread that keeps only the newest frame. Subclasses implement ``_grab``."""

    live = True

    def __init__(self, name: str, *, read_timeout: float = 10.0) -> None:
        self.name = name
        self._slot = LatestFrame()
        self._stop = threading.Event()
        self._read_timeout = read_timeout
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    def _grab(self) -> np.ndarray | None:
        """Return an RGB frame, or None when the source has ended."""
        raise NotImplementedError

    def _capture_loop(self) -> None:
        try:
            while not self._stop.is_set():
                arr = self._grab()
                if arr is None:
                    break
                self._slot.put(arr)
        except SourceError as exc:
            self.error = str(exc)
        finally:
            self._slot.close()

    def __iter__(self) -> Iterator[Frame]:
        if self._thread is None:
            self._thread = threading.Thread(target=self._capture_loop, name=f"capture-{self.name}", daemon=True)
            self._thread.start()
        i = 0
        while not self._stop.is_set():
            item = self._slot.take(timeout=self._read_timeout)
            if item is None:
                if self._slot.closed:
                    if self.error:
                        raise SourceError(self.error)
                    return
                raise SourceError(f"{self.name}: no frame for {self._read_timeout:.0f} s")
            arr, ts = item
            yield Frame(index=i, source=self.name, data=arr, meta={"captured": ts})
            i += 1

    @property
    def dropped(self) -> int:
        return self._slot.dropped

    def close(self) -> None:
        self._stop.set()
        self._slot.close()
        if self._thread is not None:
            self._thread.join(timeout=5)


class OpenCVCameraSource(LiveSource):
    """A USB/V4L2 camera by index, or a network stream (rtsp://, http://) through OpenCV."""

    def __init__(self, device: int | str, *, width: int | None = None, height: int | None = None) -> None:
        super().__init__(f"camera:{device}" if isinstance(device, int) else str(device))
        self._cv2 = _cv2()
        self._cap = self._cv2.VideoCapture(device)
        if not self._cap.isOpened():
            raise SourceError(f"{self.name}: OpenCV cannot open this camera or stream")
        if width:
            self._cap.set(self._cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            self._cap.set(self._cv2.CAP_PROP_FRAME_HEIGHT, height)
        # Keep the driver's own buffer short so that "latest" really is the latest frame.
        self._cap.set(self._cv2.CAP_PROP_BUFFERSIZE, 1)

    def _grab(self) -> np.ndarray | None:
        ok, bgr = self._cap.read()
        if not ok:
            return None
        rgb: np.ndarray = self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB)
        return rgb

    def close(self) -> None:
        super().close()
        self._cap.release()
