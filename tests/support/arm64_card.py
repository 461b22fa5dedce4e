"""A bootable arm64 Debian 12 SD card image, the way a user's Raspberry Pi card looks.

The card is an MBR disk (label id ``0x4e639091``, as Raspberry Pi OS images have) with a FAT32 boot
partition ``bootfs`` (``cmdline.txt``, ``config.txt``) at 4 MiB and an ext4 root ``rootfs`` after it,
built without a loop device or a mount: sfdisk, ``mkfs.vfat`` + mtools, ``mkfs.ext4 -d``.

The root is a real ``debootstrap --arch=arm64`` of Debian 12 (both stages; the second runs the arm64
maintainer scripts under qemu-user through binfmt_misc) with systemd, udev, OpenSSH, sudo,
python3 + python3-venv and Debian's arm64 kernel (``linux-image-arm64``, whose postinst makes the
initrd in the root), set up as a Raspberry Pi OS card is: user ``pi`` (uid 1000) with password-less
sudo, hostname ``raspberrypi``, ``/boot/firmware`` mounted from the FAT partition, the network by
DHCP (systemd-networkd), and pip pointed at a wheelhouse of the runtime's aarch64 wheels inside the
root (``/etc/pip.conf``, as Raspberry Pi OS points it at piwheels), so the first boot installs the
edge runtime with no network.

Everything is cached below ``$EDGE_TEST_CACHE`` (see debian_roots.py), keyed by its inputs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.debian_roots import AARCH64_PLATFORMS, cached, debian_mirror

__all__ = [
    "CARD_CMDLINE",
    "CARD_LABEL_ID",
    "WHEELHOUSE_IN_ROOT",
    "Card",
    "aarch64_wheelhouse",
    "ensure_binfmt_aarch64",
    "make_card",
    "vm_root",
]

SUITE = "bookworm"
MiB = 1024 * 1024
BOOT_START = 4 * MiB
BOOT_MIB = 512
CARD_LABEL_ID = "4e639091"
#: cmdline.txt of a Bookworm card after its own first boot (partition resized, ``init=`` hook gone).
CARD_CMDLINE = (
    f"console=serial0,115200 console=tty1 root=PARTUUID={CARD_LABEL_ID}-02 rootfstype=ext4 fsck.repair=yes "
    "rootwait\n"
)
CONFIG_TXT = "# http://rptl.io/configtxt\ndtparam=audio=on\ncamera_auto_detect=1\narm_64bit=1\n\n[all]\n"
WHEELHOUSE_IN_ROOT = "/var/cache/edge-wheels"
PACKAGES = (
    "systemd", "systemd-sysv", "udev", "dbus", "kmod", "iproute2", "procps", "openssh-server", "sudo",
    "python3", "python3-venv", "linux-image-arm64", "initramfs-tools", "zstd", "dosfstools", "less",
)
# Changing this text (or PACKAGES) rebuilds the cached root.
_SETUP_VERSION = "4"
_BINFMT_NAME = "qemu-aarch64"
_BINFMT_RULE = (
    ":qemu-aarch64:M::\\x7fELF\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00:"
    "\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:"
    "{interpreter}:F"
)


def _run(cmd: list[str], **kw: object) -> None:
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]


def ensure_binfmt_aarch64() -> None:
    """Register qemu-aarch64-static with binfmt_misc (flag F: it works inside chroots) if not yet done."""
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if not (binfmt / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)], check=False,
                       capture_output=True)
    if (binfmt / _BINFMT_NAME).exists() or (binfmt / "qemu-aarch64-static").exists():
        return
    qemu = shutil.which("qemu-aarch64-static")
    if qemu is None:
        raise RuntimeError("qemu-aarch64-static not found: apt-get install qemu-user-static")
    rule = _BINFMT_RULE.format(interpreter=qemu).encode().decode("unicode_escape").encode("latin-1")
    (binfmt / "register").write_bytes(rule)


def _chroot(root: Path, script: str) -> None:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive",
           "HOME": "/root"}
    _run(["chroot", str(root), "/bin/sh", "-ec", script], env=env)


def _setup_root(root: Path) -> None:
    """What makes the debootstrapped root look like a Raspberry Pi OS card's (see the module docstring)."""
    w = lambda rel, text, mode=0o644: (_write(root / rel, text, mode))  # noqa: E731
    w("etc/hostname", "raspberrypi\n")
    w("etc/hosts", "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\traspberrypi\n")
    w("etc/fstab",
      "proc            /proc           proc    defaults          0       0\n"
      f"PARTUUID={CARD_LABEL_ID}-01  /boot/firmware  vfat    defaults          0       2\n"
      f"PARTUUID={CARD_LABEL_ID}-02  /               ext4    defaults,noatime  0       1\n")
    (root / "boot/firmware").mkdir(parents=True, exist_ok=True)
    w("etc/systemd/network/50-wired.network", "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n")
    w("etc/pip.conf", f"[global]\nno-index = true\nfind-links = {WHEELHOUSE_IN_ROOT}\n")
    w("etc/sudoers.d/010_pi-nopasswd", "pi ALL=(ALL) NOPASSWD: ALL\n", 0o440)
    # apt as on a real card (install-on-pi.sh asks apt only for packages that are missing).
    w("etc/apt/sources.list", f"deb {debian_mirror()} {SUITE} main\n")
    _chroot(root, "\n".join([
        "useradd -m -u 1000 -s /bin/bash -G sudo,adm,dialout,audio,video,plugdev,users pi",
        "systemctl enable systemd-networkd.service ssh.service",
        "systemctl mask systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer "
        "e2scrub_all.timer fstrim.timer man-db.timer 2>/dev/null || true",
        "apt-get clean",
        "rm -f /etc/ssh/ssh_host_*",
        # Host keys are made on the card's first boot, so two cards never share them.
        "printf '[Unit]\\nDescription=SSH host keys\\nBefore=ssh.service\\n"
        "ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key\\n[Service]\\nType=oneshot\\n"
        "ExecStart=/usr/bin/ssh-keygen -A\\n[Install]\\nWantedBy=multi-user.target\\n' "
        ">/etc/systemd/system/ssh-hostkeys.service",
        "systemctl enable ssh-hostkeys.service",
    ]))
    (root / "etc/machine-id").write_text("")  # "uninitialized": made at first boot, as on a fresh image


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _key(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def vm_root() -> Path:
    """The bootable arm64 Debian 12 root (a directory), built once."""

    def build(tmp: Path) -> None:
        ensure_binfmt_aarch64()
        root = tmp / "root"
        _run(["debootstrap", "--arch=arm64", "--variant=minbase", f"--include={','.join(PACKAGES)}",
              SUITE, str(root), debian_mirror()], stdout=subprocess.DEVNULL)
        _setup_root(root)

    return cached(f"vm-root-{SUITE}-arm64-{_key(_SETUP_VERSION, *PACKAGES)}", build) / "root"


def aarch64_wheelhouse(locks: Sequence[Path]) -> Path:
    """The aarch64 CPython 3.11 wheels of lock files (their ``-e .`` lines left out), downloaded once."""
    lines = [ln.split("#", 1)[0].strip() for lock in locks for ln in lock.read_text().splitlines()]
    reqs = sorted({ln for ln in lines if ln and not ln.startswith("-e")})

    def build(tmp: Path) -> None:
        platforms = [arg for p in AARCH64_PLATFORMS for arg in ("--platform", p)]
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
              "--only-binary=:all:", *platforms, "--python-version", "3.11", "--implementation", "cp",
              "--abi", "cp311", "--no-deps", "-d", str(tmp / "wheels"), *reqs])

    return cached(f"wheels-cp311-aarch64-{_key(*reqs)}", build) / "wheels"


