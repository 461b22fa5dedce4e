"""``edge cloud``: the cloud side's commands, imported only when run (like ``edge`` itself)."""

from __future__ import annotations

import click

from edge_cli import LazyGroup

__all__ = ["COMMANDS", "cloud_group"]

# name -> ("module:attribute", short help); the order is the order of `edge cloud --help`.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("edge_cli.cloud._serve:serve_cmd", "Run the cloud service (registry, inference, fleet)."),
    "ingest": ("edge_cli.cloud._ingest:ingest_cmd", "Write devices' MQTT telemetry into the database."),
    "broker-config": ("edge_cli.cloud._broker_config:broker_config_cmd",
                      "Write a Mosquitto config, password file and ACL for a fleet."),
    "db": ("edge_cli.cloud._db:db_group", "Migrate the cloud database (upgrade) or show its revision."),
}


class _CloudGroup(LazyGroup):
    commands_table = COMMANDS
    extra_hint = "install the cloud extra: pip install 'edge-runtime[cloud]'"


@click.group("cloud", cls=_CloudGroup)
def cloud_group() -> None:
    """Cloud side: the service, telemetry ingestion, broker configuration."""
