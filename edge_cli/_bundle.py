"""`edge bundle`: wrap any .tflite/.onnx into a bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from edge_runtime import (
    EdgeError,
    InputError,
    Postprocess,
    Preprocess,
    describe_model,
    load_private_key,
    load_sample,
    make_bundle,
    parse_expires,
)

from ._common import echo_json

__all__ = ["bundle_cmd", "detection_summary", "parse_floats", "parse_size"]


def parse_size(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        w, h = value.lower().split("x")
        size = (int(w), int(h))
    except ValueError:
        raise click.BadParameter(f"{value!r}: write it as WIDTHxHEIGHT, e.g. 224x224") from None
    if size[0] <= 0 or size[1] <= 0:
        raise click.BadParameter(f"{value!r}: width and height must be positive")
    return size


def parse_floats(value: str | None, what: str) -> list[float] | None:
    if value is None:
        return None
    try:
        vals = [float(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{what} {value!r}: write one number or three separated by commas") from None
    if len(vals) not in (1, 3):
        raise click.BadParameter(f"{what} {value!r}: give 1 or 3 values (one per channel)")
    return vals


def _read_labels(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"{path}: cannot read labels ({exc})") from exc
    labels = text.splitlines()
    if not labels:
        raise click.BadParameter(f"{path}: the labels file is empty")
    return labels


def _parse_expires(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return parse_expires(value)
    except EdgeError as exc:
        raise click.BadParameter(str(exc).removeprefix("expires "), param_hint="--expires") from None


def _check_sample_files(files: tuple[Path, ...]) -> None:
    for f in files:
        try:
            load_sample(f)
        except EdgeError as exc:
            raise click.BadParameter(str(exc), param_hint="--sample") from None


def _policy_note(samples: list[str], expires: str | None, signed: bool) -> None:
    """Say on stderr what a device with the default update policy will refuse, and why."""
    missing = [what for what, ok in (("--sign-key", signed), ("--sample", bool(samples)),
                                     ("--expires", expires is not None)) if not ok]
    if missing:
        click.echo(f"note: devices with the default update policy will refuse this bundle; add "
                   f"{', '.join(missing)} (see `edge agent example-config`, [updates])", err=True)


def _detection_options(pre: Preprocess, post: Postprocess, **flags: Any) -> tuple[Preprocess, Postprocess]:
    ctx = click.get_current_context()
    given = {name for name in ("resize", "resize_mode", "interpolation", "mean", "std", "scale", "color")
             if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)}
    pre_fields = {"size" if f == "resize" else f: getattr(pre, "size" if f == "resize" else f) for f in given}
    names = {"conf": "score_threshold", "iou": "iou_threshold"}
    post_fields: dict[str, Any] = {names.get(k, k): v for k, v in flags.items() if v is not None}
    if post.labels is not None:
        post_fields["labels"] = post.labels
    return Preprocess(**pre_fields), Postprocess(**post_fields)


def detection_summary(manifest: dict[str, Any], n_labels: int) -> str:
    """One line saying how a detection bundle decodes its outputs (for `edge bundle` and `edge inspect`)."""
    post, pre = manifest["postprocess"], manifest["preprocess"]
    size = "x".join(str(v) for v in pre["size"]) if pre.get("size") else "model input size"
    pad = f" pad {pre['pad_value']}" if pre["resize_mode"] == "letterbox" else ""
    return (f"detection  head {post['head']}, boxes {post['box_format']} {post['box_units']}, "
            f"conf {post['score_threshold']:g}, iou {post['iou_threshold']:g}, max {post['max_detections']}, "
            f"{n_labels} labels; resize {pre['resize_mode']}{pad} to {size}, scale {pre['scale']:.6g}")


@click.command("bundle")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path),
              help="Bundle directory to write, or a path ending in .tar.gz for the archive form.")
@click.option("--labels", "labels_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Labels file, one label a line (line index = class id).")
@click.option("--name", help="Model name (default: the model file's stem).")
@click.option("--version", "version", type=click.IntRange(min=1), default=1, show_default=True,
              help="Integer version; increases by one per release.")
@click.option("--task", type=click.Choice(["classification", "detection", "regression", "tabular"]),
              default="classification", show_default=True)
@click.option("--resize", help="Resize images to WIDTHxHEIGHT (default: the model's input size).")
@click.option("--resize-mode", type=click.Choice(["squash", "letterbox", "center-crop"]), default="squash",
              show_default=True,
              help="squash: whole image; letterbox: keep aspect, pad; center-crop: keep aspect, crop.")
@click.option("--interpolation", type=click.Choice(["nearest", "bilinear", "bicubic", "area"]), default="bilinear",
              show_default=True)
@click.option("--mean", help="Per-channel mean subtracted after scaling, e.g. 127.5 or 123.7,116.3,103.5.")
@click.option("--std", help="Per-channel std divided by, e.g. 127.5 or 58.4,57.1,57.4.")
@click.option("--scale", type=float, default=1.0, show_default=True,
              help="Pixel multiplier applied before mean/std (e.g. 0.00392 for 1/255).")
@click.option("--color", type=click.Choice(["rgb", "bgr"]), default="rgb", show_default=True)
@click.option("--layout", type=click.Choice(["NHWC", "NCHW"]), help="Override the guessed image layout.")
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--softmax", type=click.Choice(["auto", "yes", "no"]), default="auto", show_default=True,
              help="auto: apply softmax only when outputs are not already probabilities.")
@click.option("--head", type=click.Choice(["ssd", "yolo", "yolov5"]),
              help="Detection: layout of the outputs (default: read from their shapes and the model's metadata). "
                   "ssd: boxes/classes/scores/count post-processed; yolo: raw [1,4+nc,N]; yolov5: raw [1,N,5+nc].")
@click.option("--box-format", type=click.Choice(["xyxy", "yxyx", "cxcywh"]),
              help="Detection: how the head gives a box (default per head: ssd yxyx, yolo cxcywh).")
@click.option("--box-units", type=click.Choice(["normalized", "pixels"]),
              help="Detection: boxes in 0-1 of the input or in input pixels (default: read from the model).")
@click.option("--conf", type=click.FloatRange(0.0, 1.0),
              help="Detection: drop detections scoring below this (default 0.25).")
@click.option("--iou", type=click.FloatRange(0.0, 1.0, min_open=True),
              help="Detection: NMS IoU threshold, per class (default 0.45).")
@click.option("--max-detections", type=click.IntRange(min=1),
              help="Detection: at most this many per frame (default 100).")
@click.option("--sample", "sample_files", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Sample input (image, or .npy array for tabular models) a device runs as its health check "
                   "before switching; checked here (it must decode and run). Repeatable.")
@click.option("--expires",
              help="When devices start refusing this bundle (freeze protection): a duration from now (90d, 12h, "
                   "4w) or an ISO 8601 date/time (2027-06-01, 2027-06-01T00:00:00Z).")
@click.option("--sign-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Ed25519 private key (from `edge keys generate`) to sign the manifest.")
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the written manifest as JSON.")
def bundle_cmd(model: Path, out: Path, labels_file: Path | None, name: str | None, version: int, task: str,
               resize: str | None, resize_mode: str, interpolation: str, mean: str | None, std: str | None,
               scale: float, color: str, layout: str | None, top_k: int, softmax: str, sample_files: tuple[Path, ...],
               expires: str | None, sign_key: Path | None, force: bool, as_json: bool, head: str | None = None,
               box_format: str | None = None, box_units: str | None = None, conf: float | None = None,
               iou: float | None = None, max_detections: int | None = None) -> None:
    """Wrap a third-party .tflite or .onnx MODEL into a bundle.

    Inputs, outputs and quantization are read from the model; you give the labels and how images
    are preprocessed. For uint8 models fed raw pixels (e.g. Coral's) leave --mean/--std out.

    \b
    Examples:
      edge bundle mobilenet_v2_1.0_224_quant.tflite --labels imagenet_labels.txt -o mobilenet/
      edge bundle model.onnx --labels labels.txt --mean 123.7,116.3,103.5 --std 58.4,57.1,57.4 \\
          --resize 224x224 --resize-mode center-crop --sign-key keys/edge_signing.key -o model.tar.gz
      edge bundle model.tflite --labels labels.txt --sample cat.jpg --sample dog.jpg --expires 90d \\
          --sign-key keys/edge_signing.key -o model-v2.tar.gz --version 2

    A device with the default update policy installs only signed bundles with --sample inputs
    (its health check) and an --expires date.
    """
    expires_at = _parse_expires(expires)
    _check_sample_files(sample_files)
    key = load_private_key(sign_key) if sign_key else None
    labels = _read_labels(labels_file) if labels_file else None
    desc = describe_model(model)
    if labels is not None and task == "classification":
        classes = desc.outputs[0].shape[-1] if desc.outputs and desc.outputs[0].shape else -1
        if classes > 0 and classes != len(labels):
            raise click.BadParameter(
                f"{labels_file}: {len(labels)} labels, but the model outputs {classes} classes")
    pre = Preprocess(kind="none") if task in ("tabular", "regression") else Preprocess(
        size=parse_size(resize), resize_mode=resize_mode, interpolation=interpolation,
        color=color, mean=parse_floats(mean, "--mean"), std=parse_floats(std, "--std"),
        scale=scale)
    post = Postprocess(top_k=top_k, softmax={"auto": "auto", "yes": True, "no": False}[softmax],
                       labels="labels.txt" if labels is not None else None)
    if task == "detection":
        # Only what the user said is kept as given; make_bundle reads the rest from the model.
        pre, post = _detection_options(pre, post, head=head, box_format=box_format, box_units=box_units,
                                       conf=conf, iou=iou, max_detections=max_detections)
    try:
        path = make_bundle(model, out, name=name, version=version, labels=labels, task=task, preprocess=pre,
                           postprocess=post, sample_files=sample_files, expires=expires_at,
                           layouts=[layout] if layout else None, sign_key=key, overwrite=force)
    except InputError as exc:
        # only the samples' check at the source raises it: the model cannot run a --sample
        raise click.BadParameter(str(exc), param_hint="--sample") from None
    from edge_runtime import open_bundle

    b = open_bundle(path, pubkey=key.public_key() if key else None)
    if as_json:
        echo_json({"bundle": str(path), "signed": key is not None,
                   "manifest": b.manifest.to_dict(json=True)})
    else:
        m = b.manifest
        click.echo(f"wrote {path}: {m.name} v{m.version} ({m.format}, {len(m.files)} files, "
                   f"{'signed' if key else 'unsigned'}, {len(m.samples)} sample(s) checked, "
                   f"expires {m.expires or 'never'})")
        if m.task == "detection":
            click.echo(detection_summary(m.to_dict(json=True), len(b.labels())))
    _policy_note(b.manifest.samples, b.manifest.expires, key is not None)
    b.close()
