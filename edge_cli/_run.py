"""`edge run`: a bundle over a source, one JSON record per frame."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from edge_runtime import Model, Pipeline, Sink, load_public_key
from edge_runtime.backends import BACKEND_NAMES
from edge_runtime.sources import open_source

if TYPE_CHECKING:
    from edge_runtime import AnnotatedImageSink
    from edge_runtime.preview import PreviewServer

from ._output import CountedOutput, StdoutSink, open_outputs, summary_lines
from ._quiet import native_stderr_filtered

__all__ = ["run_cmd"]


@click.command("run")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("-s", "--source", required=True,
              help="Image file, directory, glob, video file, camera index (0), URL (rtsp://…), picamera, "
                   "or .csv/.jsonl/.npy rows for tabular models.")
@click.option("-o", "--output", "outputs", multiple=True, default=("-",), show_default=True,
              help="Where records go: - (stdout: readable lines on a terminal, JSON lines in a pipe), FILE.jsonl, "
                   "FILE.csv, FILE.db / FILE.sqlite or sqlite:///FILE.db; the extension picks the format. Repeatable.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines on stdout even on a terminal.")
@click.option("-r", "--recursive", is_flag=True, help="Also run on the images in the subfolders of a directory source.")
@click.option("--top-k", type=click.IntRange(min=1), help="Labels per record (default: the manifest's).")
@click.option("--conf", type=click.FloatRange(0.0, 1.0),
              help="Detection: drop detections scoring below this (default: the manifest's score_threshold).")
@click.option("--iou", type=click.FloatRange(0.0, 1.0, min_open=True),
              help="Detection: per-class NMS IoU threshold (default: the manifest's iou_threshold).")
@click.option("--save-annotated", type=click.Path(file_okay=False, path_type=Path),
              help="Detection: also write each image with its boxes and labels drawn, as DIR/NAME.png.")
@click.option("--preview", "preview_at", metavar="[HOST:]PORT",
              help="Serve a live page with the annotated stream (MJPEG) and the latest detections at "
                   "http://HOST:PORT/ (host default 127.0.0.1; 0.0.0.0 for the network, unauthenticated). "
                   "Only the newest frame is kept: a slow viewer never slows inference.")
@click.option("--limit", type=click.IntRange(min=1), help="Stop after N frames.")
@click.option("--backend", type=click.Choice(BACKEND_NAMES),
              help="Force a backend (default: the device profile's order).")
@click.option("--threads", type=click.IntRange(min=1),
              help="Inference threads (default: the device profile's). Set, it also keeps inference in this "
                   "process (no worker processes).")
@click.option("--profile", help="Device profile name (default: detected). See `edge profiles list`.")
@click.option("--pubkey", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Require a bundle signature by this Ed25519 public key (repeatable).")
@click.option("--workers", type=click.IntRange(min=1),
              help="Parallel workers for file sources. Over 64 image files or more with --threads unset, each "
                   "worker is a process running the model on one thread (default: one per core; each holds a "
                   "copy of the model); otherwise decode/preprocess threads.")
@click.option("--summary/--no-summary", default=True, show_default=True,
              help="Print frames, errors and fps to stderr at the end.")
@click.option("--mqtt", "mqtt_url", envvar="EDGE_MQTT_URL", metavar="URL",
              help="Also send records to the cloud over MQTT (mqtt://HOST:PORT, mqtts://HOST:PORT) through a "
                   "durable outbox: nothing is lost while the broker is away, and inference never waits for it.")
@click.option("--device-id", envvar="EDGE_DEVICE_ID", help="This device's id (with --mqtt; topics edge/ID/...).")
@click.option("--outbox", type=click.Path(dir_okay=False, path_type=Path), envvar="EDGE_OUTBOX",
              help="Outbox file (default: ~/.local/state/edge/outbox.db). See `edge outbox`.")
@click.option("--mqtt-username", envvar="EDGE_MQTT_USERNAME", help="Broker user name (password: "
              "--mqtt-password-file or EDGE_MQTT_PASSWORD).")
@click.option("--mqtt-password-file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--mqtt-ca", type=click.Path(dir_okay=False, path_type=Path), help="CA certificate (mqtts://).")
@click.option("--mqtt-cert", type=click.Path(dir_okay=False, path_type=Path), help="Client certificate.")
@click.option("--mqtt-key", type=click.Path(dir_okay=False, path_type=Path), help="Client key.")
@click.option("--confirm", type=click.Choice(["auto", "ingester", "broker", "cloud"]), default="auto",
              show_default=True,
              help="When outbox rows are deleted: auto = at the ingester's commit confirmation when an `edge cloud "
                   "ingest` announces itself for this device (retained on edge/ID/cmd/ingest), else at the broker's "
                   "PUBACK (any consumer: Home Assistant, Node-RED, Telegraf); ingester = always wait for the "
                   "ingester (cloud is its old name); broker = always at the PUBACK.")
def run_cmd(bundle: Path, source: str, outputs: tuple[str, ...], top_k: int | None, limit: int | None,
            as_json: bool, recursive: bool,
            backend: str | None, threads: int | None, profile: str | None, pubkey: tuple[Path, ...],
            workers: int | None, summary: bool, mqtt_url: str | None, device_id: str | None,
            outbox: Path | None, mqtt_username: str | None, mqtt_password_file: Path | None,
            mqtt_ca: Path | None, mqtt_cert: Path | None, mqtt_key: Path | None, confirm: str,
            conf: float | None = None, iou: float | None = None, save_annotated: Path | None = None,
            preview_at: str | None = None) -> None:
    """Run BUNDLE on a source: one line per frame, one record per frame in every output.

    On a terminal each frame is a readable line (source, result, milliseconds) and the run ends
    with a summary of every output written; in a pipe, or with --json, stdout gets one JSON
    record per line. When the reader of the pipe goes away (`edge run ... | head -1`) the run
    stops quietly and exits 0.

    Each record has ts, source, frame, top_k (label, score) or values, latency_ms (preprocess,
    inference, postprocess, total), model (name, version), backend and path; a frame that fails
    (unreadable image, bad row) gives a record with "error" instead, and the run goes on.
    Ctrl-C stops cleanly and flushes every output.

    \b
    Examples:
      edge run mobilenet/ --source photos/ --recursive --output results.csv
      edge run mobilenet.tar.gz --source 0 --output results.jsonl --output sqlite:///results.db
      edge run iris/ --source rows.csv --top-k 1
      edge run plants/ --source 0 --mqtt mqtt://broker:1883 --device-id greenhouse-1
    """
    keys = [load_public_key(p) for p in pubkey] or None
    # LiteRT prints its own INFO lines (XNNPACK) to fd 2 while loading, whatever its log level.
    with native_stderr_filtered():
        model = Model.load(bundle, backend=backend, threads=threads, profile=profile, pubkey=keys)
    if top_k is not None:
        model.top_k = top_k
    if conf is not None:
        model.score_threshold = conf
    if iou is not None:
        model.iou_threshold = iou
    src = open_source(source, recursive=recursive)
    skipped = int(getattr(src, "skipped_dirs", 0))
    if skipped:
        click.echo(f"warning: {source}: {skipped} subfolder(s) skipped; --recursive runs on them too", err=True)
    pipe_ref: list[Pipeline] = []

    def reader_gone() -> None:
        for p in pipe_ref:
            p.stop()

    human = not as_json and sys.stdout.isatty()
    if human and "-" not in outputs:
        outputs = ("-", *outputs)  # a person at a terminal sees the frames go by whatever the files
    root = _display_root(source)
    counted = open_outputs(outputs, human=human, on_pipe_closed=reader_gone, root=root)
    sinks: list[Sink] = list(counted)
    if mqtt_url or device_id:
        if not (mqtt_url and device_id):
            raise click.UsageError("--mqtt and --device-id go together")
        from edge_device.telemetry import open_telemetry

        telemetry = CountedOutput(open_telemetry(mqtt_url, device_id, outbox, username=mqtt_username,
                                                 password_file=mqtt_password_file, ca_file=mqtt_ca,
                                                 cert_file=mqtt_cert, key_file=mqtt_key,
                                                 delivery={"confirm": confirm}), mqtt_url, "MQTT")
        counted.append(telemetry)
        sinks.append(telemetry)
    annotated: AnnotatedImageSink | None = None
    if save_annotated is not None:
        from edge_runtime import AnnotatedImageSink  # PIL's drawing and font modules: only for this option

        annotated = AnnotatedImageSink(save_annotated)
    if annotated is not None:
        sinks.append(annotated)
    preview = _start_preview(preview_at) if preview_at is not None else None
    pipe = Pipeline(model, src, sinks, limit=limit, workers=workers,
                    on_frame=preview.publish if preview is not None else None)
    pipe_ref.append(pipe)
    _stop_on_sigterm(pipe)
    try:
        stats = pipe.run()
    finally:
        if preview is not None:
            preview.close()
    src.close()
    model.close()
    if summary:
        # the counts, not stats.as_dict(): its latency percentiles (np.percentile imports numpy.ma,
        # 3.4 MiB and ~8 ms) are not printed here
        click.echo(f"{stats.frames} frame(s), {stats.errors} error(s), {stats.dropped} dropped, "
                   f"{round(stats.fps, 2)} fps on {model.backend_name}"
                   + (f" ({stats.model_workers} worker processes, one thread each)" if stats.model_workers else ""),
                   err=True)
        for line in summary_lines(counted):
            click.echo(line, err=True)
        if annotated is not None:
            click.echo(f"wrote {annotated.written} annotated frame(s) to {annotated.out_dir}", err=True)
    if any(isinstance(o.sink, StdoutSink) and o.sink.closed_by_reader for o in counted):
        return  # the reader stopped reading: a normal end for a pipeline stage, exit 0
    if stats.interrupted:
        sys.exit(130)
    if stats.frames == 0 and stats.errors > 0:
        sys.exit(1)


def _display_root(source: str) -> Path | None:
    """The folder terminal lines name files relative to: the directory run on, or the fixed part
    of a glob (``photos/2024/*.jpg`` -> ``photos/2024``)."""
    p = Path(source)
    if p.is_dir():
        return p
    fixed: list[str] = []
    for part in p.parts:
        if any(c in part for c in "*?["):
            return Path(*fixed) if fixed else None
        fixed.append(part)
    return None


def _start_preview(spec: str) -> PreviewServer:
    from edge_runtime.preview import PreviewError, PreviewServer, parse_listen

    try:
        host, port = parse_listen(spec)
        preview = PreviewServer(host, port).start()
    except PreviewError as exc:
        raise click.BadParameter(str(exc), param_hint="--preview") from exc
    click.echo(f"preview: {preview.url}", err=True)
    return preview


def _stop_on_sigterm(pipe: Pipeline) -> None:
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        pipe.stop()

    signal.signal(signal.SIGTERM, handler)
