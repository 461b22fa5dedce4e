"""`edge cloud ingest`."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType

import click

from cloud_sync import IngestError
from edge_device.telemetry import MqttConfig
from edge_runtime import describe_validation_error

__all__ = ["ingest_cmd"]


@click.command("ingest")
# Variables are the cloud side's EDGE_CLOUD_*: EDGE_MQTT_* are the device's, maybe on the same machine.
@click.option("--mqtt", "mqtt_url", required=True, envvar="EDGE_CLOUD_MQTT_URL", metavar="URL",
              help="Broker, mqtt://HOST:PORT or mqtts://HOST:PORT (or EDGE_CLOUD_MQTT_URL).")
@click.option("--db", "db_url", default="sqlite:///edge-telemetry.db", show_default=True,
              envvar=["EDGE_CLOUD_DATABASE_URL", "EDGE_CLOUD_DB"], metavar="URL",
              help="SQLAlchemy URL: sqlite:///FILE.db or postgresql://USER@HOST/DB (or EDGE_CLOUD_DATABASE_URL, "
                   "the service's variable too). Its schema is migrated to the newest revision at start-up.")
@click.option("--client-id", default="edge-ingest", show_default=True,
              help="MQTT client id; keep it fixed so the broker keeps the session across restarts.")
@click.option("--share", "share_group", metavar="GROUP",
              help="Share the subscriptions with other ingesters ($share/GROUP/...).")
@click.option("--username", envvar="EDGE_CLOUD_MQTT_USERNAME", help="Broker user name (or EDGE_CLOUD_MQTT_USERNAME).")
@click.option("--password-file", type=click.Path(dir_okay=False, path_type=Path),
              help="File holding the broker password, e.g. the ingest.password `edge cloud broker-config` writes "
                   "(or set EDGE_CLOUD_MQTT_PASSWORD).")
@click.option("--ca", "ca_file", type=click.Path(dir_okay=False, path_type=Path), help="CA certificate (mqtts://).")
@click.option("--cert", "cert_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Client certificate (mqtts://).")
@click.option("--key", "key_file", type=click.Path(dir_okay=False, path_type=Path), help="Client key (mqtts://).")
@click.option("--max-payload-bytes", type=click.IntRange(min=1024), default=8 * 1024 * 1024, show_default=True,
              help="Larger payloads are rejected (and kept in part in telemetry_rejects).")
@click.option("--no-confirm", is_flag=True,
              help="Do not publish confirmations on edge/D/cmd/ack nor announce this ingester on edge/D/cmd/ingest "
                   "(devices then delete rows at the broker's PUBACK; `--retire` first if it confirmed before).")
@click.option("--devices", "devices_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The fleet's devices file (as for `edge cloud broker-config`): announce this ingester to every "
                   "device in it at once, so a new device keeps its records for the ingester from its first message "
                   "on, even if the ingester is down then. Other devices are announced to at their first message.")
@click.option("--retire", is_flag=True,
              help="Do not ingest: remove this ingester for good. Replaces its retained announcements with a "
                   "retirement notice, so devices delete rows at the broker's PUBACK again, and drops its session "
                   "on the broker. Stop it first.")
@click.option("--stats-interval", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Print counters to stderr every N seconds (0: only at the end).")
def ingest_cmd(mqtt_url: str, db_url: str, client_id: str, share_group: str | None, username: str | None,
               password_file: Path | None, ca_file: Path | None, cert_file: Path | None, key_file: Path | None,
               max_payload_bytes: int, no_confirm: bool, devices_file: Path | None, retire: bool,
               stats_interval: float) -> None:
    """Subscribe to every device's telemetry, metrics, events and status and write them to the database.

    Each message is acknowledged to the broker only after its database commit, duplicates are
    dropped on (device_id, seq), and a malformed payload is stored in telemetry_rejects with its
    reason. Runs until Ctrl-C or SIGTERM.

    For each device it hears from, the ingester leaves a retained announcement on
    edge/D/cmd/ingest: devices (confirm = "auto", the default) then keep each record until the
    ingester confirms its commit, also while the ingester is stopped or restarting, and send it
    again if needed. Without an announcement they delete records at the broker's PUBACK. To remove
    the ingester for good, stop it and run the same command with --retire.

    \b
    Examples:
      edge cloud ingest --mqtt mqtt://localhost:1883 --db sqlite:///telemetry.db
      edge cloud ingest --mqtt mqtts://broker:8883 --ca ca.pem --username ingest \\
          --password-file ingest.password --db postgresql://ingest@db/edge
      edge cloud ingest --mqtt mqtt://localhost:1883 --retire
    """
    from pydantic import ValidationError

    from cloud_sync.ingest import IngestConfig, Ingester, load_devices_file
    from cloud_sync.ingest import retire as retire_ingester

    try:
        password = (os.environ.get("EDGE_CLOUD_MQTT_PASSWORD") or None) if password_file is None else None
        mqtt = MqttConfig(url=mqtt_url, username=username, password=password, password_file=password_file,
                          ca_file=ca_file, cert_file=cert_file, key_file=key_file,
                          password_env="EDGE_CLOUD_MQTT_PASSWORD")
    except ValidationError as exc:
        raise IngestError(describe_validation_error(exc, "broker settings")) from exc
    config = IngestConfig.build(mqtt=mqtt, db_url=db_url, client_id=client_id, share_group=share_group,
                                max_payload_bytes=max_payload_bytes, confirm=not no_confirm,
                                devices=tuple(d.id for d in load_devices_file(devices_file).devices)
                                if devices_file else ())
    if retire:
        cleared = retire_ingester(config)
        click.echo(f"ingest: retired {config.service_name} on {mqtt.safe_url}: retired the announcement of "
                   f"{len(cleared)} device(s){': ' + ', '.join(cleared) if cleared else ''}", err=True)
        if not cleared:
            click.echo("ingest: no announcement found; if devices still keep their records, the broker's ACL may "
                       "hide edge/+/cmd/ingest from the ingester (run `edge cloud broker-config` again)", err=True)
        return
    ingester = Ingester(config)
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    ingester.start()
    announced = False
    next_stats = 0.0
    while not stop.wait(0.2):
        if not announced and ingester.wait_connected(0):
            click.echo(f"ingest: subscribed on {mqtt.safe_url}, writing to "
                       f"{ingester.engine.url.render_as_string()}", err=True)
            announced = True
            next_stats = time.monotonic() + stats_interval
        if announced and stats_interval > 0 and time.monotonic() >= next_stats:
            click.echo("ingest: " + json.dumps(ingester.stats.as_dict()), err=True)
            next_stats += stats_interval
    ingester.stop()
    click.echo("ingest: stopped " + json.dumps(ingester.stats.as_dict()), err=True)
