"""``flash_image``: stream an image onto a block device (an SD card), then read it back and compare.

Refused before anything is opened for writing: a target that does not exist (a typo in /dev
would otherwise create a plain file), a partition instead of a whole disk, the disk the running
system's ``/`` lives on, a target with any mounted file system, and one smaller than the image.
A regular file is accepted as a target (a file-backed disk, as tests and VMs use); it is never
grown, so it must already be at least as large as the image.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ._errors import FlashError, FlashRefusedError, ImageError, VerifyError
from ._partitions import check_not_compressed

__all__ = ["FlashResult", "FlashSystem", "check_target", "flash_image"]

log = logging.getLogger(__name__)

CHUNK = 4 * 1024 * 1024
# fsync this often while writing, so progress shows data that reached the device, not the page cache.
_SYNC_EVERY = 64 * 1024 * 1024

#: progress(phase, done_bytes, total_bytes); phase is "write" or "verify".
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class FlashSystem:
    """Where the system's own state is read from; tests point these at files they write."""

    mountinfo: Path = Path("/proc/self/mountinfo")
    sys_block: Path = Path("/sys/dev/block")


@dataclass(frozen=True)
class FlashResult:
    image: Path
    target: Path
    size: int
    sha256: str
    verified: bool


@dataclass(frozen=True)
class _Target:
    path: Path
    size: int
    """Size of a regular file; block devices are measured only once they pass the other checks."""
    block: bool
    devno: int | None
    disk_devno: int | None


@dataclass(frozen=True)
class _Mount:
    devno: int
    source: str
    mountpoint: str


def _read_mounts(system: FlashSystem) -> list[_Mount]:
    try:
        text = system.mountinfo.read_text()
    except OSError as exc:
        raise FlashError(f"cannot read the mount table {system.mountinfo}: {exc.strerror or exc}") from exc
    mounts = []
    for line in text.splitlines():
        # id parent major:minor root mountpoint options [optional...] - fstype source superoptions
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5:
            continue
        major, _, minor = fields[2].partition(":")
        source = right.split()[1] if len(right.split()) > 1 else ""
        mounts.append(_Mount(os.makedev(int(major), int(minor)), _unescape(source), _unescape(fields[4])))
    return mounts


def _mount_devnos(mount: _Mount) -> set[int]:
    """The device numbers a mount stands for: btrfs and others report an anonymous one in
    mountinfo, so the source device node is asked too."""
    out = {mount.devno}
    if mount.source.startswith("/dev/"):
        try:
            st = os.stat(mount.source)
        except OSError:
            return out
        if stat.S_ISBLK(st.st_mode):
            out.add(st.st_rdev)
    return out


