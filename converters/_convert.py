"""The conversion pipeline: export, quantize, bundle, evaluate, time, recommend, report."""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from edge_runtime import (
    Detection,
    EdgeError,
    Model,
    Preprocess,
    TensorSpec,
    describe_model,
    describe_validation_error,
    guess_head,
    load_sample,
    make_bundle,
    open_bundle,
    parse_expires,
)

from ._cpu import cpu_name, has_vnni
from ._data import (
    InputSet,
    Sample,
    fit_labels,
    fit_tensor,
    iter_progress,
    load_calibration,
    load_eval,
    read_labels,
    resolve_targets,
    sample_tensor,
)
from ._errors import CalibrationError, ConversionError, EvalDataError, QuantizationError, ShapeError
from ._evaluate import Outputs, box_agreement, feed_for, measure_latency, quantize_input, run_detector, run_model
from ._options import ConvertOptions
from ._profile import MeasureOn, resolve_measurement
from ._quantize import QUANTIZERS, NotApplicable, QuantResult
from ._report import EvalSummary, Report, VariantReport
from ._select import recommend
from ._sources import Source, open_source

__all__ = ["VARIANT_NAMES", "bundle_dir_name", "convert"]

log = logging.getLogger(__name__)

VARIANT_NAMES = {"none": "float", "fp16": "fp16", "dynamic": "dynamic", "int8": "int8"}
#: at most this many rows are used to check a scikit-learn export against the estimator
_MAX_CHECK_ROWS = 2000


@dataclass
class _Variant:
    mode: str
    name: str
    report: VariantReport
    path: Path | None = None
    bundle: Path | None = None
    settings: dict[str, Any] = field(default_factory=dict)


def bundle_dir_name(name: str, target: str, variant: str) -> str:
    return f"{name}-{target}-{variant}"


def convert(source: str | Path, out_dir: str | Path, options: ConvertOptions | None = None,
            **fields: Any) -> Report:
    """Convert ``source`` into one bundle per variant under ``out_dir``, plus report.md/report.json.

    ``options`` or keyword fields of :class:`ConvertOptions` (``to="onnx"``, ``quantize=["int8"]``, ...).
    """
    try:
        opts = options if options is not None else ConvertOptions(**fields)
    except ValidationError as exc:
        raise ConversionError(describe_validation_error(exc, "conversion options", limit=exc.error_count())) from exc
    try:
        return _convert(str(source), Path(out_dir), opts)
    except EdgeError as exc:
        # The runtime's errors (unreadable image, model it cannot load) end a conversion too.
        raise ConversionError(str(exc)) from exc


def _convert(location: str, out: Path, opts: ConvertOptions) -> Report:
    src = open_source(location, opts)
    src.check_target(opts.to)
    name = opts.name or _default_name(location)
    planned = [out / bundle_dir_name(name, opts.to, VARIANT_NAMES[m]) for m in opts.quantize]
    if not opts.overwrite:
        taken = [p for p in planned if p.exists()]
        if taken:
            raise ConversionError(f"{taken[0]} already exists; pass --overwrite or choose another -o directory")
    measure = resolve_measurement(opts.to, profile=opts.profile, backend=opts.backend, threads=opts.threads)
    expires = parse_expires(opts.expires) if opts.expires else None  # a typo costs seconds, not an export
    # Data is read (and rejected) before the slow export, so a typo costs seconds, not minutes.
    calib = load_calibration(opts.calibration, limit=opts.max_calibration) if opts.calibration else None
    if opts.quantize == ["none", "int8"] and calib is None:
        # Asked for int8 alone: say so now. With several modes, int8 may not apply to the model at all
        # (a tree ensemble), so the quantizer decides.
        raise CalibrationError("int8 quantization needs calibration data: pass --calibration DIR_OR_NPY (a "
                               "directory of representative images, or a .npy of model inputs)")
    eval_set = load_eval(opts.eval) if opts.eval is not None else None
    src.load()
    with tempfile.TemporaryDirectory(prefix="edge-convert-") as tmp:
        return _pipeline(src, name, out, opts, measure, calib, eval_set, Path(tmp), expires)


