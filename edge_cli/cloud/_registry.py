"""``edge publish`` and ``edge registry list|promote|rollback``: the registry from the command line."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import click

from edge_cli._common import echo_json
from edge_runtime import open_bundle, pack_bundle

__all__ = ["publish_cmd", "registry_group"]

_registry_opt = click.option("--registry", envvar="EDGE_REGISTRY_URL", required=True, metavar="URL",
                             help="Service URL, e.g. http://cloud:8000 (or EDGE_REGISTRY_URL).")
_token_opt = click.option("--token", envvar="EDGE_REGISTRY_TOKEN", required=True, metavar="T",
                          help="Admin token (better: EDGE_REGISTRY_TOKEN, which stays out of the process list).")
_timeout_opt = click.option("--timeout", default=300.0, show_default=True, help="Seconds for the whole call.")


def _client(registry: str, token: str, timeout: float) -> Any:
    from edge_device.client import CloudClient

    return CloudClient(registry, token, timeout=timeout)


@click.command("publish")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@_registry_opt
@_token_opt
@click.option("--channel", help="Point this channel (e.g. stable, beta) at the new version.")
@_timeout_opt
@click.option("--json", "as_json", is_flag=True, help="Print the version record as JSON.")
def publish_cmd(bundle: Path, registry: str, token: str, channel: str | None, timeout: float, as_json: bool) -> None:
    """Upload a signed BUNDLE (directory or .tar.gz) to the registry.

    The bundle is checked here first (hashes) and by the service (hashes and signature against
    its trusted keys).
    """
    b = open_bundle(bundle)
    if b.signature is None:
        raise click.ClickException(f"{bundle} is not signed; sign it first with `edge sign {bundle} --key KEY`")
    name, version = b.manifest.name, b.manifest.version
    b.close()
    with tempfile.TemporaryDirectory(prefix="edge-publish-") as tmp:
        archive = bundle
        if bundle.is_dir():
            archive = pack_bundle(bundle, Path(tmp) / f"{name}-v{version}.tar.gz")
        rec = _client(registry, token, timeout).publish(archive, channel=channel)
    if as_json:
        echo_json(rec)
        return
    where = f" on channel {channel}" if channel else ""
    click.echo(f"published {rec['name']} v{rec['version']}{where} ({rec['size']} bytes, sha256 {rec['sha256'][:12]}…, "
               f"signed by {rec['signed_by']})")


@click.group("registry")
def registry_group() -> None:
    """List models, promote a version to a channel, roll a channel back."""


@registry_group.command("list")
@click.argument("model", required=False)
@_registry_opt
@_token_opt
@_timeout_opt
@click.option("--json", "as_json", is_flag=True)
def list_cmd(model: str | None, registry: str, token: str, timeout: float, as_json: bool) -> None:
    """Every model with its channels, or MODEL's versions."""
    c = _client(registry, token, timeout)
    data = c.model(model) if model else c.list_models()
    if as_json:
        echo_json(data)
        return
    if model:
        channels = data["channels"]
        for v in data["versions"]:
            on = [ch for ch, ver in channels.items() if ver == v["version"]]
            click.echo(f"{data['name']} v{v['version']:<4} {v['created_at']}  {v['size']:>10} B  "
                       f"sha256 {v['sha256'][:12]}…  {' '.join(on)}")
        return
    if not data:
        click.echo("no models yet (edge publish BUNDLE)")
    for m in data:
        chans = ", ".join(f"{ch}=v{v}" for ch, v in sorted(m["channels"].items())) or "no channels"
        click.echo(f"{m['name']:<30} latest v{m['latest']:<4} {m['versions']} version(s)  {chans}")


@registry_group.command("promote")
@click.argument("model")
@click.argument("version", type=click.IntRange(1))
@click.option("--channel", default="stable", show_default=True)
@_registry_opt
@_token_opt
@_timeout_opt
def promote_cmd(model: str, version: int, channel: str, registry: str, token: str, timeout: float) -> None:
    """Point CHANNEL of MODEL at VERSION; its devices get an update notice."""
    rec = _client(registry, token, timeout).promote(model, channel, version)
    click.echo(f"{model}: {channel} -> v{rec['version']}")


@registry_group.command("rollback")
@click.argument("model")
@click.option("--channel", default="stable", show_default=True)
@_registry_opt
@_token_opt
@_timeout_opt
def rollback_cmd(model: str, channel: str, registry: str, token: str, timeout: float) -> None:
    """Point CHANNEL of MODEL back at the version it had before its latest promotion."""
    rec = _client(registry, token, timeout).rollback(model, channel)
    click.echo(f"{model}: {channel} rolled back to v{rec['version']}")
