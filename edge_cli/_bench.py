"""`edge bench`: latency percentiles and throughput, against the raw backend in the same run."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edge_runtime import Model, bench_model, load_image
from edge_runtime.backends import BACKEND_NAMES

from ._common import echo_json

__all__ = ["bench_cmd"]


@click.command("bench")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("--runs", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=20, show_default=True)
@click.option("--backend", type=click.Choice(BACKEND_NAMES))
@click.option("--threads", type=click.IntRange(min=1), help="Default: the device profile's.")
@click.option("--profile", help="Device profile name (default: detected).")
@click.option("--input", "input_image", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Image to use (default: a fixed random 640x480 image).")
@click.option("--json", "as_json", is_flag=True)
def bench_cmd(bundle: Path, runs: int, warmup: int, backend: str | None, threads: int | None,
              profile: str | None, input_image: Path | None, as_json: bool) -> None:
    """Measure BUNDLE: p50/p90/p99/mean latency, throughput and peak RSS, next to the raw backend
    library running the same tensor in the same process, and their ratio.

    "edge_runtime infer" is the runtime's inference call; "raw backend" is the library called
    directly (e.g. LiteRT's set_tensor/invoke/get_tensor) on the same tensor; "predict" is the
    whole path from an image to labelled top-k (preprocess, infer, postprocess).

    \b
    Example:
      edge bench mobilenet/ --runs 500 --threads 2 --json
    """
    model = Model.load(bundle, backend=backend, threads=threads, profile=profile)
    x = load_image(input_image) if input_image else None
    with click.progressbar(length=runs, label="benchmarking", file=sys.stderr,
                           hidden=as_json) as bar:

        def advance(n: int) -> None:
            bar.update(n)

        res = bench_model(model, runs=runs, warmup=warmup, x=x, progress=advance)
    model.close()
    if as_json:
        echo_json(res.as_dict())
        return
    click.echo(f"{res.model} v{res.version} on {res.backend} ({res.library}), threads={res.threads}, "
               f"{res.runs} runs after {res.warmup} warm-up")
    click.echo(f"{'':<22}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'mean ms':>9}{'per s':>9}")
    for label, row in (("edge_runtime infer", res.runtime), ("raw backend", res.raw),
                       ("edge_runtime predict", res.predict)):
        click.echo(f"{label:<22}{row['p50_ms']:>9.3f}{row['p90_ms']:>9.3f}{row['p99_ms']:>9.3f}"
                   f"{row['mean_ms']:>9.3f}{row['throughput_per_s']:>9.1f}")
    click.echo(f"ratio runtime/raw: p50 {res.ratio_p50:.3f}, mean {res.ratio_mean:.3f}; "
               f"peak RSS {res.peak_rss_mb:.0f} MB")