def _pipeline(src: Source, name: str, out: Path, opts: ConvertOptions, measure: MeasureOn, calib: InputSet | None,
              eval_set: InputSet | None, work: Path, expires: str | None = None) -> Report:
    ext = opts.to
    rows = _check_rows(eval_set, calib)
    float_path = src.export(ext, work / f"float.{ext}", data=rows)
    desc = describe_model(float_path)
    layout = src.layout(ext)
    spec = desc.inputs[0] if layout is None else desc.inputs[0].replace(layout=layout)
    preprocess = opts.preprocess or src.default_preprocess(ext) or Preprocess(kind="image")
    _check_preprocess(preprocess, spec, calib, eval_set)
    for data in (calib, eval_set):
        if data is not None and data.kind == "tensors":
            for s in data.samples:
                fit_tensor(np.asarray(s.tensor), spec, origin=data.source)
    task = src.task
    if task == "classification" and guess_head([o.shape for o in desc.outputs]) is not None:
        # a detection head (one [1, 4+classes, N] output, or SSD's four): boxes, not one label per input
        task = "detection"
        log.info("the model's outputs are a detection head: converting it as a detector")
    detection = task == "detection"
    n_classes = desc.outputs[_score_output(desc.outputs)].shape[-1] if task not in ("regression",
                                                                                     "detection") else None
    labels: list[str] | None = None
    if opts.labels is not None:
        labels = fit_labels(read_labels(opts.labels), n_classes if n_classes and n_classes > 0 else None,
                            str(opts.labels))
    elif src.labels is not None:
        labels = src.labels
    if detection:
        # The runtime reads a detector's pre/postprocessing from the model (head, letterbox, scale,
        # labels in its metadata); calibration and every variant use exactly that.
        probe = open_bundle(make_bundle(float_path, work / "probe", task="detection",
                                        preprocess=opts.preprocess or Preprocess(kind="image"), labels=labels,
                                        overwrite=True))
        preprocess = probe.manifest.preprocess
        labels = labels or probe.labels() or None
    targets: np.ndarray | None = None
    values: np.ndarray | None = None
    if eval_set is not None and eval_set.labelled and not detection:
        if task == "regression":
            values = _numeric_targets(eval_set)
        else:
            targets = resolve_targets(eval_set, labels or [], n_classes=n_classes, by_value=src.class_values)
    calib_tensors = _calibration_tensors(calib, preprocess, spec, opts) if calib is not None else []
    sample_files, sample_warning = _pick_samples(eval_set if eval_set is not None else calib, preprocess,
                                                 opts.samples, work / "samples")

    variants: list[_Variant] = []
    wanted_quant = [m for m in opts.quantize if m != "none"]
    for mode in opts.quantize:
        vname = VARIANT_NAMES[mode]
        v = _Variant(mode, vname, VariantReport(variant=vname, format=ext))
        variants.append(v)
        if mode == "none":
            v.path = float_path
            v.settings = {"tool": src.info().get("converter", _exporter(src, ext))}
        else:
            try:
                res = _quantize(src, mode, float_path, calib_tensors, opts, work / f"{vname}.{ext}")
            except NotApplicable as exc:
                v.report = v.report.model_copy(update={"status": "skipped", "reason": str(exc)})
                continue
            except QuantizationError as exc:
                if len(wanted_quant) == 1:
                    raise
                log.warning("%s variant failed: %s", vname, exc)
                v.report = v.report.model_copy(update={"status": "skipped", "reason": f"failed: {exc}"})
                continue
            v.path, v.settings = res.path, res.settings
            v.report.notes.extend(res.notes)
        v.report.settings = dict(v.settings)
        v.bundle = _bundle(v.path, work / "bundles" / vname, name=name, opts=opts, src=src, labels=labels,
                           task=task, preprocess=preprocess, layout=layout, mode=mode, metrics={},
                           profiles=[], overwrite=True)

    ok = [v for v in variants if v.bundle is not None]
    data = eval_set if eval_set is not None else calib
    summary = _summary(eval_set, calib, targets, values)
    if detection and summary.kind != "none":
        summary = summary.model_copy(update={"note": "detection: each variant's boxes against the float model's "
                                             "(same label, IoU >= 0.5)" + (f"; {summary.note}" if summary.note
                                                                          else "")})
    models = [Model.load(v.bundle, backend=measure.backend, threads=measure.threads) for v in ok if v.bundle]
    try:
        outputs: list[Outputs | None] = [None] * len(ok)
        boxes: list[list[list[Detection]] | None] = [None] * len(ok)
        images: dict[str, np.ndarray] = {}
        if data is not None:
            for i, (v, m) in enumerate(zip(ok, models, strict=True)):
                if detection:
                    boxes[i] = run_detector(m, data.samples, images, progress=opts.progress,
                                            desc=f"evaluating {v.name}")
                    continue
                outputs[i] = run_model(m, data.samples, images, progress=opts.progress, desc=f"evaluating {v.name}")
        feeds = [_latency_feed(m, data.samples[0] if data is not None else None, images) for m in models]
        p50 = measure_latency(models, feeds, opts.latency_runs)
    finally:
        for m in models:
            m.close()
    _fill_metrics(ok, outputs, p50, targets, values, opts, boxes)
    report_variants = [v.report for v in variants]
    best, reason = recommend(report_variants, prefer=opts.prefer, max_drop=opts.max_drop,
                             measured=summary.kind != "none")
    warnings = [sample_warning] if sample_warning else []
    if expires is None:
        warnings.append("no expiry (--expires none): devices with the default update policy (updates.require_expiry) "
                        "refuse these bundles")
    if calib is not None and calib.skipped:
        warnings.append(f"{len(calib.skipped)} calibration file(s) could not be read and were skipped")
    if eval_set is None and calib is not None:
        warnings.append("no --eval set: quality is agreement with the float model on the calibration inputs, "
                        "which the int8 ranges were fitted to; pass --eval with held-out data for a fair number")

    report = Report(name=name, task=task, source=src.info(), target=ext, backend=measure.backend,
                    threads=measure.threads,
                    profile=measure.profile, cpu=cpu_name(), vnni=has_vnni(), eval=summary, max_drop=opts.max_drop,
                    prefer=opts.prefer, variants=report_variants, recommended=best, recommendation=reason,
                    warnings=warnings, out_dir=str(out))
    out.mkdir(parents=True, exist_ok=True)
    measured_at = datetime.now(UTC).isoformat(timespec="seconds")
    for v in ok:
        assert v.path is not None
        final = out / bundle_dir_name(name, ext, v.name)
        metrics = _manifest_metrics(v.report, report, measured_at, best)
        _bundle(v.path, final, name=name, opts=opts, src=src, labels=labels, task=task, preprocess=preprocess,
                layout=layout, mode=v.mode, metrics=metrics, profiles=[measure.profile] if measure.profile else [],
                overwrite=opts.overwrite, settings=v.settings, sample_files=sample_files, expires=expires)
        v.report.bundle = str(final)
    (out / "report.json").write_text(report.to_json(), encoding="utf-8")
    (out / "report.md").write_text(report.to_markdown(), encoding="utf-8")
    return report


