"""Raspberry Pi OS-like disk images for the tests, built the way the real ones are laid out.

A real image is an MBR disk with a FAT32 boot partition (label ``bootfs``, type 0x0c) starting at
4 MiB and an ext4 root partition after it. These are built with sfdisk, mkfs.vfat and mkfs.ext4
on a sparse file (no loop device, no mount) and the boot files are put in with mcopy: so the code
under test reads a file system that neither it nor its helpers made.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["BOOKWORM_CMDLINE", "PiImage", "extract_boot", "fsck_boot", "make_pi_image", "region_sha256"]

MiB = 1024 * 1024
BOOT_START = 4 * MiB
Kind = Literal["bookworm", "trixie", "no-cmdline"]

BOOKWORM_CMDLINE = (
    "console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 fsck.repair=yes "
    "rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n"
)
TRIXIE_CMDLINE = (
    "console=serial0,115200 console=tty1 root=PARTUUID=a7b3b9d2-02 rootfstype=ext4 fsck.repair=yes "
    "rootwait quiet splash plymouth.ignore-serial-consoles cfg80211.ieee80211_regdom=GB\n"
)
CONFIG_TXT = (
    "# For more options and information see\n# http://rptl.io/configtxt\n"
    "dtparam=audio=on\ncamera_auto_detect=1\ndisplay_auto_detect=1\nauto_initramfs=1\n"
    "dtoverlay=vc4-kms-v3d\nmax_framebuffers=2\ndisable_fw_kms_setup=1\narm_64bit=1\n"
    "disable_overscan=1\narm_boost=1\n\n[all]\n"
)
# The stock cloud-init seed of a current image: commented examples, to be replaced.
STOCK_USER_DATA = "#cloud-config\n# This is the user-data configuration file for cloud-init.\n"
STOCK_META_DATA = "instance-id: rpios-image\n"
STOCK_NETWORK_CONFIG = "# network:\n#   version: 2\n#   ethernets: {}\n"


@dataclass(frozen=True)
class PiImage:
    path: Path
    kind: Kind
    boot_start: int
    boot_size: int
    root_start: int
    root_size: int
    files: dict[str, bytes]
    """The boot partition's files as built: path inside the partition -> content."""


def _run(*cmd: str, input: bytes | None = None) -> None:
    subprocess.run(cmd, check=True, input=input, capture_output=True)


def make_pi_image(path: Path, kind: Kind = "bookworm", *, boot_mib: int = 512, root_mib: int = 64) -> PiImage:
    boot_size, root_size = boot_mib * MiB, root_mib * MiB
    root_start = BOOT_START + boot_size
    with path.open("wb") as f:
        f.truncate(root_start + root_size)
    table = (
        "label: dos\nlabel-id: 0x4e639091\n"
        f"start={BOOT_START // 512}, size={boot_size // 512}, type=c\n"
        f"start={root_start // 512}, size={root_size // 512}, type=83\n"
    )
    _run("sfdisk", "--quiet", str(path), input=table.encode())
    _run("mkfs.vfat", "-F", "32", "-n", "bootfs", "--offset", str(BOOT_START // 512), str(path),
         str(boot_size // 1024))
    _run("mkfs.ext4", "-q", "-F", "-L", "rootfs", "-E", f"offset={root_start}", str(path), f"{root_size // 1024}k")

    rng = hashlib.sha256(kind.encode()).digest()
    files: dict[str, bytes] = {
        "/config.txt": CONFIG_TXT.encode(),
        "/issue.txt": f"Raspberry Pi reference ({kind})\n".encode(),
        # Stand-ins for the firmware blobs: the test checks they come through unchanged.
        "/kernel8.img": (rng * (3 * MiB // len(rng)))[: 3 * MiB - 7],
        "/bcm2711-rpi-4-b.dtb": rng * 1000,
        "/overlays/README": b"Overlays directory\n",
    }
    if kind == "bookworm":
        files["/cmdline.txt"] = BOOKWORM_CMDLINE.encode()
    elif kind == "trixie":
        files["/cmdline.txt"] = TRIXIE_CMDLINE.encode()
        files["/user-data"] = STOCK_USER_DATA.encode()
        files["/meta-data"] = STOCK_META_DATA.encode()
        files["/network-config"] = STOCK_NETWORK_CONFIG.encode()
    drive = f"{path}@@{BOOT_START}"
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    subprocess.run(["mmd", "-i", drive, "::/overlays"], check=True, env=env, capture_output=True)
    staging = path.with_name(path.name + ".staging")
    staging.mkdir()
    for name, data in files.items():
        src = staging / name.strip("/").replace("/", "_")
        src.write_bytes(data)
        subprocess.run(["mcopy", "-i", drive, str(src), "::" + name], check=True, env=env, capture_output=True)
    for src in staging.iterdir():
        src.unlink()
    staging.rmdir()
    return PiImage(path, kind, BOOT_START, boot_size, root_start, root_size, files)


def extract_boot(image: PiImage, dest: Path) -> dict[str, bytes]:
    """Every file of the boot partition, read with mtools' own recursive copy."""
    dest.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    subprocess.run(["mcopy", "-s", "-n", "-i", f"{image.path}@@{image.boot_start}", "::/*", str(dest)],
                   check=True, env=env, capture_output=True)
    return {"/" + p.relative_to(dest).as_posix(): p.read_bytes() for p in sorted(dest.rglob("*")) if p.is_file()}


def region_sha256(path: Path, start: int, size: int) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        f.seek(start)
        left = size
        while left:
            chunk = f.read(min(left, 4 * MiB))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def fsck_boot(image: PiImage, tmp: Path) -> str:
    """Run fsck.vfat -n on a copy of the boot partition; return its report (raises on errors)."""
    part = tmp / "boot.part"
    with image.path.open("rb") as src, part.open("wb") as dst:
        src.seek(image.boot_start)
        left = image.boot_size
        while left:
            chunk = src.read(min(left, 4 * MiB))
            if chunk.count(0) == len(chunk):
                dst.seek(len(chunk), os.SEEK_CUR)
            else:
                dst.write(chunk)
            left -= len(chunk)
        dst.truncate(image.boot_size)
    proc = subprocess.run(["fsck.vfat", "-n", str(part)], capture_output=True, text=True)
    part.unlink()
    if proc.returncode != 0:
        raise AssertionError(f"fsck.vfat found problems:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout
