"""`edge cloud broker-config`."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["broker_config_cmd"]


@click.command("broker-config")
@click.option("--devices", "devices_file", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML file: [[devices]] id = ..., optional password; optional [ingester].")
@click.option("--fleet-from-db", "fleet_db", metavar="URL",
              help="Also read the device registry (the service's database): revoked devices lose their broker "
                   "user and ACL lines, registered devices missing from --devices are added.")
@click.option("--reload", "reload_pid", metavar="PID|PIDFILE",
              help="Then send SIGHUP to this Mosquitto so it re-reads the password file and the ACL at once.")
@click.option("--bind-client-ids/--no-bind-client-ids", default=True, show_default=True,
              help="use_username_as_clientid: a client's id is its user name, so no device can take over another's "
                   "(or the ingester's) session. Each broker user then holds one connection at a time.")
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
def broker_config_cmd(devices_file: Path | None, fleet_db: str | None, reload_pid: str | None,
                      bind_client_ids: bool, out_dir: Path, port: int, bind: str, cafile: Path | None,
                      certfile: Path | None, keyfile: Path | None, require_certificate: bool, window: int,
                      run_as: str | None) -> None:
    """Write a Mosquitto config, password file and ACL so that device D may publish only under
    edge/D/ and read only edge/D/cmd/#, while the ingester reads every device.

    Passwords missing from the devices file are generated, written to credentials.toml (mode 0600)
    and reused on the next run.

    The ingester's password alone goes to ingest.password (mode 0600), for
    `edge cloud ingest --username ingest --password-file ingest.password`.

    Revocation reaches the broker when this runs again with --fleet-from-db (the service's
    database) and --reload (Mosquitto's pid): run it after `edge cloud devices revoke`.

    \b
    Example:
      edge cloud broker-config --devices fleet.toml -o /etc/mosquitto/edge
      mosquitto -c /etc/mosquitto/edge/mosquitto.conf
      edge cloud broker-config --devices fleet.toml --fleet-from-db postgresql://edge@db/edge \\
          -o /etc/mosquitto/edge --reload /run/mosquitto/mosquitto.pid
    """
    from cloud_sync import BrokerConfigError
    from cloud_sync.ingest import (
        BrokerSpec,
        load_devices_file,
        registry_fleet,
        reload_mosquitto,
        spec_with_registry,
        write_broker_config,
    )

    if devices_file is None and fleet_db is None:
        raise BrokerConfigError("give --devices FILE, --fleet-from-db URL, or both")
    spec = load_devices_file(devices_file) if devices_file is not None else BrokerSpec()
    revoked: set[str] = set()
    if fleet_db is not None:
        active, revoked = registry_fleet(fleet_db)
        spec = spec_with_registry(spec, active, revoked)
    files = write_broker_config(spec, out_dir, port=port, bind=bind, cafile=cafile, certfile=certfile,
                                keyfile=keyfile, require_certificate=require_certificate, device_window=window,
                                run_as=run_as, bind_client_ids=bind_client_ids)
    click.echo(f"wrote {files.conf}")
    click.echo(f"wrote {files.passwd} ({len(spec.devices)} device(s) + {spec.ingester.username}, "
               f"{spec.service.username})")
    click.echo(f"wrote {files.acl}")
    click.echo(f"wrote {files.credentials} (secret; mode 0600)")
    click.echo(f"wrote {files.ingester_password} (the ingester's password; mode 0600)")
    click.echo(f"wrote {files.service_password} (the service's password, user {spec.service.username}; mode 0600)")
    if revoked:
        click.echo(f"left out revoked device(s): {', '.join(sorted(revoked))}")
    if files.generated:
        click.echo(f"generated passwords for: {', '.join(files.generated)}")
    if reload_pid is not None:
        pid = reload_mosquitto(reload_pid)
        click.echo(f"sent SIGHUP to Mosquitto (pid {pid}): it re-reads passwd and acl")
