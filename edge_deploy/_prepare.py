"""``prepare_image``: make a Raspberry Pi OS image come up as a working edge device on first boot."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge_runtime import BundleError, is_archive, open_bundle, pack_bundle

from ._device_config import DEVICE_BUNDLE_DIR, DEVICE_CONFIG, device_config
from ._errors import DeployInputError, ImageError
from ._fat import FatVolume
from ._firstboot import (
    BOOT_MOUNT,
    CLOUD_INIT_FILES,
    EDGE_DIR,
    Mechanism,
    Payload,
    cloud_init_files,
    cmdline_with_firstrun,
    cmdline_without_firstrun,
    firstboot_script,
    firstboot_unit,
    firstrun_script,
)
from ._packaged import install_script
from ._partitions import Partition, boot_partition
from ._settings import DeviceSettings, DeviceToken, read_trusted_key
from ._wheel import build_wheel, check_wheel

__all__ = ["PrepareResult", "detect_mechanism", "prepare_image"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrepareResult:
    image: Path
    partition: Partition
    mechanism: Mechanism
    files: dict[str, str]
    """Every file written to the boot partition (absolute path inside it) and its sha256."""
    removed: tuple[str, ...]
    """Files an earlier preparation left that this one deleted."""
    device_bundle: str
    """Where the bundle will be on the device after the first boot."""
    device_config: str = DEVICE_CONFIG
    trusted_keys: tuple[str, ...] = ()
    """Where the trusted keys will be on the device (as the config names them)."""
    token_file: str | None = None
    """Where the device token will be on the device, when one was given."""
    secrets: tuple[str, ...] = ()
    """Files in ``files`` whose content is secret (the token...): show neither them nor their hash."""


def detect_mechanism(volume: FatVolume) -> Mechanism:
    """Which first-boot mechanism the boot partition uses (see ``_firstboot``)."""
    names = {n.lower() for n in volume.listdir("/")}
    if "cmdline.txt" not in names:
        raise ImageError(
            f"{volume.image}: the FAT partition has no cmdline.txt, so it is not a Raspberry Pi OS boot partition"
        )
    if any(name in names for name in CLOUD_INIT_FILES):
        return "cloud-init"
    return "firstrun"


def _bundle_archive(path: Path, tmp: Path) -> tuple[str, bytes]:
    """The bundle as .tar.gz bytes and the file name it gets, after checking every hash."""
    try:
        bundle = open_bundle(path)
    except BundleError as exc:
        raise DeployInputError(f"{path}: not a usable bundle: {exc}") from exc
    manifest = bundle.manifest
    bundle.close()
    # FAT and shells both accept this alphabet; anything else in a model name becomes '_'.
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", f"{manifest.name}-v{manifest.version}")
    name = f"{stem}.tar.gz"
    if path.is_dir():
        archive = pack_bundle(path, tmp / name)
        return name, archive.read_bytes()
    if not is_archive(path):
        raise DeployInputError(f"{path}: a bundle is a directory or a .tar.gz file")
    return name, path.read_bytes()


def prepare_image(
    image: str | Path,
    *,
    bundle: str | Path,
    config: str | Path,
    settings: DeviceSettings | None = None,
    wheel: str | Path | None = None,
    mechanism: Mechanism | Literal["auto"] = "auto",
    progress: Callable[[str], None] | None = None,
    trusted_keys: Sequence[str | Path] = (),
    device_token: DeviceToken | None = None,
) -> PrepareResult:
    """Write the first-boot setup, the bundle, the agent config and the wheel into ``image``'s boot partition.

    The config on the card is the device's: every path in it is where the first boot installs the
    file (see ``_device_config``), ``trusted_keys`` and ``device_token`` replace the config's own,
    and it is validated with the agent's config model. Every input is checked before the image is
    touched. Preparing the same image twice with the same inputs leaves the same files; files a
    previous preparation put in ``/edge`` are replaced.
    """
    image = Path(image)
    settings = settings or DeviceSettings()
    say = progress or (lambda _msg: None)

    part = boot_partition(image)
    if not os.access(image, os.W_OK):
        raise ImageError(f"{image}: not writable")
    keys = tuple(read_trusted_key(Path(k)) for k in trusted_keys)

    with tempfile.TemporaryDirectory(prefix="edge-prepare-") as tmpdir:
        tmp = Path(tmpdir)
        bundle_name, bundle_bytes = _bundle_archive(Path(bundle), tmp)
        device = device_config(Path(config), bundle_name=bundle_name, trusted_keys=keys, token=device_token)
        if wheel is None:
            say("building the edge-runtime wheel")
            wheel_path = build_wheel(tmp / "wheel")
        else:
            wheel_path = check_wheel(Path(wheel))

        volume = FatVolume(image, part.start)
        found = detect_mechanism(volume)
        chosen: Mechanism = found if mechanism == "auto" else mechanism
        log.info("%s: boot partition %d at byte %d, first boot by %s", image, part.number, part.start, chosen)

        payload = Payload(wheel=wheel_path.name, bundle=bundle_name, files=tuple(f.install for f in device.files))
        edge_files: dict[str, bytes] = {
            payload.wheel: wheel_path.read_bytes(),
            payload.bundle: bundle_bytes,
            payload.config: device.text,
            **{f.install.card: f.data for f in device.files},
            payload.installer: install_script().encode(),
            payload.script: firstboot_script(payload).encode(),
            payload.unit: firstboot_unit(payload).encode(),
        }
        written: dict[str, bytes] = {}
        removed: list[str] = []

        # The edge folder first, the first-boot trigger last: an interrupted run leaves an image
        # that boots as it did before rather than one that runs a half-written setup.
        old = set(volume.walk_files(f"/{EDGE_DIR}")) if volume.exists(f"/{EDGE_DIR}") else set()
        for name, data in edge_files.items():
            path = f"/{EDGE_DIR}/{name}"
            say(f"writing {path}")
            volume.write(path, data)
            written[path] = data
        for stale in sorted(old - set(written)):
            volume.remove(stale)
            removed.append(stale)

        cmdline_path = "/cmdline.txt"
        # surrogateescape: a stray non-UTF-8 byte in cmdline.txt survives the round trip unchanged.
        cmdline = volume.read(cmdline_path).decode("utf-8", errors="surrogateescape")
        if chosen == "cloud-init":
            for name, data in cloud_init_files(settings, payload).items():
                say(f"writing /{name}")
                volume.write(f"/{name}", data)
                written[f"/{name}"] = data
            # A firstrun hook from an earlier preparation would run our setup a second time.
            if f"systemd.run={BOOT_MOUNT}/firstrun.sh" in cmdline:
                cleaned = (cmdline_without_firstrun(cmdline) + "\n").encode("utf-8", errors="surrogateescape")
                volume.write(cmdline_path, cleaned)
                written[cmdline_path] = cleaned
                if volume.exists("/firstrun.sh"):
                    volume.remove("/firstrun.sh")
                    removed.append("/firstrun.sh")
        else:
            script = firstrun_script(settings, payload).encode()
            say("writing /firstrun.sh")
            volume.write("/firstrun.sh", script)
            written["/firstrun.sh"] = script
            new_cmdline = cmdline_with_firstrun(cmdline).encode("utf-8", errors="surrogateescape")
            say("adding the first-boot hook to /cmdline.txt")
            volume.write(cmdline_path, new_cmdline)
            written[cmdline_path] = new_cmdline

    return PrepareResult(
        image=image,
        partition=part,
        mechanism=chosen,
        files={path: hashlib.sha256(data).hexdigest() for path, data in written.items()},
        removed=tuple(removed),
        device_bundle=f"{DEVICE_BUNDLE_DIR}/{bundle_name}",
        trusted_keys=device.trusted_keys,
        token_file=device.token_file,
        secrets=tuple(f"/{EDGE_DIR}/{f.install.card}" for f in device.files if f.install.secret),
    )