@dataclass(frozen=True)
class Card:
    image: Path
    kernel: Path
    initrd: Path
    boot_start: int
    root_start: int


def _card_template(root: Path, wheels: Path) -> Path:
    """A card image (raw, sparse) from the root plus the wheelhouse, built once per root and wheel set."""

    def build(tmp: Path) -> None:
        staging = tmp / "root"
        # A hard-link copy: the cached root is never changed, and the copy costs no space.
        _run(["cp", "-al", str(root), str(staging)])
        target = staging / WHEELHOUSE_IN_ROOT.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        for whl in wheels.glob("*.whl"):
            shutil.copy2(whl, target / whl.name)
        boot = sorted((staging / "boot").glob("vmlinuz-*"))[-1]
        initrd = staging / "boot" / boot.name.replace("vmlinuz-", "initrd.img-")
        shutil.copy2(boot, tmp / "vmlinuz")
        shutil.copy2(initrd, tmp / "initrd.img")
        used = int(subprocess.run(["du", "-sm", str(staging)], check=True, capture_output=True,
                                  text=True).stdout.split()[0])
        root_mib = used + 1536  # room for the venv the first boot makes, the agent's state, logs
        image = tmp / "card.img"
        root_start = BOOT_START + BOOT_MIB * MiB
        with image.open("wb") as f:
            f.truncate(root_start + root_mib * MiB)
        table = (
            f"label: dos\nlabel-id: 0x{CARD_LABEL_ID}\n"
            f"start={BOOT_START // 512}, size={BOOT_MIB * MiB // 512}, type=c\n"
            f"start={root_start // 512}, size={root_mib * MiB // 512}, type=83\n"
        )
        subprocess.run(["sfdisk", "--quiet", str(image)], input=table.encode(), check=True, capture_output=True)
        _run(["mkfs.vfat", "-F", "32", "-n", "bootfs", "--offset", str(BOOT_START // 512), str(image),
              str(BOOT_MIB * 1024)], stdout=subprocess.DEVNULL)
        _run(["mkfs.ext4", "-q", "-F", "-L", "rootfs", "-d", str(staging), "-E", f"offset={root_start}",
              str(image), f"{root_mib}M"])
        drive = f"{image}@@{BOOT_START}"
        env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
        files = {"cmdline.txt": CARD_CMDLINE.encode(), "config.txt": CONFIG_TXT.encode()}
        for name, data in files.items():
            src = tmp / name
            src.write_bytes(data)
            subprocess.run(["mcopy", "-i", drive, str(src), f"::/{name}"], check=True, env=env, capture_output=True)
            src.unlink()
        # The Pi's firmware loads the kernel and initrd from the FAT partition; qemu gets them with -kernel.
        subprocess.run(["mcopy", "-i", drive, str(tmp / "vmlinuz"), "::/kernel8.img"], check=True, env=env,
                       capture_output=True)
        shutil.rmtree(staging)

    return cached(f"card-{root.parent.name}-{wheels.parent.name}", build)


def make_card(dest: Path, locks: Sequence[Path]) -> Card:
    """A fresh copy (sparse) of the cached card at ``dest``, with the kernel and initrd next to it."""
    template = _card_template(vm_root(), aarch64_wheelhouse(locks))
    dest.parent.mkdir(parents=True, exist_ok=True)
    _run(["cp", "--sparse=always", str(template / "card.img"), str(dest)])
    root_start = BOOT_START + BOOT_MIB * MiB
    return Card(dest, template / "vmlinuz", template / "initrd.img", BOOT_START, root_start)
