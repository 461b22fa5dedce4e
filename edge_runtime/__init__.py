"""edge_runtime: run ML model bundles on edge devices, from cameras or files, fully offline.

Importing this package loads NumPy, Pillow and pydantic only; backends import their library
(LiteRT, onnxruntime, OpenCV) when they load a model, and nothing here imports a training
framework, FastAPI or SQLAlchemy.
"""

from __future__ import annotations

from ._bundle import Bundle, open_bundle, pack_bundle, safe_extract, sha256_file, sign_bundle, write_bundle
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
)
from ._imaging import load_image
from ._make import ModelDescription, describe_model, make_bundle, model_format
from ._manifest import FileEntry, Manifest, Postprocess, Preprocess, Quantization, TensorSpec
from ._model import Model, Prediction
from ._pipeline import Pipeline, PipelineStats, error_record, make_record
from ._signing import generate_keypair, load_private_key, load_public_key
from ._sinks import JsonlSink, Sink, SqliteSink, StreamSink, open_sink
from ._version import __version__

__all__ = [
    "BackendError",
    "BackendUnavailableError",
    "Bundle",
    "BundleError",
    "DecodeError",
    "EdgeError",
    "FileEntry",
    "InferenceError",
    "InputError",
    "IntegrityError",
    "JsonlSink",
    "KeyFileError",
    "Manifest",
    "ManifestError",
    "Model",
    "ModelDescription",
    "ModelError",
    "Pipeline",
    "PipelineStats",
    "Postprocess",
    "Prediction",
    "Preprocess",
    "Quantization",
    "SignatureError",
    "Sink",
    "SinkError",
    "SourceError",
    "SqliteSink",
    "StreamSink",
    "TensorSpec",
    "UnsafeArchiveError",
    "__version__",
    "describe_model",
    "error_record",
    "generate_keypair",
    "load_image",
    "load_private_key",
    "load_public_key",
    "make_bundle",
    "make_record",
    "model_format",
    "open_bundle",
    "open_sink",
    "pack_bundle",
    "safe_extract",
    "sha256_file",
    "sign_bundle",
    "write_bundle",
]
