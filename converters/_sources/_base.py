"""What every source framework provides to the conversion pipeline."""

from __future__ import annotations

import importlib.metadata
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edge_runtime import Preprocess

from .._errors import UnsupportedModelError
from .._options import ConvertOptions

__all__ = ["Source", "dist_version"]


def dist_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class Source(ABC):
    """A model in its training framework, loaded from a location the user named.

    ``claims`` looks at the location only (suffix, pattern), so choosing a source imports no
    framework; ``load`` imports it and reads the model.
    """

    #: short name used in reports and manifests (``source.framework``)
    framework: ClassVar[str]
    #: targets this source can export to
    targets: ClassVar[tuple[str, ...]]
    #: how a user names such a source, for the "unknown source" error
    described_as: ClassVar[str]

    task: str = "classification"
    labels: list[str] | None = None
    #: scikit-learn identifies classes by value; eval labels are matched against these
    class_values: list[str] | None = None

    def __init__(self, location: str, options: ConvertOptions) -> None:
        self.location = location
        self.options = options

    @classmethod
    @abstractmethod
    def claims(cls, location: str) -> bool:
        """Whether ``location`` names a model of this framework (no import, no reading)."""

    @abstractmethod
    def load(self) -> None:
        """Import the framework and read the model; raise SourceLoadError / ShapeError."""

    @abstractmethod
    def export(self, target: str, out: Path, *, data: Sequence[np.ndarray] = ()) -> Path:
        """Write the float model for ``target`` to ``out``; ``data`` are sample inputs, if any."""

    def native_quantize(self, target: str, mode: str, calibration: Sequence[np.ndarray], out: Path) -> Path | None:
        """Quantize with the framework's own converter, or None to use the target's quantizer."""
        return None

    def default_preprocess(self, target: str) -> Preprocess | None:
        """Preprocessing when the user gives none (None: images are fed as raw pixels)."""
        return None

    def layout(self, target: str) -> str | None:
        """Layout of the exported model's input (NCHW, NHWC, NC), when the source knows it."""
        return None

    def info(self) -> dict[str, Any]:
        """``source`` field of the manifest: framework, version, where the model came from."""
        return {"framework": self.framework, "location": Path(self.location).name}

    def check_target(self, target: str) -> None:
        if target not in self.targets:
            raise UnsupportedModelError(
                f"{self.framework} models convert to {' or '.join(self.targets)}, not {target}; "
                f"use --to {self.targets[0]}")
