"""The Raspberry Pi camera through picamera2 (installed from the Pi's apt, importable only there)."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from .._errors import SourceError
from .video import LiveSource

__all__ = ["PiCameraSource"]


class PiCameraSource(LiveSource):
    """Captures RGB frames from the ``main`` stream of picamera2.

    picamera2's ``RGB888`` format is laid out B, G, R in memory (its manual says so), so frames
    are reversed to RGB here; the model then sees the same colours as from any other source.
    """

    def __init__(self, camera_num: int = 0, *, size: tuple[int, int] = (640, 480)) -> None:
        super().__init__(f"picamera:{camera_num}")
        try:
            module = importlib.import_module("picamera2")
        except ImportError as exc:
            raise SourceError(
                "picamera2 is not installed: on Raspberry Pi OS run `sudo apt install python3-picamera2` "
                "and create the virtual environment with --system-site-packages"
            ) from exc
        try:
            self._cam: Any = module.Picamera2(camera_num)
            config = self._cam.create_preview_configuration(main={"size": size, "format": "RGB888"})
            self._cam.configure(config)
            self._cam.start()
        except (RuntimeError, IndexError, OSError) as exc:
            raise SourceError(f"{self.name}: cannot start the camera ({exc})") from exc

    def _grab(self) -> np.ndarray | None:
        try:
            bgr = self._cam.capture_array("main")
        except RuntimeError as exc:
            raise SourceError(f"{self.name}: capture failed ({exc})") from exc
        return np.ascontiguousarray(np.asarray(bgr)[..., 2::-1])

    def close(self) -> None:
        super().close()
        try:
            self._cam.stop()
        finally:
            self._cam.close()
