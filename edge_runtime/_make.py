"""Describe bare model files and wrap them into bundles (what `edge bundle` and the converters use)."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._bundle import write_bundle
from ._errors import BackendUnavailableError, ModelError
from ._manifest import Postprocess, Preprocess, TensorSpec
from ._samples import check_samples as run_samples
from ._samples import load_sample, sample_names
from ._signing import PrivateKey
from ._version import __version__
from .backends import BackendOptions, backends_for

__all__ = ["ModelDescription", "describe_model", "make_bundle", "model_format"]

log = logging.getLogger(__name__)

_MAGIC_TFLITE = b"TFL3"


@dataclass(frozen=True)
class ModelDescription:
    path: Path
    format: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    backend: str
    library: str
    size: int


def model_format(path: str | Path) -> str:
    """``tflite`` or ``onnx``, from the extension, checked against the file's first bytes."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".tflite", ".onnx"):
        raise ModelError(f"{p}: unknown model type {suffix or '(no extension)'}; expected .tflite or .onnx")
    try:
        with p.open("rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise ModelError(f"{p}: cannot read ({exc.strerror})") from exc
    if len(head) < 8:
        raise ModelError(f"{p}: file is {len(head)} bytes, too short to be a model (truncated?)")
    if suffix == ".tflite" and head[4:8] != _MAGIC_TFLITE:
        raise ModelError(f"{p}: not a TFLite flatbuffer (no TFL3 identifier)")
    return suffix[1:]


def describe_model(path: str | Path, *, threads: int | None = 1) -> ModelDescription:
    """Load a bare model on the first installed backend for its format and report its I/O."""
    p = Path(path)
    fmt = model_format(p)
    errors: list[str] = []
    for cls in backends_for(fmt):
        if not cls.available() or cls.name == "opencv-dnn":
            # OpenCV cannot report input shapes, so it cannot describe a model on its own.
            continue
        try:
            be = cls.load(p, BackendOptions(threads=threads))
        except BackendUnavailableError as exc:
            errors.append(str(exc))
            continue
        try:
            return ModelDescription(p, fmt, [i.to_spec() for i in be.inputs], [o.to_spec() for o in be.outputs],
                                    cls.name, be.library_version(), p.stat().st_size)
        finally:
            be.close()
    hint = "pip install 'edge-runtime[tflite]'" if fmt == "tflite" else "pip install 'edge-runtime[onnx]'"
    raise BackendUnavailableError(f"{p}: no installed backend can describe {fmt} models; {hint}"
                                  + (f" ({'; '.join(errors)})" if errors else ""))


def make_bundle(
    model_file: str | Path,
    out: str | Path,
    *,
    name: str | None = None,
    version: int = 1,
    labels: Iterable[str] | None = None,
    task: str = "classification",
    preprocess: Preprocess | Mapping[str, Any] | None = None,
    postprocess: Postprocess | Mapping[str, Any] | None = None,
    source: Mapping[str, Any] | None = None,
    quantization: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    profiles: Sequence[str] = (),
    extra_files: Mapping[str, str | Path | bytes] | None = None,
    samples: Sequence[str] = (),
    sample_files: Sequence[str | Path] = (),
    check_samples: bool = True,
    expires: str | None = None,
    layouts: Sequence[str] | None = None,
    sign_key: PrivateKey | None = None,
    overwrite: bool = False,
) -> Path:
    """Wrap ``model_file`` into a bundle at ``out`` (a directory, or ``.tar.gz``).

    Inputs, outputs and their quantization are read from the model itself.

    ``sample_files`` (images or ``.npy`` arrays) are copied in as ``samples/<name>`` and listed in
    ``manifest.samples``, next to ``samples`` (names of files already given in ``extra_files``).
    With ``check_samples`` every sample is decoded and run through the model before the bundle is
    written (the device's health check, at the source): a sample that fails raises InputError.
    ``expires`` is stored as given (see :func:`parse_expires` for durations such as ``90d``).
    """
    labels = list(labels) if labels is not None else None  # read twice when samples are checked
    extra = dict(extra_files or {})
    added = sample_names(sample_files, taken=[*extra, *samples])
    for sample in added.values():
        load_sample(sample)  # decodes, or names the file and the problem before anything is written
    extra.update(added)
    samples = [*samples, *added]
    desc = describe_model(model_file)
    inputs = desc.inputs
    if layouts:
        inputs = [i.model_copy(update={"layout": lay}) for i, lay in zip(inputs, layouts, strict=False)] + \
            inputs[len(layouts):]
    pre = preprocess if isinstance(preprocess, Preprocess) else Preprocess(**(preprocess or {}))
    if task in ("tabular", "regression") and preprocess is None:
        pre = Preprocess(kind="none")
    post = postprocess if isinstance(postprocess, Postprocess) else Postprocess(**(postprocess or {}))
    quant = quantization or _guess_quantization(desc)
    fields: dict[str, Any] = {
        "name": name or Path(model_file).stem.replace(" ", "_"),
        "version": version,
        "task": task,
        "format": desc.format,
        "inputs": [i.model_dump() for i in inputs],
        "outputs": [o.model_dump() for o in desc.outputs],
        "preprocess": pre.model_dump(),
        "postprocess": post.model_dump(),
        "source": dict(source or {"framework": "external", "file": Path(model_file).name}),
        "quantization": quant,
        "metrics": dict(metrics or {}),
        "profiles": list(profiles),
        "min_runtime": __version__,
        "samples": list(samples),
        "expires": expires,
    }
    if check_samples and samples:
        with tempfile.TemporaryDirectory(prefix="edge-samples-") as tmp:
            stage = write_bundle(Path(tmp) / "bundle", model_file=model_file, manifest_fields=fields, labels=labels,
                                 extra_files=extra)
            for r in run_samples(stage):
                log.info("sample %s: %s", r.name, r.label if r.values is None else r.values)
    return write_bundle(out, model_file=model_file, manifest_fields=fields, labels=labels,
                        extra_files=extra or None, sign_key=sign_key, overwrite=overwrite)


def _guess_quantization(desc: ModelDescription) -> str:
    if any(t.dtype in ("uint8", "int8") for t in desc.inputs + desc.outputs):
        return "int8"
    if any(t.dtype == "float16" for t in desc.inputs):
        return "fp16"
    return "none"
