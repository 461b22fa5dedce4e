"""Source frameworks, one module each, chosen through an explicit registry.

The registry is ordered: the first source that claims a location wins. Claiming looks only at
the location's name or pattern, so picking a source never imports a framework.
"""

from __future__ import annotations

from pathlib import Path

from .._errors import SourceLoadError
from .._options import ConvertOptions
from ._base import Source
from .keras import KerasSource
from .onnx import OnnxSource
from .sklearn import SklearnSource
from .tflite import TFLiteSource
from .torch import TorchExportSource, TorchModuleSource, TorchScriptSource

__all__ = ["SOURCES", "Source", "open_source"]

SOURCES: tuple[type[Source], ...] = (
    SklearnSource,
    TorchModuleSource,
    TorchExportSource,
    TorchScriptSource,
    KerasSource,
    OnnxSource,
    TFLiteSource,
)


def open_source(location: str | Path, options: ConvertOptions) -> Source:
    """The source for ``location`` (not loaded yet)."""
    loc = str(location)
    for cls in SOURCES:
        if cls.claims(loc):
            return cls(loc, options)
    kinds = "; ".join(f"{c.framework}: {c.described_as}" for c in SOURCES)
    if not Path(loc).exists() and ":" not in loc:
        raise SourceLoadError(f"{loc}: no such file or directory (sources are: {kinds})")
    raise SourceLoadError(f"{loc}: not a model the converters know; sources are: {kinds}")