# -- steps ---------------------------------------------------------------------------------------
def _quantize(src: Source, mode: str, float_path: Path, calib: Sequence[np.ndarray], opts: ConvertOptions,
              out: Path) -> QuantResult:
    native = src.native_quantize(opts.to, mode, calib, out)
    if native is not None:
        settings: dict[str, Any] = {"tool": "TFLiteConverter", "mode": mode}
        notes = []
        if mode == "int8":
            settings.update({"io": opts.io_dtype, "calibration_inputs": len(calib)})
            notes.append(f"full int8 ({opts.io_dtype} I/O), representative dataset of {len(calib)} input(s)")
        return QuantResult(native, settings, notes)
    return QUANTIZERS[opts.to].quantize(float_path, mode, calib, opts, out)


def _bundle(model: Path, out: Path, *, name: str, opts: ConvertOptions, src: Source, labels: list[str] | None,
            task: str, preprocess: Preprocess, layout: str | None, mode: str, metrics: dict[str, Any],
            profiles: list[str], overwrite: bool, settings: dict[str, Any] | None = None,
            sample_files: Sequence[Path] = (), expires: str | None = None) -> Path:
    source = dict(src.info())
    if settings:
        source["quantizer"] = settings
    post: dict[str, Any] = {}
    if not labels:
        post["labels"] = None
    return make_bundle(model, out, name=name, version=opts.version, labels=labels or None, task=task,
                       preprocess=preprocess, postprocess=post, source=source, quantization=mode,
                       metrics=metrics, profiles=profiles, layouts=[layout] if layout else None, overwrite=overwrite,
                       sample_files=sample_files, expires=expires)


