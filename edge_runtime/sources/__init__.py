"""Sources: where frames come from. ``open_source`` turns a command-line spec into one."""

from __future__ import annotations

from pathlib import Path

from .._errors import SourceError
from ._base import Frame, Source
from .files import IMAGE_SUFFIXES, ImageFilesSource
from .picamera import PiCameraSource
from .tabular import TABULAR_SUFFIXES, TabularSource
from .video import LatestFrame, LiveSource, OpenCVCameraSource, VideoFileSource

__all__ = [
    "IMAGE_SUFFIXES",
    "TABULAR_SUFFIXES",
    "VIDEO_SUFFIXES",
    "Frame",
    "ImageFilesSource",
    "LatestFrame",
    "LiveSource",
    "OpenCVCameraSource",
    "PiCameraSource",
    "Source",
    "TabularSource",
    "VideoFileSource",
    "open_source",
]

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mjpeg", ".mjpg", ".h264"})


def open_source(spec: str, *, recursive: bool = False) -> Source:
    """``picamera[:N]``, a camera index (``0``), a URL (``rtsp://…``), a video file, a CSV/JSONL/NPY
    file, an image file, a directory of images (its subfolders too when ``recursive``), or a glob
    pattern."""
    if spec == "picamera" or spec.startswith("picamera:"):
        num = spec.partition(":")[2]
        if num and not num.isdigit():
            raise SourceError(f"{spec!r}: write picamera or picamera:N with N the camera number")
        return PiCameraSource(int(num or 0))
    if spec.isdigit():
        return OpenCVCameraSource(int(spec))
    if "://" in spec:
        return OpenCVCameraSource(spec)
    p = Path(spec)
    suffix = p.suffix.lower()
    if p.is_file() and suffix in VIDEO_SUFFIXES:
        return VideoFileSource(spec)
    if suffix in TABULAR_SUFFIXES:
        return TabularSource(p)
    if p.is_dir() or any(ch in spec for ch in "*?[") or p.is_file():
        return ImageFilesSource(spec, recursive=recursive)
    raise SourceError(f"{spec}: no such file or directory (sources: image file, directory, glob, video, "
                      "camera index, rtsp:// URL, picamera, .csv/.jsonl/.npy)")



