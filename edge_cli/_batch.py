"""`edge batch`: a bundle over many inputs into a database or Parquet (cloud_sync.batch)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from cloud_sync.batch import ENGINES, EngineOptions, run_batch
from edge_runtime.backends import BACKEND_NAMES

from ._common import echo_json
from ._quiet import native_stderr_filtered, verbosity

__all__ = ["batch_cmd"]


@click.command("batch")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("-s", "--source", required=True,
              help="A directory, a glob pattern, a list file (.txt/.lst/.list: one path or s3:// / http(s):// URL "
                   "a line) or an S3 prefix (s3://bucket/prefix).")
@click.option("-o", "--output", required=True,
              help="sqlite:///path.db, postgresql://user@host/db (table batch_predictions), path.parquet, "
                   "or a directory of Parquet parts.")
@click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True,
              help="local: one model in this process, no Ray; ray: Ray Data actors, one model each.")
@click.option("--address", metavar="ADDR", envvar="RAY_ADDRESS",
              help="A running Ray cluster (ray://host:10001 or host:6379; also RAY_ADDRESS); default: a Ray "
                   "of this command's own on this machine.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Ray actors, each loading the model once.")
@click.option("--threads-per-worker", "threads", type=click.IntRange(min=1),
              help="Inference threads per model (default: 1 with Ray, the device profile's without).")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Inputs per call of a worker.")
@click.option("--object-store-mb", type=click.IntRange(min=80),
              help="Object store of the Ray started on this machine (default: Ray's own choice).")
@click.option("--pubkey", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Require a bundle signature by this Ed25519 public key (repeatable); checked by every worker.")
@click.option("--backend", type=click.Choice(BACKEND_NAMES), help="Force a backend.")
@click.option("--s3-endpoint-url", envvar="AWS_ENDPOINT_URL", metavar="URL",
              help="An S3-compatible endpoint (MinIO, moto); also AWS_ENDPOINT_URL.")
@click.option("-r", "--recursive", is_flag=True, help="Also take the files in the subfolders of a directory.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option("--progress/--no-progress", default=None,
              help="A progress bar on stderr (default: when stderr is a terminal).")
def batch_cmd(bundle: Path, source: str, output: str, engine: str, address: str | None, workers: int,
              threads: int | None, batch_size: int, object_store_mb: int | None, pubkey: tuple[Path, ...],
              backend: str | None, s3_endpoint_url: str | None, recursive: bool, as_json: bool,
              progress: bool | None) -> None:
    """Run BUNDLE over every input of --source and write one row per input to --output.

    Rows are keyed by (source key, model name, model version): a rerun, or a run resumed after a
    crash, writes only the missing rows and never one twice. An input that cannot be read becomes
    a row with its error.
    """
    if engine == "ray":
        threads = threads or 1
        if verbosity() == 0:
            _quiet_ray_data()
    options = EngineOptions(workers=workers, batch_size=batch_size, address=address,
                            object_store_memory=object_store_mb * 1024 * 1024 if object_store_mb else None,
                            load_guard=native_stderr_filtered)
    show_bar = sys.stderr.isatty() if progress is None else progress
    bar: Any = None

    def on_progress(done: int, total: int) -> None:
        nonlocal bar
        if not show_bar:
            return
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="img", file=sys.stderr, dynamic_ncols=True, desc="edge batch")
        bar.update(done - bar.n)

    try:
        summary = run_batch(bundle, source, output, engine=engine, options=options, pubkeys=pubkey,
                            threads=threads, backend=backend, s3_endpoint_url=s3_endpoint_url,
                            recursive=recursive, progress=on_progress)
    finally:
        if bar is not None:
            bar.close()
    if as_json:
        echo_json(summary.as_dict())
        return
    m = summary.model
    click.echo(f"{summary.inputs} input(s), {summary.already_done} already done, {summary.processed} run "
               f"({summary.errors} error(s)), {summary.written} row(s) written to {summary.output} "
               f"for {m['name']} v{m['version']} in {summary.elapsed_s:.1f} s "
               f"({summary.rows_per_s:.1f}/s, {summary.engine} engine)", err=True)
    for err in summary.error_samples:
        click.echo(f"  error row: {err}", err=True)


def _quiet_ray_data() -> None:
    """Ray Data logs its plan, "progress bars disabled" and per-run statistics at INFO/WARNING on
    its own handler; `edge batch` prints its own summary (``-v`` shows Ray's lines again)."""
    import logging

    import ray.data  # noqa: F401 - configures the "ray.data" logger on import; ours comes after

    logging.getLogger("ray.data").setLevel(logging.ERROR)