def _unescape(value: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes.
    return (value.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\"))


def _sys_entry(system: FlashSystem, devno: int) -> Path | None:
    entry = system.sys_block / f"{os.major(devno)}:{os.minor(devno)}"
    return entry.resolve() if entry.exists() else None


def _disk_of(system: FlashSystem, devno: int) -> int:
    """The whole disk a block device belongs to (itself when it is a disk)."""
    entry = _sys_entry(system, devno)
    if entry is not None and (entry / "partition").exists():
        dev = (entry.parent / "dev").read_text().strip()
        major, _, minor = dev.partition(":")
        return os.makedev(int(major), int(minor))
    return devno


def _disk_holders(system: FlashSystem, disk: int) -> set[int]:
    """The disk and every partition on it."""
    out = {disk}
    entry = _sys_entry(system, disk)
    if entry is not None:
        for child in entry.iterdir():
            dev = child / "dev"
            if (child / "partition").exists() and dev.exists():
                major, _, minor = dev.read_text().strip().partition(":")
                out.add(os.makedev(int(major), int(minor)))
    return out


def _block_size(system: FlashSystem, path: Path, devno: int) -> int:
    entry = _sys_entry(system, devno)
    if entry is not None and (entry / "size").exists():
        # sysfs counts 512-byte sectors whatever the device's real sector size.
        return int((entry / "size").read_text().strip()) * 512
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise FlashError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def _examine(path: Path, system: FlashSystem) -> _Target:
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise FlashRefusedError(f"{path}: no such device; check the name with lsblk") from exc
    except OSError as exc:
        raise FlashError(f"{path}: cannot examine: {exc.strerror or exc}") from exc
    if stat.S_ISBLK(st.st_mode):
        return _Target(path, -1, True, st.st_rdev, _disk_of(system, st.st_rdev))
    if stat.S_ISREG(st.st_mode):
        return _Target(path, st.st_size, False, None, None)
    raise FlashRefusedError(f"{path}: is neither a block device nor a regular file")


def check_target(image: Path, device: Path, system: FlashSystem | None = None) -> int:
    """Raise FlashRefusedError when ``device`` must not receive ``image``; return the image size."""
    system = system or FlashSystem()
    try:
        with image.open("rb") as f:
            head = f.read(8)
            image_size = f.seek(0, os.SEEK_END)
    except FileNotFoundError as exc:
        raise ImageError(f"{image}: no such image file") from exc
    except OSError as exc:
        raise ImageError(f"{image}: cannot read image: {exc.strerror or exc}") from exc
    check_not_compressed(image, head)
    if image_size == 0:
        raise ImageError(f"{image}: is empty")

    target = _examine(device, system)
    if os.path.samefile(image, device):
        raise FlashRefusedError(f"{device}: is the image itself")
    mounts = _read_mounts(system)
    if target.block:
        assert target.devno is not None and target.disk_devno is not None
        if target.disk_devno != target.devno:
            disk = _sys_entry(system, target.disk_devno)
            major, minor = os.major(target.disk_devno), os.minor(target.disk_devno)
            name = f"/dev/{disk.name}" if disk else f"device {major}:{minor}"
            raise FlashRefusedError(f"{device}: is a partition; flash the whole disk it belongs to ({name})")
        holders = _disk_holders(system, target.disk_devno)
        if any(m.mountpoint == "/" and _mount_devnos(m) & holders for m in mounts):
            raise FlashRefusedError(f"{device}: holds the running system's root file system (/); refusing")
        busy = [m for m in mounts if _mount_devnos(m) & holders]
        size = _block_size(system, device, target.devno) if not busy else 0
    else:
        size = target.size
        real = os.path.realpath(device)
        busy = [m for m in mounts if m.source and os.path.realpath(m.source) == real]
    if busy:
        where = ", ".join(sorted({m.mountpoint for m in busy}))
        raise FlashRefusedError(f"{device}: is mounted (on {where}); unmount it first (umount)")
    if size < image_size:
        raise FlashRefusedError(f"{device}: is smaller than the image ({size} bytes < {image_size} bytes)")
    return image_size


def flash_image(
    image: str | Path,
    device: str | Path,
    *,
    verify: bool = True,
    progress: Progress | None = None,
    system: FlashSystem | None = None,
) -> FlashResult:
    """Write ``image`` to the start of ``device``, synced, then (``verify``) read it back and compare sha256."""
    image, device = Path(image), Path(device)
    report = progress or (lambda _phase, _done, _total: None)
    size = check_target(image, device, system)
    block = stat.S_ISBLK(device.stat().st_mode)
    # O_EXCL on a block device: the kernel refuses it while anything (a mount, another writer) holds it.
    flags = os.O_WRONLY | (os.O_EXCL if block else 0)
    digest = hashlib.sha256()
    log.info("writing %s (%d bytes) to %s", image, size, device)
    try:
        fd = os.open(device, flags)
    except OSError as exc:
        raise FlashError(f"{device}: cannot open for writing: {exc.strerror or exc}") from exc
    try:
        done = since_sync = 0
        with image.open("rb") as src:
            while chunk := src.read(CHUNK):
                view = memoryview(chunk)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                digest.update(chunk)
                done += len(chunk)
                since_sync += len(chunk)
                if since_sync >= _SYNC_EVERY:
                    os.fsync(fd)
                    since_sync = 0
                report("write", done, size)
        os.fsync(fd)
    except OSError as exc:
        raise FlashError(f"{device}: write failed after {done} bytes: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    if done != size:
        raise FlashError(f"{image}: changed while being written ({done} bytes read, {size} expected)")
    expected = digest.hexdigest()
    if verify:
        actual = _read_back(device, size, report)
        if actual != expected:
            raise VerifyError(
                f"{device}: read-back sha256 {actual} differs from the image's {expected}; "
                "the card may be faulty or counterfeit"
            )
    return FlashResult(image=image, target=device, size=size, sha256=expected, verified=verify)


def _read_back(device: Path, size: int, report: Progress) -> str:
    digest = hashlib.sha256()
    try:
        fd = os.open(device, os.O_RDONLY)
    except OSError as exc:
        raise FlashError(f"{device}: cannot open to verify: {exc.strerror or exc}") from exc
    try:
        # Drop what the write left in the page cache so the check reads the medium, not memory.
        os.posix_fadvise(fd, 0, size, os.POSIX_FADV_DONTNEED)
        done = 0
        while done < size:
            chunk = os.read(fd, min(CHUNK, size - done))
            if not chunk:
                raise FlashError(f"{device}: ended after {done} bytes while verifying {size}")
            digest.update(chunk)
            done += len(chunk)
            report("verify", done, size)
    except OSError as exc:
        raise FlashError(f"{device}: read-back failed: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    return digest.hexdigest()
