"""The ``edge`` command line.

Commands are registered by import path and imported only when run, so ``edge --help`` stays fast
and a device without the converters or the cloud extras still has a working ``edge``. Each package
owns the module of its own commands.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import click

from ._common import CliError, run_cli
from ._extras import guard_command, missing_for
from ._quiet import quiet_libraries

__all__ = ["COMMANDS", "LazyGroup", "cli", "main"]

# name -> "module:attribute"; the order is the order of `edge --help`.
COMMANDS: dict[str, tuple[str, str]] = {
    "inspect": ("edge_cli._inspect:inspect_cmd", "Show a model's or bundle's inputs, outputs and manifest."),
    "bundle": ("edge_cli._bundle:bundle_cmd", "Wrap a .tflite/.onnx model into a bundle."),
    "keys": ("edge_cli._keys:keys_group", "Create Ed25519 signing keys."),
    "sign": ("edge_cli._keys:sign_cmd", "Sign a bundle with a private key."),
    "verify": ("edge_cli._keys:verify_cmd", "Verify a bundle's hashes and signature."),
    "run": ("edge_cli._run:run_cmd", "Run a bundle on images, video, a camera or tabular rows."),
    "batch": ("edge_cli._batch:batch_cmd", "Run a bundle over many images into SQLite, PostgreSQL or Parquet (Ray)."),
    "bench": ("edge_cli._bench:bench_cmd", "Measure latency and throughput against the raw backend."),
    "convert": ("edge_cli._convert:convert_cmd", "Convert and quantize a model, measure each variant, recommend one."),
    "profiles": ("edge_cli._profiles:profiles_group", "List, show and detect device profiles."),
    "agent": ("edge_cli._agent:agent_group", "Run the device agent (hybrid routing, telemetry, signed updates)."),
    "pi": ("edge_cli._pi:pi_group", "Prepare a Raspberry Pi SD image, flash it, or install onto a running Pi."),
    "outbox": ("edge_cli._outbox:outbox_group", "Inspect or purge the telemetry outbox."),
    "cloud": ("edge_cli.cloud:cloud_group", "Cloud side: service, telemetry ingestion, broker configuration."),
    "publish": ("edge_cli.cloud._registry:publish_cmd", "Upload a signed bundle to the cloud registry."),
    "registry": ("edge_cli.cloud._registry:registry_group", "List, promote and roll back registry models."),
    "devices": ("edge_cli.cloud._devices:devices_group", "Register (one token each), list and revoke devices."),
    "worker": ("edge_cli._worker:worker_cmd", "Answer inference requests from a RabbitMQ queue (streaming)."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when run.

    ``commands_table`` maps a name to ``("module:attribute", short help)``; ``extra_hint`` says
    which install fixes a missing package. ``edge`` and ``edge cloud`` both use it.
    """

    commands_table: dict[str, tuple[str, str]] = COMMANDS
    extra_hint = "install the matching extra, e.g. pip install 'edge-runtime[all]'"

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands_table)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = self.commands_table.get(cmd_name)
        if entry is None:
            return None
        module_name, attr = entry[0].split(":")
        # "run", "cloud serve": the key of the optional-library table (edge_cli._extras)
        verb = " ".join([*ctx.command_path.split()[1:], cmd_name])
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            known = missing_for(verb, {})
            if known is not None:
                raise known from exc
            missing = getattr(exc, "name", None) or str(exc)
            raise CliError(
                f"`{ctx.command_path} {cmd_name}` needs a package that is not installed ({missing}); "
                f"{self.extra_hint}"
            ) from exc
        cmd: click.Command = getattr(module, attr)
        return guard_command(cmd, verb)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help from the table, so that --help imports no command module.
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_, help_) in self.commands_table.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edge-runtime", prog_name="edge")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """Convert, run, operate and deploy ML models on edge devices.

    Every command takes --help. Commands that report take --json for scripts.
    """
    # Before any command imports TensorFlow, OpenCV or torch: they read their log level at load.
    quiet_libraries(verbose)
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: list[str] | None = None) -> Any:
    return run_cli(cli, argv)
