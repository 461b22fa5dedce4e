"""Describe bare model files and wrap them into bundles (what `edge bundle` and the converters use)."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._bundle import write_bundle
from ._errors import BackendUnavailableError, ManifestError, ModelError
from ._manifest import Invalid, Postprocess, Preprocess, TensorSpec
from ._samples import check_samples as run_samples
from ._samples import load_sample, sample_names
from ._version import __version__
from .backends import BackendOptions, TensorInfo, backends_for

if TYPE_CHECKING:
    from ._signing import PrivateKey

__all__ = ["ModelDescription", "describe_model", "detection_settings", "make_bundle", "model_format",
           "model_metadata"]

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
        if not cls.available() or not cls.reads_io:
            continue
        try:
            be = cls.load(p, BackendOptions(threads=threads))
        except BackendUnavailableError as exc:
            errors.append(str(exc))
            continue
        try:
            ins, outs = be.inputs, be.outputs
            if fmt == "onnx":
                ins, outs = _onnx_quantization(p, ins, outs)
            return ModelDescription(p, fmt, [i.to_spec() for i in ins], [o.to_spec() for o in outs],
                                    cls.name, be.library_version(), p.stat().st_size)
        finally:
            be.close()
    hint = "pip install 'edge-runtime[tflite]'" if fmt == "tflite" else "pip install 'edge-runtime[onnx]'"
    raise BackendUnavailableError(f"{p}: no installed backend can describe {fmt} models; {hint}"
                                  + (f" ({'; '.join(errors)})" if errors else ""))


def _onnx_quantization(path: Path, ins: Sequence[TensorInfo], outs: Sequence[TensorInfo]
                       ) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """The 8-bit inputs and outputs of an ONNX model with the scale and zero point its graph gives
    them (see ``_onnx_graph``): onnxruntime reports none, and without them a bundle's scores would be
    the raw integers."""
    eight_bit = {t.name for t in (*ins, *outs) if t.quantization is None and t.dtype.itemsize == 1
                 and t.dtype.kind in "iu"}
    if not eight_bit:
        return list(ins), list(outs)
    from ._onnx_graph import io_quantization

    found = io_quantization(path)
    if found is None:
        log.warning("%s: %s are 8-bit, and without the onnx package their scale and zero point cannot be "
                    "read from the graph; their values stay raw integers (pip install onnx)",
                    path, ", ".join(sorted(eight_bit)))
        return list(ins), list(outs)

    def fix(t: TensorInfo) -> TensorInfo:
        return replace(t, quantization=found[t.name]) if t.name in eight_bit and t.name in found else t

    return [fix(t) for t in ins], [fix(t) for t in outs]


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
        try:
            inputs = [i.replace(layout=lay) for i, lay in zip(inputs, layouts, strict=False)] + \
                inputs[len(layouts):]
        except Invalid as exc:
            raise ManifestError(f"cannot build manifest: inputs: layout: {exc.errors()[0]['msg']}") from exc
    pre = preprocess if isinstance(preprocess, Preprocess) else Preprocess(**(preprocess or {}))
    if task in ("tabular", "regression") and preprocess is None:
        pre = Preprocess(kind="none")
    post = postprocess if isinstance(postprocess, Postprocess) else Postprocess(**(postprocess or {}))
    if task == "detection":
        pre, post, labels = detection_settings(model_file, desc, inputs, pre, post, labels)
    quant = quantization or _guess_quantization(desc)
    fields: dict[str, Any] = {
        "name": name or Path(model_file).stem.replace(" ", "_"),
        "version": version,
        "task": task,
        "format": desc.format,
        "inputs": [i.to_dict() for i in inputs],
        "outputs": [o.to_dict() for o in desc.outputs],
        "preprocess": pre.to_dict(),
        "postprocess": post.to_dict(),
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


# -- detection: what the model says about its head, labels and preprocessing --------------------

#: first line of a TensorFlow label map that stands for the background class, which SSD class ids skip
_BACKGROUND = ("???", "background", "__background__")
#: metadata members larger than this are not read (a model file is not trusted input)
_MAX_META_BYTES = 1 << 20


def model_metadata(path: str | Path, fmt: str | None = None) -> dict[str, Any]:
    """What a model file says about itself beyond its tensors.

    ONNX: ``metadata_props`` (Ultralytics writes ``names``, ``imgsz``, ``stride``, ``task``);
    TFLite: files appended to the flatbuffer as a zip (Ultralytics' ``temp_meta.txt``, the TF
    Lite examples' label map). Python-literal values are read with ``ast.literal_eval`` only.
    ``labels`` holds the class names in class-id order when the model has them. Unreadable
    metadata is logged and ignored: it only supplies defaults.
    """
    p = Path(path)
    fmt = fmt or model_format(p)
    raw: dict[str, Any] = {}
    labels: list[str] | None = None
    try:
        if fmt == "onnx":
            raw = dict(_onnx_metadata(p))
        else:
            raw, labels = _tflite_metadata(p)
    except Exception as exc:  # noqa: BLE001 - metadata is optional; a model that runs is not refused for it
        log.warning("%s: cannot read the model's metadata (%s); using defaults", p, exc)
        return {}
    meta: dict[str, Any] = {k: _literal(v) for k, v in raw.items()}
    names = meta.get("names")
    if isinstance(names, dict) and names and all(isinstance(k, int) for k in names):
        labels = [str(names.get(i, i)) for i in range(max(names) + 1)]
    elif isinstance(names, list) and names:
        labels = [str(n) for n in names]
    if labels is not None:
        meta["labels"] = labels
    return meta


def _literal(v: Any) -> Any:
    import ast

    if not isinstance(v, str) or len(v) > _MAX_META_BYTES:
        return v
    try:
        return ast.literal_eval(v)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return v


def _onnx_metadata(p: Path) -> dict[str, str]:
    try:
        import onnxruntime as ort
    except ImportError:
        import onnx

        m = onnx.load(str(p), load_external_data=False)
        return {e.key: e.value for e in m.metadata_props}
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
    return dict(sess.get_modelmeta().custom_metadata_map)


def _tflite_metadata(p: Path) -> tuple[dict[str, Any], list[str] | None]:
    import zipfile

    if not zipfile.is_zipfile(p):
        return {}, None
    meta: dict[str, Any] = {}
    labels: list[str] | None = None
    with zipfile.ZipFile(p) as z:
        for info in z.infolist():
            if info.is_dir() or info.file_size > _MAX_META_BYTES:
                continue
            text = z.read(info).decode("utf-8", errors="replace")
            base = info.filename.rsplit("/", 1)[-1]
            if base in ("temp_meta.txt", "metadata.yaml", "metadata.json"):
                parsed = _literal(text.strip())
                if not isinstance(parsed, dict):
                    import json

                    try:
                        parsed = json.loads(text)
                    except ValueError:
                        parsed = None
                if isinstance(parsed, dict):
                    meta.update({str(k): v for k, v in parsed.items()})
            elif base.endswith(".txt") and labels is None:
                lines = [ln.strip() for ln in text.splitlines()]
                while lines and not lines[-1]:
                    lines.pop()
                labels = lines or None
    return meta, labels


def detection_settings(
    model_file: str | Path,
    desc: ModelDescription,
    inputs: Sequence[TensorSpec],
    pre: Preprocess,
    post: Postprocess,
    labels: Iterable[str] | None,
) -> tuple[Preprocess, Postprocess, list[str] | None]:
    """Pre/postprocessing and labels of a detection bundle: read from the model (output shapes and
    names, metadata), every field the caller set explicitly (``fields_set``) kept as given.

    Raises ModelError when the outputs match no known head, naming the shapes and the flags that
    would describe the model.
    """
    from ._detection import BOX_DEFAULTS, guess_head, head_problem, unknown_head_message

    meta = model_metadata(model_file, desc.format)
    labels_list = list(labels) if labels is not None else None
    meta_labels: list[str] | None = meta.get("labels")
    names = [o.name for o in desc.outputs]
    shapes = [o.shape for o in desc.outputs]
    hint = len(labels_list or meta_labels or []) or None
    head = post.head if post.head is not None else guess_head(shapes, classes=hint)
    if head is None:
        raise ModelError(f"{model_file}: {unknown_head_message(names, shapes)}")
    if head_problem(head, shapes) is not None:
        raise ModelError(f"{model_file}: {unknown_head_message(names, shapes, head)}")
    ultralytics = head in ("yolo", "yolov5")
    box_format, box_units = BOX_DEFAULTS[head]
    if ultralytics and desc.format == "tflite":
        box_units = "normalized"  # Ultralytics' TFLite exports give boxes in 0-1 of the input
    if labels_list is None and meta_labels:
        labels_list = list(meta_labels)
        log.info("%s: %d labels from the model's metadata", model_file, len(labels_list))
    if head == "ssd" and labels_list and labels_list[0].strip().lower() in _BACKGROUND:
        # TF label maps start with the background class, which SSD class ids skip: id 0 is line 2
        log.info("%s: label map starts with the background %r; class 0 is %r", model_file, labels_list[0],
                 labels_list[1] if len(labels_list) > 1 else None)
        labels_list = labels_list[1:]
    if ultralytics and labels_list is not None:
        classes = min(shapes[0][1], shapes[0][2]) - (4 if head == "yolo" else 5)
        if classes != len(labels_list):
            raise ModelError(f"{model_file}: {len(labels_list)} labels, but the {head} head "
                             f"{list(shapes[0])} has {classes} classes")
    post_fields: dict[str, Any] = {"head": head, "box_format": box_format, "box_units": box_units,
                                   "labels": "labels.txt" if labels_list is not None else None}
    post_fields.update({k: getattr(post, k) for k in post.fields_set})
    if post_fields.get("labels") is not None and labels_list is None:
        post_fields["labels"] = None
    pre_fields: dict[str, Any] = {}
    spec = inputs[0] if inputs else None
    if ultralytics:
        pre_fields = {"resize_mode": "letterbox", "pad_value": 114, "scale": 1 / 255}
        imgsz = meta.get("imgsz")
        dynamic = spec is None or any(d <= 0 for d in spec.shape[1:])
        if dynamic and isinstance(imgsz, list | tuple) and len(imgsz) == 2:
            pre_fields["size"] = (int(imgsz[1]), int(imgsz[0]))
    elif spec is not None and spec.dtype.startswith("float"):
        # TensorFlow's float SSDs take pixels in [-1, 1]; quantized ones take raw uint8 pixels
        pre_fields = {"mean": [127.5], "std": [127.5]}
    pre_fields.update({k: getattr(pre, k) for k in pre.fields_set})
    return Preprocess(**pre_fields), Postprocess(**post_fields), labels_list
