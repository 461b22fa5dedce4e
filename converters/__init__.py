"""converters: turn a trained model into device-ready bundles, with the evidence to pick one.

Sources (one module each, chosen by an explicit registry): scikit-learn estimators and pipelines
(skl2onnx), PyTorch modules / TorchScript / ``torch.export`` programs (torch.onnx, litert-torch),
Keras and SavedModel (TFLiteConverter, tf2onnx), and ready-made ONNX/TFLite files. Each variant
(float, fp16, dynamic, int8) becomes a bundle, is run through the runtime on the eval data, timed
on the chosen backend, and the report recommends the fastest one within the allowed accuracy drop.

>>> from converters import convert                                  # doctest: +SKIP
>>> report = convert("model.joblib", "out/", to="onnx", eval="heldout.npz")
>>> report.recommended, report.variant("float").accuracy

Importing this package imports no framework; each is imported when a conversion needs it.

Errors (every one names the cause and, where one exists, the fix)::

    ConversionError
    ├── MissingDependencyError   a framework or tool is not installed (says what to pip install)
    ├── SourceLoadError          model file, factory or weights cannot be loaded or do not match
    ├── UnsupportedModelError    an estimator, layer or op has no converter for the target
    ├── ShapeError               the model cannot take the input shape, or data has another shape
    ├── DataError                calibration or eval data cannot be used
    │   ├── CalibrationError     no usable calibration inputs (e.g. a directory without images)
    │   └── EvalDataError        eval labels are not the model's classes, unreadable eval set
    └── QuantizationError        a quantizer failed or made a model the runtime cannot run

Errors of the runtime met on the way (e.g. an unreadable image) are wrapped in ConversionError.
"""

from __future__ import annotations

from ._convert import VARIANT_NAMES, bundle_dir_name, convert
from ._cpu import cpu_name, has_vnni
from ._errors import (
    CalibrationError,
    ConversionError,
    DataError,
    EvalDataError,
    MissingDependencyError,
    QuantizationError,
    ShapeError,
    SourceLoadError,
    UnsupportedModelError,
)
from ._options import QUANT_MODES, ConvertOptions, parse_preprocess, parse_quantize, parse_shape
from ._report import EvalSummary, Report, VariantReport
from .zoo import EFFICIENTNET_LITE0_PREPROCESS, efficientnet_lite0_weights, export_efficientnet_lite0

__all__ = [
    "EFFICIENTNET_LITE0_PREPROCESS",
    "QUANT_MODES",
    "VARIANT_NAMES",
    "CalibrationError",
    "ConversionError",
    "ConvertOptions",
    "DataError",
    "EvalDataError",
    "EvalSummary",
    "MissingDependencyError",
    "QuantizationError",
    "Report",
    "ShapeError",
    "SourceLoadError",
    "UnsupportedModelError",
    "VariantReport",
    "bundle_dir_name",
    "convert",
    "cpu_name",
    "efficientnet_lite0_weights",
    "export_efficientnet_lite0",
    "has_vnni",
    "parse_preprocess",
    "parse_quantize",
    "parse_shape",
]
