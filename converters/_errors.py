"""The one exception hierarchy of ``converters`` (drawn in the package docstring)."""

from __future__ import annotations

__all__ = [
    "CalibrationError",
    "ConversionError",
    "DataError",
    "EvalDataError",
    "MissingDependencyError",
    "QuantizationError",
    "ShapeError",
    "SourceLoadError",
    "UnsupportedModelError",
]


class ConversionError(Exception):
    """Base of every error raised on purpose by the converters; the message names cause and fix."""


class MissingDependencyError(ConversionError):
    """A framework or tool the conversion needs is not installed; the message says what to install."""


class SourceLoadError(ConversionError):
    """The source model cannot be loaded: missing file, missing factory, weights that do not match."""


class UnsupportedModelError(ConversionError):
    """The model (an estimator, a layer, an op) has no converter to the requested target."""


class ShapeError(ConversionError):
    """The model cannot take the given input shape, or data does not have the model's shape."""


class DataError(ConversionError):
    """Calibration or evaluation data cannot be used."""


class CalibrationError(DataError):
    """Calibration data is missing or holds nothing usable (e.g. a directory with no images)."""


class EvalDataError(DataError):
    """The evaluation set cannot be used, e.g. its labels are not the model's classes."""


class QuantizationError(ConversionError):
    """A quantizer failed or produced a model the runtime cannot run."""