def _pick_samples(data: InputSet | None, preprocess: Preprocess, n: int, work: Path) -> tuple[list[Path], str | None]:
    """Up to ``n`` raw inputs from the eval (else calibration) data, as files for the bundles' samples:
    images as they are, tabular rows as .npy. Returns them and, when there are none, a warning."""
    refused = "devices with the default update policy (updates.require_samples) refuse these bundles"
    if n == 0:
        return [], f"no samples (--samples 0): {refused}"
    if data is None:
        return [], f"no --eval or --calibration data to take samples from: {refused}"
    files: list[Path] = []
    if data.kind == "images":
        for s in data.samples:
            if len(files) >= n:
                break
            if s.path is None:
                continue
            try:
                load_sample(s.path)
            except EdgeError as exc:
                log.info("not a sample: %s", exc)
                continue
            files.append(s.path)
    elif preprocess.kind == "none":
        work.mkdir(parents=True, exist_ok=True)
        rows = [s.tensor for s in data.samples if s.tensor is not None][:n]
        for i, row in enumerate(rows):
            path = work / f"row-{i}.npy"
            np.save(path, np.asarray(row), allow_pickle=False)
            files.append(path)
    else:
        return [], (f"{data.source} holds preprocessed image tensors, not raw inputs a device can run as samples: "
                    f"{refused}; pass --eval with an image directory")
    if not files:
        return [], f"no usable sample inputs in {data.source}: {refused}"
    return files, None


def _calibration_tensors(calib: InputSet, preprocess: Preprocess, spec: TensorSpec,
                         opts: ConvertOptions) -> list[np.ndarray]:
    tensors = [sample_tensor(s, preprocess, spec) for s in iter_progress(calib.samples, desc="reading calibration",
                                                                         enabled=opts.progress)]
    if not tensors:
        raise CalibrationError(f"no usable calibration inputs in {calib.source}")
    return tensors


def _check_rows(eval_set: InputSet | None, calib: InputSet | None) -> list[np.ndarray]:
    rows: list[np.ndarray] = []
    for data in (eval_set, calib):
        if data is not None and data.kind == "tensors":
            rows += [s.tensor for s in data.samples[:_MAX_CHECK_ROWS] if s.tensor is not None]
    return rows[:_MAX_CHECK_ROWS]


def _check_preprocess(pre: Preprocess, spec: TensorSpec, calib: InputSet | None, eval_set: InputSet | None) -> None:
    if pre.kind == "image" and len(spec.shape) != 4:
        raise ShapeError(f"the model input {spec.name!r} has shape {spec.shape}, which is not an image batch; "
                         "use --preprocess none and give tensors (.npy/.npz)")
    for data, what in ((calib, "calibration"), (eval_set, "eval")):
        if data is not None and data.kind == "images" and pre.kind != "image":
            err = CalibrationError if what == "calibration" else EvalDataError
            raise err(f"the {what} data are images but the model takes tensors of shape {spec.shape} "
                      "(preprocess none); give a .npy/.npz of inputs instead")


def _score_output(outputs: Sequence[TensorSpec]) -> int:
    for i, o in enumerate(outputs):
        if "prob" in o.name.lower() and np.dtype(o.dtype).kind == "f":
            return i
    return 0


def _numeric_targets(data: InputSet) -> np.ndarray:
    try:
        return np.asarray([float(s.label) for s in data.samples if s.label is not None], dtype=np.float64)
    except ValueError as exc:
        raise EvalDataError(f"{data.source}: a regression model needs numeric targets in y ({exc})") from exc


def _summary(eval_set: InputSet | None, calib: InputSet | None, targets: np.ndarray | None,
             values: np.ndarray | None) -> EvalSummary:
    if eval_set is not None:
        kind = "accuracy" if targets is not None else "agreement"
        note = "regression: mean absolute error against y" if values is not None else None
        return EvalSummary(kind=kind, data=eval_set.source, inputs=len(eval_set), note=note)
    if calib is not None:
        return EvalSummary(kind="agreement", data=calib.source, inputs=len(calib),
                           note="calibration inputs, no held-out --eval set")
    return EvalSummary(kind="none", note="not measured: pass --eval (labelled) or --calibration data")


def _latency_feed(model: Model, sample: Sample | None, images: dict[str, np.ndarray]) -> list[np.ndarray]:
    if sample is not None:
        return feed_for(model, sample, images)
    spec = model.manifest.inputs[0]
    shape = [d if d > 0 else 1 for d in spec.shape]
    return [quantize_input(np.zeros(shape, dtype=np.float32), spec)]


