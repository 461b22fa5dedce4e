"""edge_runtime: run ML model bundles on edge devices, from cameras or files, fully offline.

Importing this package imports none of its modules: each public name is imported from its module
on first use (PEP 562), so `edge run` pays for the bundle and the model, not for signing, bench or
bundle-making code. Backends import their library (LiteRT, onnxruntime, OpenCV) when they load a
model, and nothing here imports a training framework, FastAPI or SQLAlchemy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._annotate import AnnotatedImageSink, annotation_color, draw_detections
    from ._bench import bench_model
    from ._bundle import (
        Bundle,
        is_archive,
        manifest_summary,
        open_bundle,
        pack_bundle,
        prescan_tar,
        safe_extract,
        sha256_file,
        sign_bundle,
        write_bundle,
    )
    from ._detection import Geometry, box_iou, guess_head, nms
    from ._errors import (
        BackendError,
        BackendUnavailableError,
        BundleError,
        DecodeError,
        EdgeError,
        InferenceError,
        InputError,
        IntegrityError,
        KeyFileError,
        ManifestError,
        ModelError,
        SignatureError,
        SinkError,
        SourceError,
        UnsafeArchiveError,
        describe_validation_error,
        first_line,
        validated,
    )
    from ._imaging import MAX_IMAGE_PIXELS, ImagePreprocessor, decode_image, load_image
    from ._make import ModelDescription, describe_model, make_bundle, model_format, model_metadata
    from ._manifest import (
        MAX_INPUT_SIDE,
        MAX_VERSION,
        FileEntry,
        Manifest,
        Postprocess,
        Preprocess,
        Quantization,
        TensorSpec,
    )
    from ._model import Model, Prediction
    from ._pipeline import Pipeline, PipelineStats, Predictor
    from ._record import Detection, Latency, ModelRef, Record, ScoredLabel, error_record, make_record, utc_now
    from ._samples import SAMPLE_IMAGE_SUFFIXES, SampleCheck, check_samples, load_sample, parse_expires
    from ._signing import PublicKey, generate_keypair, key_id, load_private_key, load_public_key
    from ._sinks import JsonlSink, Sink, SqliteSink, StreamSink, open_sink
    from ._version import __version__

# public name -> the module that defines it; imported on first access
_WHERE: dict[str, str] = {
    'AnnotatedImageSink': '._annotate',
    'annotation_color': '._annotate',
    'draw_detections': '._annotate',
    'bench_model': '._bench',
    'Bundle': '._bundle',
    'is_archive': '._bundle',
    'manifest_summary': '._bundle',
    'open_bundle': '._bundle',
    'pack_bundle': '._bundle',
    'prescan_tar': '._bundle',
    'safe_extract': '._bundle',
    'sha256_file': '._bundle',
    'sign_bundle': '._bundle',
    'write_bundle': '._bundle',
    'Geometry': '._detection',
    'box_iou': '._detection',
    'guess_head': '._detection',
    'nms': '._detection',
    'BackendError': '._errors',
    'BackendUnavailableError': '._errors',
    'BundleError': '._errors',
    'DecodeError': '._errors',
    'EdgeError': '._errors',
    'InferenceError': '._errors',
    'InputError': '._errors',
    'IntegrityError': '._errors',
    'KeyFileError': '._errors',
    'ManifestError': '._errors',
    'ModelError': '._errors',
    'SignatureError': '._errors',
    'SinkError': '._errors',
    'SourceError': '._errors',
    'UnsafeArchiveError': '._errors',
    'describe_validation_error': '._errors',
    'first_line': '._errors',
    'validated': '._errors',
    'MAX_IMAGE_PIXELS': '._imaging',
    'ImagePreprocessor': '._imaging',
    'load_image': '._imaging',
    'decode_image': '._imaging',
    'ModelDescription': '._make',
    'describe_model': '._make',
    'make_bundle': '._make',
    'model_format': '._make',
    'model_metadata': '._make',
    'MAX_INPUT_SIDE': '._manifest',
    'MAX_VERSION': '._manifest',
    'FileEntry': '._manifest',
    'Manifest': '._manifest',
    'Postprocess': '._manifest',
    'Preprocess': '._manifest',
    'Quantization': '._manifest',
    'TensorSpec': '._manifest',
    'Model': '._model',
    'Prediction': '._model',
    'Pipeline': '._pipeline',
    'PipelineStats': '._pipeline',
    'Predictor': '._pipeline',
    'Detection': '._record',
    'Latency': '._record',
    'ModelRef': '._record',
    'Record': '._record',
    'ScoredLabel': '._record',
    'error_record': '._record',
    'make_record': '._record',
    'utc_now': '._record',
    'SAMPLE_IMAGE_SUFFIXES': '._samples',
    'SampleCheck': '._samples',
    'check_samples': '._samples',
    'load_sample': '._samples',
    'parse_expires': '._samples',
    'PublicKey': '._signing',
    'generate_keypair': '._signing',
    'key_id': '._signing',
    'load_private_key': '._signing',
    'load_public_key': '._signing',
    'JsonlSink': '._sinks',
    'Sink': '._sinks',
    'SqliteSink': '._sinks',
    'StreamSink': '._sinks',
    'open_sink': '._sinks',
    '__version__': '._version',
}

__all__ = [
    "MAX_IMAGE_PIXELS",
    "MAX_INPUT_SIDE",
    "MAX_VERSION",
    "SAMPLE_IMAGE_SUFFIXES",
    "AnnotatedImageSink",
    "BackendError",
    "BackendUnavailableError",
    "Bundle",
    "BundleError",
    "DecodeError",
    "Detection",
    "EdgeError",
    "FileEntry",
    "Geometry",
    "ImagePreprocessor",
    "InferenceError",
    "InputError",
    "IntegrityError",
    "JsonlSink",
    "KeyFileError",
    "Latency",
    "Manifest",
    "ManifestError",
    "Model",
    "ModelDescription",
    "ModelError",
    "ModelRef",
    "Pipeline",
    "PipelineStats",
    "Postprocess",
    "Prediction",
    "Predictor",
    "Preprocess",
    "PublicKey",
    "Quantization",
    "Record",
    "SampleCheck",
    "ScoredLabel",
    "SignatureError",
    "Sink",
    "SinkError",
    "SourceError",
    "SqliteSink",
    "StreamSink",
    "TensorSpec",
    "UnsafeArchiveError",
    "__version__",
    "annotation_color",
    "bench_model",
    "box_iou",
    "check_samples",
    "decode_image",
    "describe_model",
    "describe_validation_error",
    "draw_detections",
    "error_record",
    "first_line",
    "generate_keypair",
    "guess_head",
    "is_archive",
    "key_id",
    "load_image",
    "load_private_key",
    "load_public_key",
    "load_sample",
    "make_bundle",
    "make_record",
    "manifest_summary",
    "model_format",
    "model_metadata",
    "nms",
    "open_bundle",
    "open_sink",
    "pack_bundle",
    "parse_expires",
    "prescan_tar",
    "safe_extract",
    "sha256_file",
    "sign_bundle",
    "utc_now",
    "validated",
    "write_bundle",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
