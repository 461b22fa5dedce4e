"""``edge pi``: prepare a Raspberry Pi OS image, flash it to an SD card.

For a Pi that already runs, copy ``scripts/install-on-pi.sh`` and the wheel to it and run the
script there (``prepare-image`` puts the same script on the image for the first boot).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from edge_deploy import (
    DeployInputError,
    DeviceSettings,
    DeviceToken,
    device_token,
    flash_image,
    prepare_image,
    read_device_token,
    read_ssh_keys,
    read_wifi,
)

from ._common import echo_json

__all__ = ["pi_group"]

_File = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group("pi")
def pi_group() -> None:
    """Prepare a Raspberry Pi SD image, flash it, or install onto a running Pi.

    \b
    1. edge pi prepare-image raspios.img --bundle model.tar.gz --config agent.toml \\
           --trusted-key release.pub --device-token-file cam-1.token \\
           --hostname cam-1 --ssh-key ~/.ssh/id_ed25519.pub \\
           --wifi-ssid home --wifi-psk-file wifi.txt --wifi-country GB
    2. edge pi flash raspios.img --device /dev/sdX
    3. put the card in the Pi: the first boot sets it up and starts edge-agent.service.

    A Pi that already runs: copy scripts/install-on-pi.sh and the wheel to it and run
    `sudo bash install-on-pi.sh --wheel edge_runtime-*.whl --bundle B --config agent.toml`.
    """


@pi_group.command("prepare-image")
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--bundle", required=True, type=click.Path(exists=True, path_type=Path),
              help="Model bundle (directory or .tar.gz) the device runs; installed under /var/lib/edge/bundles/.")
@click.option("--config", "config", required=True, type=_File,
              help="Agent config (TOML), installed as /etc/edge/agent.toml with every path in it rewritten to "
              "where the first boot puts the file on the device; refused when the agent would refuse it.")
@click.option("--trusted-key", "trusted_keys", multiple=True, type=_File,
              help="Ed25519 public key (PEM) bundles must be signed with; installed as /etc/edge/keys/NAME.pub. "
              "Repeatable; replaces the config's model.trusted_keys.")
@click.option("--device-token", "token_value", metavar="TOKEN",
              help="The device's cloud token, installed as /etc/edge/device.token (0600). Visible to `ps` and "
              "in shell history: prefer --device-token-file.")
@click.option("--device-token-file", type=_File,
              help="File holding the device's cloud token (replaces the config's cloud.token / cloud.token_file).")
@click.option("--wheel", type=_File, help="edge-runtime wheel to install [default: built from this checkout].")
@click.option("--hostname", help="Host name of the device.")
@click.option("--user", default="pi", show_default=True, help="Login user (password locked: SSH key only).")
@click.option("--ssh-key", type=_File, help="OpenSSH public key file (.pub) to log in with; enables SSH.")
@click.option("--wifi-ssid", help="WiFi network name.")
@click.option("--wifi-psk-file", type=_File,
              help="File holding the WiFi passphrase (never given on the command line).")
@click.option("--wifi-country", help="Two-letter WiFi regulatory country, e.g. GB, DE, US (needed with --wifi-ssid).")
@click.option("--first-boot", type=click.Choice(["auto", "cloud-init", "firstrun"]), default="auto",
              show_default=True,
              help="First-boot mechanism: auto detects it from the boot partition (cloud-init files on current "
              "images, cmdline.txt + firstrun.sh on Bookworm ones).")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
def prepare_image_cmd(image: Path, bundle: Path, config: Path, trusted_keys: tuple[Path, ...],
                      token_value: str | None, device_token_file: Path | None, wheel: Path | None,
                      hostname: str | None, user: str, ssh_key: Path | None, wifi_ssid: str | None,
                      wifi_psk_file: Path | None, wifi_country: str | None, first_boot: Any, as_json: bool) -> None:
    """Write first-boot setup, bundle, agent config and wheel into IMAGE's boot partition.

    IMAGE is an uncompressed Raspberry Pi OS image (.img). Only its FAT boot partition is changed,
    through mtools: no root, no mount. Running it again with the same options gives the same files.
    """
    wifi = None
    if wifi_ssid is not None or wifi_psk_file is not None or wifi_country is not None:
        if wifi_ssid is None or wifi_psk_file is None or wifi_country is None:
            raise DeployInputError("WiFi needs all three of --wifi-ssid, --wifi-psk-file and --wifi-country")
        wifi = read_wifi(wifi_ssid, wifi_psk_file, wifi_country)
    settings = DeviceSettings(
        user=user,
        hostname=hostname,
        ssh_keys=read_ssh_keys(ssh_key) if ssh_key else (),
        wifi=wifi,
    )
    if token_value is not None and device_token_file is not None:
        raise DeployInputError("give the device token once: --device-token or --device-token-file, not both")
    token: DeviceToken | None = None
    if token_value is not None:
        token = device_token(token_value)
    elif device_token_file is not None:
        token = read_device_token(device_token_file)
    result = prepare_image(
        image, bundle=bundle, config=config, settings=settings, wheel=wheel, mechanism=first_boot,
        trusted_keys=trusted_keys, device_token=token,
        progress=None if as_json else (lambda msg: click.echo(f"  {msg}", err=True)),
    )
    secret = set(result.secrets)
    if as_json:
        echo_json({
            "image": str(result.image),
            "partition": {"number": result.partition.number, "start": result.partition.start,
                          "size": result.partition.size},
            "first_boot": result.mechanism,
            # A token's hash would let anyone holding the output test guesses against it.
            "files": {path: None if path in secret else digest for path, digest in result.files.items()},
            "removed": list(result.removed),
            "device": {"bundle": result.device_bundle, "config": result.device_config,
                       "trusted_keys": list(result.trusted_keys), "token_file": result.token_file},
        })
        return
    click.echo(f"{image}: boot partition {result.partition.number} prepared, first boot by {result.mechanism}")
    for path, digest in result.files.items():
        click.echo(f"  {path}  (secret)" if path in secret else f"  {path}  sha256 {digest[:16]}")
    for path in result.removed:
        click.echo(f"  removed {path}")
    click.echo(f"on the device: bundle {result.device_bundle}, config {result.device_config}")
    if result.trusted_keys:
        click.echo(f"  trusted keys {', '.join(result.trusted_keys)}")
    if result.token_file:
        click.echo(f"  device token {result.token_file}")
    if not settings.ssh_keys:
        click.echo("note: no --ssh-key given, so SSH stays off and the device has no login", err=True)


@pi_group.command("flash")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--device", required=True, type=click.Path(path_type=Path),
              help="Whole-disk block device of the SD card, e.g. /dev/sdb or /dev/mmcblk0 (see lsblk).")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Read the device back and compare its sha256 with the image's.")
@click.option("--yes", is_flag=True, help="Do not ask before erasing a block device.")
def flash_cmd(image: Path, device: Path, verify: bool, yes: bool) -> None:
    """Write IMAGE to DEVICE with a progress bar, then check it.

    Refuses a device that is mounted, holds the running system, is a partition, or is smaller than
    the image. A regular file is accepted as DEVICE (a file-backed disk), but is never grown.
    """
    from edge_deploy import check_target

    check_target(image, device)
    if device.is_block_device() and not yes:
        click.confirm(f"Erase everything on {device} and write {image.name}?", abort=True)
    bars: dict[str, Any] = {}
    seen: dict[str, int] = {}

    def progress(phase: str, done: int, total: int) -> None:
        bar = bars.get(phase)
        if bar is None:
            for other in bars.values():
                other.render_finish()
            label = "writing  " if phase == "write" else "verifying"
            bar = click.progressbar(length=total, label=label, file=sys.stderr)
            bars[phase] = bar
            bar.render_progress()
            seen[phase] = 0
        bar.update(done - seen[phase])
        seen[phase] = done

    try:
        result = flash_image(image, device, verify=verify, progress=progress)
    finally:
        for bar in bars.values():
            bar.render_finish()
    check = "verified" if result.verified else "not verified"
    click.echo(f"{device}: wrote {result.size} bytes, sha256 {result.sha256} ({check})")
