"""A stand-in for picamera2 (which only runs on a Raspberry Pi), following its real API.

The calls and shapes mirror picamera2's: ``Picamera2(camera_num)``,
``create_preview_configuration(main={"size": (w, h), "format": "RGB888"})``, ``configure``,
``start``, ``capture_array("main")`` returning an HxWx3 uint8 array laid out B, G, R (that is what
"RGB888" means in picamera2), ``stop`` and ``close``. Frames come from real images a test sets in
``Picamera2.frames``.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np
from PIL import Image

__all__ = ["Picamera2"]


class Picamera2:
    #: RGB images (HxWx3 uint8) the camera "sees", cycled in order
    frames: ClassVar[list[np.ndarray]] = []
    #: seconds between frames (a real camera runs at ~30 fps)
    frame_interval: ClassVar[float] = 0.0
    #: how many frames to deliver before the camera "fails" (None: forever)
    max_frames: ClassVar[int | None] = None
    instances: ClassVar[list[Picamera2]] = []

    def __init__(self, camera_num: int = 0) -> None:
        if not self.frames:
            raise IndexError("list index out of range")  # what picamera2 raises with no camera attached
        self.camera_num = camera_num
        self.started = False
        self.closed = False
        self.config: dict[str, Any] | None = None
        self.captured = 0
        Picamera2.instances.append(self)

    def create_preview_configuration(self, main: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        main = dict(main or {})
        main.setdefault("size", (640, 480))
        main.setdefault("format", "XBGR8888")
        return {"use_case": "preview", "main": main, **kwargs}

    def configure(self, config: dict[str, Any]) -> None:
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        self.config = config

    def start(self) -> None:
        if self.config is None:
            raise RuntimeError("Camera has not been configured")
        self.started = True

    def capture_array(self, name: str = "main") -> np.ndarray:
        if not self.started:
            raise RuntimeError("Camera is not running")
        if self.max_frames is not None and self.captured >= self.max_frames:
            raise RuntimeError("Camera frontend has timed out!")
        if self.frame_interval:
            time.sleep(self.frame_interval)
        assert self.config is not None
        w, h = self.config["main"]["size"]
        rgb = self.frames[self.captured % len(self.frames)]
        self.captured += 1
        resized = np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BILINEAR))
        if self.config["main"]["format"] == "RGB888":
            return np.ascontiguousarray(resized[..., ::-1])  # picamera2's RGB888 is B, G, R in memory
        raise RuntimeError(f"format {self.config['main']['format']} not supported by this stand-in")

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True
