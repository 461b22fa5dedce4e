"""Image files: one file, a directory, or a glob pattern."""

from __future__ import annotations

import glob as _glob
from collections.abc import Iterator
from pathlib import Path

from .._errors import SourceError
from .._imaging import load_image
from ._base import Frame, Source

__all__ = ["IMAGE_SUFFIXES", "ImageFilesSource"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})


class ImageFilesSource(Source):
    """Every regular, non-hidden file of a directory (sorted), the files a glob matches, or one file.

    Files that are not images are not skipped silently: each yields a frame whose decoding fails
    with an error naming the file, so the run reports it and goes on.
    """

    live = False

    def __init__(self, spec: str | Path, *, recursive: bool = False) -> None:
        self.spec = str(spec)
        self.name = self.spec
        p = Path(self.spec)
        if p.is_dir():
            it = p.rglob("*") if recursive else p.iterdir()
            self.paths = sorted(f for f in it if f.is_file() and not f.name.startswith("."))
        elif any(ch in self.spec for ch in "*?["):
            self.paths = sorted(Path(f) for f in _glob.glob(self.spec, recursive=True) if Path(f).is_file())
            if not self.paths:
                raise SourceError(f"{self.spec}: the pattern matches no file")
        elif p.is_file():
            self.paths = [p]
        else:
            raise SourceError(f"{self.spec}: no such file or directory")

    def __iter__(self) -> Iterator[Frame]:
        for i, path in enumerate(self.paths):
            yield Frame(index=i, source=str(path), loader=_loader(path))

    def __len__(self) -> int:
        return len(self.paths)


def _loader(path: Path):  # type: ignore[no-untyped-def]
    return lambda: load_image(path)
