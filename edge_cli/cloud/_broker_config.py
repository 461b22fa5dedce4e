"""`edge cloud broker-config`."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["broker_config_cmd"]


@click.command("broker-config")
@click.option("--devices", "devices_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="TOML file: [[devices]] id = ..., optional password; optional [ingester].")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for mosquitto.conf, passwd, acl and credentials.toml.")
@click.option("--port", type=click.IntRange(1, 65535), default=1883, show_default=True)
@click.option("--bind", default="0.0.0.0", show_default=True, help="Address the listener binds.")
@click.option("--cafile", type=click.Path(dir_okay=False, path_type=Path), help="CA for client certificates.")
@click.option("--certfile", type=click.Path(dir_okay=False, path_type=Path), help="Broker TLS certificate.")
@click.option("--keyfile", type=click.Path(dir_okay=False, path_type=Path), help="Broker TLS key.")
@click.option("--require-certificate", is_flag=True, help="Devices must present a certificate signed by --cafile.")
@click.option("--window", type=click.IntRange(1, 1000), default=32, show_default=True,
              help="Devices' unconfirmed-message window (sizes the ingester's queue on the broker).")
@click.option("--user", "run_as", help="Account Mosquitto runs as; it gets passwd, acl and the data directory "
                                       "(default when run as root: mosquitto).")
def broker_config_cmd(devices_file: Path, out_dir: Path, port: int, bind: str, cafile: Path | None,
                      certfile: Path | None, keyfile: Path | None, require_certificate: bool, window: int,
                      run_as: str | None) -> None:
    """Write a Mosquitto config, password file and ACL so that device D may publish only under
    edge/D/ and read only edge/D/cmd/#, while the ingester reads every device.

    Passwords missing from the devices file are generated, written to credentials.toml (mode 0600)
    and reused on the next run.

    \b
    Example:
      edge cloud broker-config --devices fleet.toml -o /etc/mosquitto/edge
      mosquitto -c /etc/mosquitto/edge/mosquitto.conf
    """
    from cloud_sync.ingest import load_devices_file, write_broker_config

    spec = load_devices_file(devices_file)
    files = write_broker_config(spec, out_dir, port=port, bind=bind, cafile=cafile, certfile=certfile,
                                keyfile=keyfile, require_certificate=require_certificate, device_window=window,
                                run_as=run_as)
    click.echo(f"wrote {files.conf}")
    click.echo(f"wrote {files.passwd} ({len(spec.devices)} device(s) + {spec.ingester.username})")
    click.echo(f"wrote {files.acl}")
    click.echo(f"wrote {files.credentials} (secret; mode 0600)")
    if files.generated:
        click.echo(f"generated passwords for: {', '.join(files.generated)}")
