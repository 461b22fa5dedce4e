"""`edge inspect`: inputs, outputs and quantization of a model, plus the manifest of a bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edge_runtime import ModelDescription, TensorSpec, describe_model, is_archive, manifest_summary, open_bundle

from ._bundle import detection_summary
from ._common import echo_json

__all__ = ["inspect_cmd"]


@click.command("inspect")
@click.argument("target", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option("--no-verify", is_flag=True, help="For bundles: do not check file hashes.")
def inspect_cmd(target: Path, as_json: bool, no_verify: bool) -> None:
    """Show a model's or bundle's inputs and outputs (name, shape, dtype, layout, quantization).

    TARGET is a .tflite or .onnx file, a bundle directory or a bundle .tar.gz. For a bundle the
    manifest is shown too, after its files were checked against their hashes.

    \b
    Example:
      edge inspect mobilenet_v2_1.0_224_quant.tflite
      edge inspect bundles/mobilenet --json
    """
    if target.is_dir() or is_archive(target):
        b = open_bundle(target, verify_hashes=not no_verify)
        m = b.manifest
        data: dict[str, Any] = {
            "kind": "bundle",
            "path": str(target),
            "format": m.format,
            "inputs": [t.to_dict() for t in m.inputs],
            "outputs": [t.to_dict() for t in m.outputs],
            "signed": b.signature is not None,
            "hashes_verified": not no_verify,
            "labels": len(b.labels()),
            "manifest": manifest_summary(m),
        }
        b.close()
    else:
        d = describe_model(target)
        data = {
            "kind": "model",
            "path": str(target),
            "format": d.format,
            "size": d.size,
            "described_by": d.library,
            "inputs": [t.to_dict() for t in d.inputs],
            "outputs": [t.to_dict() for t in d.outputs],
            "detection": _detection_guess(d),
        }
    if as_json:
        echo_json(data)
        return
    _print_text(data)


def _print_text(data: dict[str, Any]) -> None:
    if data["kind"] == "model":
        click.echo(f"model   {data['path']}")
        click.echo(f"format  {data['format']}  ({data['size']:,} bytes, read with {data['described_by']})")
        det = data.get("detection")
        if det:
            click.echo(f"detection  outputs fit head {det['head']} (edge bundle --task detection); "
                       f"{det['metadata_labels']} labels in the model's metadata"
                       + (f"; {det['metadata']}" if det["metadata"] else ""))
    else:
        m = data["manifest"]
        click.echo(f"bundle  {data['path']}")
        click.echo(f"name    {m['name']}  version {m['version']}  task {m['task']}  format {m['format']}")
        click.echo(f"created {m['created']}" + (f"  expires {m['expires']}" if m.get("expires") else ""))
        sig = ("signed (manifest.sig present; check it with `edge verify --pubkey`)" if data["signed"]
               else "unsigned")
        checked = "verified" if data["hashes_verified"] else "NOT checked"
        click.echo(f"files   {len(m['files'])}, hashes {checked}; {sig}")
        click.echo(f"labels  {data['labels']}   quantization {m['quantization']}")
        pre = m["preprocess"]
        if pre["kind"] == "image":
            size = "x".join(str(v) for v in pre["size"]) if pre.get("size") else "from the model"
            click.echo(f"preprocess  resize {size} {pre['resize_mode']} {pre['interpolation']}, {pre['color']}, "
                       f"mean {pre['mean']} std {pre['std']} scale {pre['scale']}")
        else:
            click.echo("preprocess  none (tabular rows)")
        if m["task"] == "detection":
            click.echo(detection_summary(m, data["labels"]))
        if m.get("source"):
            click.echo(f"source  {m['source']}")
        if m.get("metrics"):
            click.echo(f"metrics {m['metrics']}")
    for kind in ("inputs", "outputs"):
        click.echo(f"{kind}:")
        for t in data[kind]:
            click.echo("  " + _tensor_line(TensorSpec.from_dict(t)))


def _detection_guess(d: ModelDescription) -> dict[str, Any] | None:
    """The detection head `edge bundle --task detection` would choose, and what the metadata says."""
    from edge_runtime import guess_head, model_metadata

    meta = model_metadata(d.path, d.format)
    labels = meta.get("labels") or []
    head = guess_head([o.shape for o in d.outputs], classes=len(labels) or None)
    if head is None:
        return None
    return {"head": head, "metadata_labels": len(labels),
            "metadata": {k: meta[k] for k in ("task", "imgsz", "stride", "author") if k in meta}}


def _tensor_line(t: TensorSpec) -> str:
    q = f"scale={t.quantization.scale:g} zero_point={t.quantization.zero_point}" if t.quantization else "float"
    return f"{t.name:<24} {t.shape!s:<20} {t.dtype:<8} {t.layout:<5} {q}"