def _fill_metrics(ok: list[_Variant], outputs: list[Outputs | None], p50: list[float], targets: np.ndarray | None,
                  values: np.ndarray | None, opts: ConvertOptions,
                  boxes: Sequence[list[list[Detection]] | None] = ()) -> None:
    ref = outputs[0]
    float_size = ok[0].path.stat().st_size if ok and ok[0].path else None
    float_acc: float | None = None
    for i, v in enumerate(ok):
        assert v.path is not None
        r = v.report
        r.size_bytes = v.path.stat().st_size
        r.size_ratio = round(r.size_bytes / float_size, 4) if float_size else None
        r.p50_ms = round(p50[i], 4)
        r.latency_ratio = round(p50[i] / p50[0], 4) if p50[0] > 0 else None
        r.slower_than_float = (p50[i] > p50[0]) if i > 0 else None
        found = boxes[i] if i < len(boxes) else None
        if found is not None and boxes[0] is not None:
            # Detection: agreement with the float model's boxes; the drop is 100 minus the lower of
            # recall (boxes lost) and precision (boxes invented).
            agree = box_agreement(boxes[0], found)
            r.recall, r.precision = round(agree.recall, 4), round(agree.precision, 4)
            r.mean_iou = round(agree.mean_iou, 4) if agree.mean_iou is not None else None
            r.boxes = agree.found
            r.accuracy_drop = round(100.0 - min(agree.recall, agree.precision), 4)
            r.within_max_drop = r.accuracy_drop <= opts.max_drop + 1e-9
            continue
        out = outputs[i]
        if out is None or ref is None:
            r.within_max_drop = True if i == 0 else None
            continue
        diff = np.abs(out.scores - ref.scores) if out.scores.shape == ref.scores.shape else None
        if diff is not None:
            r.max_abs_diff = float(diff.max()) if diff.size else 0.0
            r.mean_abs_diff = float(diff.mean()) if diff.size else 0.0
        if out.classification and ref.classification:
            r.agreement = round(float(np.mean(out.top1 == ref.top1)) * 100, 4)
            if targets is not None:
                r.accuracy = round(float(np.mean(out.top1 == targets)) * 100, 4)
                if i == 0:
                    float_acc = r.accuracy
                r.accuracy_drop = round((float_acc or 0.0) - r.accuracy, 4)
            else:
                r.accuracy_drop = round(100.0 - r.agreement, 4)
            r.within_max_drop = r.accuracy_drop <= opts.max_drop + 1e-9
        else:
            # Regression: the mean change against the float model, in percent of the outputs' spread.
            spread = float(np.std(ref.scores)) or 1.0
            drop = 100.0 * (r.mean_abs_diff or 0.0) / spread
            r.accuracy_drop = round(drop, 4)
            r.within_max_drop = drop <= opts.max_drop + 1e-9
            if values is not None and out.scores.shape[0] == len(values):
                mae = float(np.mean(np.abs(out.scores[:, 0] - values)))
                r.notes.append(f"mean absolute error against y: {mae:.4g}")


def _manifest_metrics(v: VariantReport, report: Report, measured_at: str, best: str | None) -> dict[str, Any]:
    keys = ("size_bytes", "size_ratio", "accuracy", "accuracy_drop", "agreement", "max_abs_diff", "mean_abs_diff",
            "recall", "precision", "mean_iou", "boxes", "p50_ms", "latency_ratio", "slower_than_float",
            "within_max_drop")
    m: dict[str, Any] = {k: getattr(v, k) for k in keys if getattr(v, k) is not None}
    m["latency"] = {"p50_ms": v.p50_ms, "backend": report.backend, "threads": report.threads, "cpu": report.cpu,
                    "vnni": report.vnni, "profile": report.profile, "measured_at": measured_at}
    m["eval"] = report.eval.model_dump()
    m["recommended"] = v.variant == best
    return m


def _exporter(src: Source, target: str) -> str:
    from ._sources._base import dist_version

    if src.framework in ("pytorch", "torchscript", "torch.export"):
        if target == "onnx":
            return f"torch.onnx {dist_version('torch')}"
        return f"litert-torch {dist_version('litert-torch')}"
    if src.framework == "keras":
        return f"tf2onnx {dist_version('tf2onnx')}" if target == "onnx" else "TFLiteConverter"
    return "copy"


def _default_name(location: str) -> str:
    if ":" in location and not Path(location).exists():
        base = location.rsplit(":", 1)[1].rsplit(".", 1)[-1]
    else:
        p = Path(location.rstrip("/"))
        base = p.name if p.is_dir() else p.stem
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._-") or "model"
    return clean if clean[0].isalnum() else f"m{clean}"
