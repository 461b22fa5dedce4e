"""``edge cloud``: the cloud side's commands, imported only when run (like ``edge`` itself)."""

from __future__ import annotations

import importlib

import click

__all__ = ["COMMANDS", "cloud_group"]

# name -> ("module:attribute", short help); the order is the order of `edge cloud --help`.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("cloud_sync.cli._serve:serve_cmd", "Run the cloud service (registry, inference, fleet)."),
    "ingest": ("cloud_sync.cli._ingest:ingest_cmd", "Write devices' MQTT telemetry into the database."),
    "broker-config": ("cloud_sync.cli._broker_config:broker_config_cmd",
                      "Write a Mosquitto config, password file and ACL for a fleet."),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attr = entry[0].split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            missing = getattr(exc, "name", None) or str(exc)
            raise click.ClickException(
                f"`edge cloud {cmd_name}` needs a package that is not installed ({missing}); "
                "install the cloud extra: pip install 'edge-runtime[cloud]'"
            ) from exc
        cmd: click.Command = getattr(module, attr)
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_, help_) in COMMANDS.items()])


@click.group("cloud", cls=_LazyGroup)
def cloud_group() -> None:
    """Cloud side: the service, telemetry ingestion, broker configuration."""
