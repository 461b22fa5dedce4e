"""`edge pi flash`: streaming write, read-back check, and every refusal, on file-backed targets,
a fake /sys + mount table for block-device topologies, and this machine's real root disk."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from edge_deploy import FlashRefusedError, FlashSystem, ImageError, check_target, flash_image
from tests.support.cli import run_cli

MiB = 1024 * 1024


@pytest.fixture
def image(tmp_path: Path) -> Path:
    # Not a multiple of the 4 MiB chunk, and varied content so a misplaced chunk would show.
    path = tmp_path / "disk.img"
    with path.open("wb") as f:
        for i in range(10):
            f.write(hashlib.sha256(str(i).encode()).digest() * (MiB // 32))
        f.write(b"tail" * 1000)
    return path


def _target(tmp_path: Path, size: int, fill: bytes = b"\xee") -> Path:
    path = tmp_path / "sdcard.bin"
    path.write_bytes(fill * size)
    return path


def _digest(path: Path, size: int | None = None) -> str:
    with path.open("rb") as f:
        return hashlib.sha256(f.read() if size is None else f.read(size)).hexdigest()


def test_flash_writes_the_image_and_verifies_it(tmp_path, image):
    target = _target(tmp_path, 16 * MiB)
    size = image.stat().st_size
    calls: list[tuple[str, int, int]] = []
    result = flash_image(image, target, progress=lambda phase, done, total: calls.append((phase, done, total)))
    assert result.verified and result.size == size
    assert result.sha256 == _digest(image)
    assert _digest(target, size) == _digest(image)
    with target.open("rb") as f:
        f.seek(size)
        assert f.read() == b"\xee" * (16 * MiB - size), "bytes past the image stay as they were"
    assert target.stat().st_size == 16 * MiB
    for phase in ("write", "verify"):
        dones = [done for p, done, total in calls if p == phase and total == size]
        assert dones == sorted(dones) and dones[-1] == size
    assert [p for p, _, _ in calls].index("verify") > max(i for i, c in enumerate(calls) if c[0] == "write")


def test_cli_flash_reports_the_hash(tmp_path, image, capsys):
    target = _target(tmp_path, 12 * MiB)
    code, out, err = run_cli(["pi", "flash", str(image), "--device", str(target), "--verify"], capsys)
    assert code == 0, err
    assert f"sha256 {_digest(image)} (verified)" in out
    assert "writing" in err and "verifying" in err
    assert _digest(target, image.stat().st_size) == _digest(image)


def _refused(argv_image: Path, target: Path, capsys, message: str) -> None:
    before = target.read_bytes() if target.is_file() else None
    code, _out, err = run_cli(["pi", "flash", str(argv_image), "--device", str(target), "--yes"], capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    if before is not None:
        assert target.read_bytes() == before


def test_refuses_a_target_smaller_than_the_image(tmp_path, image, capsys):
    target = _target(tmp_path, 8 * MiB)
    _refused(image, target, capsys, f"is smaller than the image ({8 * MiB} bytes < {image.stat().st_size} bytes)")


def test_refuses_a_missing_target_and_creates_nothing(tmp_path, image, capsys):
    target = tmp_path / "sdx"
    _refused(image, target, capsys, "no such device")
    assert not target.exists()


def test_refuses_a_mounted_target(tmp_path, image):
    target = _target(tmp_path, 16 * MiB)
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
        f"90 22 7:3 / /media/SD\\040card rw,relatime - vfat {target} rw\n"
    )
    before = target.read_bytes()
    with pytest.raises(FlashRefusedError, match=r"is mounted \(on /media/SD card\); unmount it first"):
        flash_image(image, target, system=FlashSystem(mountinfo=mountinfo))
    assert target.read_bytes() == before


def test_refuses_compressed_and_self(tmp_path, image, capsys):
    xz = tmp_path / "raspios.img.xz"
    xz.write_bytes(b"\xfd7zXZ\x00" + b"\x01" * 100)
    target = _target(tmp_path, 16 * MiB)
    _refused(xz, target, capsys, "is a xz-compressed file, not a disk image")
    _refused(image, image, capsys, "is the image itself")
    with pytest.raises(ImageError, match="no such image file"):
        check_target(tmp_path / "none.img", target)


# -- block devices: a fake sysfs and mount table around real device nodes -----------------------------------


@pytest.fixture
def fake_disk(tmp_path: Path):
    """A device node for a disk and one for its first partition, with the sysfs tree the kernel would show.

    The nodes use loop device numbers far above any that exists (7:200, 7:201), so nothing can
    ever be written through them; refusals happen before any open.
    """
    if os.geteuid() != 0:
        pytest.fail("the deploy tests run as root (they create device nodes and chroots)")
    dev = tmp_path / "dev"
    dev.mkdir()
    disk, part = dev / "sdz", dev / "sdz1"
    os.mknod(disk, stat.S_IFBLK | 0o600, os.makedev(7, 200))
    os.mknod(part, stat.S_IFBLK | 0o600, os.makedev(7, 201))
    sys_root = tmp_path / "sys"
    block = sys_root / "block" / "sdz"
    (block / "sdz1").mkdir(parents=True)
    (block / "dev").write_text("7:200\n")
    (block / "size").write_text(f"{64 * MiB // 512}\n")
    (block / "sdz1" / "dev").write_text("7:201\n")
    (block / "sdz1" / "partition").write_text("1\n")
    (block / "sdz1" / "size").write_text(f"{32 * MiB // 512}\n")
    by_num = sys_root / "dev" / "block"
    by_num.mkdir(parents=True)
    (by_num / "7:200").symlink_to(block)
    (by_num / "7:201").symlink_to(block / "sdz1")
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n")
    return disk, part, FlashSystem(mountinfo=mountinfo, sys_block=by_num), mountinfo


def test_block_device_refusals(image, fake_disk):
    disk, part, system, mountinfo = fake_disk
    with pytest.raises(FlashRefusedError, match=r"is a partition; flash the whole disk it belongs to \(/dev/sdz\)"):
        check_target(image, part, system)

    mountinfo.write_text("22 1 254:0 / / rw - ext4 /dev/vda rw\n40 22 7:201 / /media/pi/bootfs rw - vfat x rw\n")
    with pytest.raises(FlashRefusedError, match=r"is mounted \(on /media/pi/bootfs\)"):
        check_target(image, disk, system)

    mountinfo.write_text("22 1 7:201 / / rw - ext4 /dev/root rw\n")
    with pytest.raises(FlashRefusedError, match=r"holds the running system's root file system"):
        check_target(image, disk, system)

    mountinfo.write_text("22 1 254:0 / / rw - ext4 /dev/vda rw\n")
    assert check_target(image, disk, system) == image.stat().st_size  # 64 MiB disk, nothing mounted

    (Path(os.readlink(system.sys_block / "7:200")) / "size").write_text(f"{4 * MiB // 512}\n")
    with pytest.raises(FlashRefusedError, match="is smaller than the image"):
        check_target(image, disk, system)


def _root_disk_node() -> Path | None:
    """The /dev node of the whole disk this machine's / lives on, if / is on a block device."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] != "/":
            continue
        major, minor = map(int, fields[2].split(":"))
        entry = Path(f"/sys/dev/block/{major}:{minor}")
        if not entry.exists():
            return None
        entry = entry.resolve()
        if (entry / "partition").exists():
            entry = entry.parent
        node = Path("/dev") / entry.name
        return node if node.is_block_device() else None
    return None


def test_refuses_the_disk_this_machine_runs_from(image, capsys):
    node = _root_disk_node()
    if node is None:
        pytest.skip("/ is not on a block device here (container overlay); test_block_device_refusals covers it")
    _refused(image, node, capsys, "holds the running system's root file system (/)")
