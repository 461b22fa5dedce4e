"""edge_runtime: run ML model bundles on edge devices, from cameras or files, fully offline.

Importing this package loads NumPy, Pillow and pydantic only; backends import their library
(LiteRT, onnxruntime, OpenCV) when they load a model, and nothing here imports a training
framework, FastAPI or SQLAlchemy.
"""

from __future__ import annotations

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
)
from ._imaging import MAX_IMAGE_PIXELS, ImagePreprocessor, load_image
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
    "write_bundle",
]
