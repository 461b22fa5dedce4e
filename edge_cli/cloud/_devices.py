"""``edge devices add|list|revoke``: the cloud service's device registry from the command line.

Same service URL and admin token as ``edge publish`` (``--registry``/``EDGE_REGISTRY_URL``,
``--token``/``EDGE_REGISTRY_TOKEN``). A device's token exists in clear only in the answer to
``add``: the service stores its hash, so this command is the one chance to keep it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from edge_cli._common import echo_json
from edge_cli.cloud._registry import _registry_opt, _timeout_opt, _token_opt

__all__ = ["devices_group"]


def _client(registry: str, token: str, timeout: float) -> Any:
    from edge_device.client import CloudClient

    return CloudClient(registry, token, timeout=timeout)


@contextmanager
def _explained(registry: str, device: str | None = None) -> Iterator[None]:
    """Turn the client's errors into one line that says what to do about them."""
    from edge_device.client import ClientError, HTTPStatusError, TransportError

    try:
        yield
    except TransportError as exc:
        raise ClientError(f"cannot reach the cloud service at {registry} ({exc}); is `edge cloud serve` "
                          "running there?") from exc
    except HTTPStatusError as exc:
        status = f"HTTP {exc.status} {exc.code}"
        if exc.status == 401:
            msg = (f"the service at {registry} refused the token ({status}): pass the admin token with --token "
                   "or EDGE_REGISTRY_TOKEN")
        elif exc.status == 403:
            msg = (f"the token is not the service's admin token ({status}; a device token cannot manage "
                   "devices): pass the admin token with --token or EDGE_REGISTRY_TOKEN")
        elif exc.status == 404 and device is not None:
            msg = f"no device {device!r} is registered at {registry} ({status}); `edge devices list` shows them"
        elif exc.status == 409 and device is not None:
            msg = (f"a device {device!r} is already registered at {registry} ({status}); its token cannot be "
                   "shown again: register the device under another name")
        else:
            msg = f"{status}: {exc.message}"
        raise ClientError(msg) from exc


@click.group("devices")
def devices_group() -> None:
    """Register devices (each gets its own token), list the fleet, revoke a device."""


@devices_group.command("add")
@click.argument("name")
@click.option("--channel", default="stable", show_default=True, help="Release channel the device follows.")
@click.option("--model", metavar="NAME",
              help="Registry model the device runs; its updates follow this model on --channel.")
@_registry_opt
@_token_opt
@_timeout_opt
@click.option("--json", "as_json", is_flag=True, help="Print the device record with its token as JSON.")
def add_cmd(name: str, channel: str, model: str | None, registry: str, token: str, timeout: float,
            as_json: bool) -> None:
    """Register device NAME and print its token, the only time it is ever shown.

    NAME is also the device's MQTT topic level (edge/NAME/...): letters, digits, _ . -
    """
    with _explained(registry, name):
        rec = _client(registry, token, timeout).register_device(name, model=model, channel=channel)
    once = ("The token is shown only once: the service keeps only its hash. Store it on the device now "
            "(agent.toml [cloud] token_file, or EDGE_CLOUD_TOKEN).")
    if as_json:
        echo_json(rec)
        click.echo(once, err=True)
        return
    click.echo(f"registered device {rec['id']} (channel {rec['channel']}, model {rec['model'] or 'none'})")
    click.echo(f"token: {rec['token']}")
    click.echo(once)
    if model is None:
        click.echo("note: no --model given, so the service offers this device no updates.", err=True)


@devices_group.command("list")
@_registry_opt
@_token_opt
@_timeout_opt
@click.option("--json", "as_json", is_flag=True)
def list_cmd(registry: str, token: str, timeout: float, as_json: bool) -> None:
    """Every device: channel, model and version, last seen, state."""
    with _explained(registry):
        rows = _client(registry, token, timeout).devices()
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no devices yet (edge devices add NAME)")
        return
    click.echo(f"{'DEVICE':<24} {'CHANNEL':<10} {'MODEL':<22} {'VERSION':>7}  {'LAST SEEN':<25} STATE")
    for d in rows:
        version = f"v{d['model_version']}" if d.get("model_version") is not None else "-"
        click.echo(f"{d['id']:<24} {d.get('channel') or '-':<10} {d.get('model') or '-':<22} {version:>7}  "
                   f"{d.get('last_seen') or 'never':<25} {_state(d)}")


def _state(d: dict[str, Any]) -> str:
    if d.get("revoked"):
        return "revoked"
    if d.get("registered") is False:
        return "unregistered"  # sends telemetry, but has no token here
    return str(d.get("status") or "registered")


@devices_group.command("revoke")
@click.argument("name")
@_registry_opt
@_token_opt
@_timeout_opt
@click.option("--json", "as_json", is_flag=True)
def revoke_cmd(name: str, registry: str, token: str, timeout: float, as_json: bool) -> None:
    """Revoke device NAME: its token stops working at once, and the ingester turns its MQTT
    messages into rejects (reason "revoked"). To take its broker user away too, run
    `edge cloud broker-config --fleet-from-db URL -o DIR --reload MOSQUITTO_PID` on the broker."""
    with _explained(registry, name):
        rec = _client(registry, token, timeout).revoke_device(name)
    if as_json:
        echo_json(rec)
        return
    click.echo(f"revoked device {rec['id']} at {rec['revoked_at']}: its token no longer works")
    click.echo("the broker still knows it: run `edge cloud broker-config --fleet-from-db URL -o DIR --reload PID` "
               "on the broker to remove its MQTT user", err=True)
