"""`edge run`: a bundle over a source, one JSON record per frame."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import click

from edge_runtime import Model, Pipeline, Sink, load_public_key, open_sink
from edge_runtime.sources import open_source

__all__ = ["run_cmd"]


@click.command("run")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("-s", "--source", required=True,
              help="Image file, directory, glob, video file, camera index (0), URL (rtsp://…), picamera, "
                   "or .csv/.jsonl/.npy rows for tabular models.")
@click.option("-o", "--output", "outputs", multiple=True, default=("-",), show_default=True,
              help="Where records go: - (stdout), FILE.jsonl, or sqlite:///FILE.db. Repeatable.")
@click.option("--top-k", type=click.IntRange(min=1), help="Labels per record (default: the manifest's).")
@click.option("--limit", type=click.IntRange(min=1), help="Stop after N frames.")
@click.option("--backend", type=click.Choice(["litert", "onnxruntime", "opencv-dnn"]),
              help="Force a backend (default: the device profile's order).")
@click.option("--threads", type=click.IntRange(min=1), help="Inference threads (default: the device profile's).")
@click.option("--profile", help="Device profile name (default: detected). See `edge profiles list`.")
@click.option("--pubkey", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Require a bundle signature by this Ed25519 public key (repeatable).")
@click.option("--workers", type=click.IntRange(min=1), help="Decode/preprocess threads for file sources.")
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
@click.option("--confirm", type=click.Choice(["cloud", "broker"]), default="cloud", show_default=True,
              help="Delete outbox rows when the ingester confirms its commit (cloud) or at the broker's PUBACK.")
def run_cmd(bundle: Path, source: str, outputs: tuple[str, ...], top_k: int | None, limit: int | None,
            backend: str | None, threads: int | None, profile: str | None, pubkey: tuple[Path, ...],
            workers: int | None, summary: bool, mqtt_url: str | None, device_id: str | None,
            outbox: Path | None, mqtt_username: str | None, mqtt_password_file: Path | None,
            mqtt_ca: Path | None, mqtt_cert: Path | None, mqtt_key: Path | None, confirm: str) -> None:
    """Run BUNDLE on a source and print one JSON record per frame.

    Each record has ts, source, frame, top_k (label, score) or values, latency_ms (preprocess,
    inference, postprocess, total), model (name, version), backend and path; a frame that fails
    (unreadable image, bad row) gives a record with "error" instead, and the run goes on.
    Ctrl-C stops cleanly and flushes every output.

    \b
    Examples:
      edge run mobilenet/ --source photos/
      edge run mobilenet.tar.gz --source 0 --output results.jsonl --output sqlite:///results.db
      edge run iris/ --source rows.csv --top-k 1
      edge run plants/ --source 0 --mqtt mqtt://broker:1883 --device-id greenhouse-1
    """
    keys = [load_public_key(p) for p in pubkey] or None
    model = Model.load(bundle, backend=backend, threads=threads, profile=profile, pubkey=keys)
    if top_k is not None:
        model.top_k = top_k
    src = open_source(source)
    sinks: list[Sink] = [open_sink(o) for o in outputs]
    if mqtt_url or device_id:
        if not (mqtt_url and device_id):
            raise click.UsageError("--mqtt and --device-id go together")
        from edge_device.telemetry import open_telemetry

        sinks.append(open_telemetry(mqtt_url, device_id, outbox, username=mqtt_username,
                                    password_file=mqtt_password_file, ca_file=mqtt_ca, cert_file=mqtt_cert,
                                    key_file=mqtt_key, delivery={"confirm": confirm}))
    pipe = Pipeline(model, src, sinks, limit=limit, workers=workers)
    _stop_on_sigterm(pipe)
    stats = pipe.run()
    src.close()
    model.close()
    if summary:
        s = stats.as_dict()
        click.echo(f"{s['frames']} frame(s), {s['errors']} error(s), {s['dropped']} dropped, "
                   f"{s['fps']} fps on {model.backend_name}", err=True)
    if stats.interrupted:
        sys.exit(130)
    if stats.frames == 0 and stats.errors > 0:
        sys.exit(1)


def _stop_on_sigterm(pipe: Pipeline) -> None:
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        pipe.stop()

    signal.signal(signal.SIGTERM, handler)
