"""Image files: one file, a directory, or a glob pattern."""

from __future__ import annotations

import glob as _glob
import logging
from collections.abc import Iterator
from pathlib import Path

from .._errors import SourceError
from .._imaging import load_image
from ._base import Frame, Source

__all__ = ["IMAGE_SUFFIXES", "ImageFilesSource"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})


class ImageFilesSource(Source):
    """Every regular, non-hidden file of a directory (sorted), the files a glob matches, or one file.

    ``recursive`` also takes the files of every non-hidden subfolder; without it, subfolders are
    left out and counted in ``skipped_dirs`` so that a caller can say so (a folder of class
    folders would otherwise look like an empty run).

    Files that are not images are not skipped silently: each yields a frame whose decoding fails
    with an error naming the file, so the run reports it and goes on.
    """

    live = False

    def __init__(self, spec: str | Path, *, recursive: bool = False) -> None:
        self.spec = str(spec)
        self.name = self.spec
        #: subfolders of a directory source that were not entered (``recursive=False``)
        self.skipped_dirs = 0
        p = Path(self.spec)
        if p.is_dir():
            if recursive:
                self.paths = sorted(f for f in p.rglob("*") if f.is_file()
                                    and not any(part.startswith(".") for part in f.relative_to(p).parts))
            else:
                entries = [f for f in p.iterdir() if not f.name.startswith(".")]
                self.paths = sorted(f for f in entries if f.is_file())
                self.skipped_dirs = sum(1 for f in entries if f.is_dir())
                if self.skipped_dirs:
                    log.info("%s: %d subfolder(s) not entered (recursive=False)", p, self.skipped_dirs)
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
