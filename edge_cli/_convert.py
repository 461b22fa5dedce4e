"""`edge convert`: convert and quantize a model, measure each variant, recommend one."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from pydantic import ValidationError

from converters import ConvertOptions, convert, parse_preprocess, parse_quantize, parse_shape
from edge_cli._common import echo_json
from edge_runtime import EdgeError, parse_expires

__all__ = ["convert_cmd"]


def _parse(kind: str, fn: object, value: str | None, param: str) -> object:
    if value is None:
        return None
    try:
        return fn(value)  # type: ignore[operator]  # one of the parse_* helpers
    except ValueError as exc:
        raise click.BadParameter(str(exc).splitlines()[0], param_hint=param) from None


@click.command("convert")
@click.argument("source")
@click.option("--to", "to", type=click.Choice(["onnx", "tflite"]), required=True, help="Target format.")
@click.option("--quantize", default="none", show_default=True,
              help="none, fp16, dynamic, int8, all, or a comma list (float is always made).")
@click.option("--calibration", multiple=True, type=click.Path(path_type=Path),
              help="Image directory/file or .npy of inputs for int8 (repeatable).")
@click.option("--eval", "eval_", type=click.Path(path_type=Path),
              help="Labelled dir (DIR/<label>/*.jpg) or .npz with x, y; unlabelled inputs give agreement.")
@click.option("--profile", help="Device profile: backend and threads to measure latency with.")
@click.option("--input-shape", help="Input shape for PyTorch models, e.g. 1,3,224,224.")
@click.option("--labels", type=click.Path(path_type=Path), help="Labels file, one class a line.")
@click.option("--preprocess", help="'none' or key=value list: size=224x224,mean=127,std=128,resize=squash,...")
@click.option("--weights", type=click.Path(path_type=Path), help="state_dict for a MODULE:FACTORY source.")
@click.option("--max-drop", type=float, default=1.0, show_default=True, help="Accuracy drop allowed (points).")
@click.option("--prefer", type=click.Choice(["latency", "size"]), default="latency", show_default=True)
@click.option("--calibration-method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax",
              show_default=True, help="ONNX int8 calibration.")
@click.option("--per-channel/--per-tensor", default=None, help="Weight quantization granularity (default: auto).")
@click.option("--reduce-range/--no-reduce-range", default=None,
              help="7-bit weights for x86 CPUs without VNNI (default: auto).")
@click.option("--io-dtype", type=click.Choice(["int8", "uint8"]), default="int8", show_default=True,
              help="TFLite int8 model input/output type.")
@click.option("--precision", type=click.Choice(["auto", "float", "double"]), default="auto", show_default=True,
              help="scikit-learn ONNX input precision.")
@click.option("--backend", help="Backend to measure on (default: the profile's, else the first installed).")
@click.option("--threads", type=int, help="Threads for the latency measurement.")
@click.option("--runs", type=int, default=30, show_default=True, help="Timed runs per variant.")
@click.option("--name", help="Bundle name (default: from the source).")
@click.option("--version", "version_", type=int, default=1, show_default=True, help="Bundle version.")
@click.option("--samples", "samples", type=click.IntRange(min=0, max=100), default=3, show_default=True,
              help="Inputs from the --eval data (else --calibration) put into each bundle as samples: the health "
                   "check a device runs before switching. 0: none (the default device policy then refuses it).")
@click.option("--expires", default="365d", show_default=True,
              help="When devices start refusing the bundles (freeze protection): a duration from now (365d, 12w, "
                   "48h), an ISO 8601 date/time (2027-06-01), or 'none' (the default device policy then refuses "
                   "them).")
@click.option("-o", "--out", "out", type=click.Path(path_type=Path), required=True, help="Output directory.")
@click.option("--overwrite", is_flag=True, help="Replace bundles that already exist in OUT.")
@click.option("--trust-pickle", is_flag=True,
              help="Allow loading a .joblib/.pkl scikit-learn model. Unpickling runs whatever code the file "
                   "holds: pass this only for files you made or trust.")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: when stderr is a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def convert_cmd(source: str, to: str, quantize: str, calibration: tuple[Path, ...], eval_: Path | None,
                profile: str | None, input_shape: str | None, labels: Path | None, preprocess: str | None,
                weights: Path | None, max_drop: float, prefer: str, calibration_method: str,
                per_channel: bool | None, reduce_range: bool | None, io_dtype: str, precision: str,
                backend: str | None, threads: int | None, runs: int, name: str | None, version_: int, samples: int,
                expires: str, out: Path, overwrite: bool, trust_pickle: bool, progress: bool | None,
                as_json: bool) -> None:
    """Convert SOURCE to --to, quantize, measure every variant and recommend one.

    SOURCE is a .joblib/.pkl scikit-learn model (pickles run code when loaded: add --trust-pickle for
    a file you trust), MODULE:FACTORY (with --weights), a TorchScript
    file, a torch.export .pt2, a .keras/.h5 file or SavedModel directory, or an .onnx/.tflite.
    Writes one bundle per variant and report.md + report.json to OUT. Each bundle carries --samples
    inputs and an --expires date, so that a device with the default update policy accepts it.
    """
    expires_at: str | None = None
    if expires.strip().lower() not in ("none", "never", ""):
        try:
            expires_at = parse_expires(expires)
        except EdgeError as exc:
            raise click.BadParameter(str(exc).removeprefix("expires "), param_hint="--expires") from None
    fields = {
        "to": to,
        "quantize": _parse("quantize", parse_quantize, quantize, "--quantize"),
        "calibration": list(calibration),
        "eval": eval_,
        "profile": profile,
        "input_shape": _parse("shape", parse_shape, input_shape, "--input-shape"),
        "labels": labels,
        "preprocess": _parse("preprocess", parse_preprocess, preprocess, "--preprocess"),
        "weights": weights,
        "max_drop": max_drop,
        "prefer": prefer,
        "calibration_method": calibration_method,
        "per_channel": per_channel,
        "reduce_range": reduce_range,
        "io_dtype": io_dtype,
        "precision": precision,
        "backend": backend,
        "threads": threads,
        "latency_runs": runs,
        "name": name,
        "version": version_,
        "samples": samples,
        "overwrite": overwrite,
        "trust_pickle": trust_pickle,
        "progress": sys.stderr.isatty() if progress is None else progress,
    }
    try:
        # expires is passed even when None: "none" means no expiry, not the default
        opts = ConvertOptions(**{k: v for k, v in fields.items() if v is not None}, expires=expires_at)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise click.UsageError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}") from None
    report = convert(source, out, opts)
    if as_json:
        echo_json(report.model_dump(mode="json"))
        return
    click.echo(report.to_markdown())
    click.echo(f"bundles and report written to {out}")
