"""Read the MBR partition table of a disk image (Raspberry Pi OS images use MBR, not GPT)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from ._errors import ImageError

__all__ = ["Partition", "boot_partition", "check_not_compressed", "read_partitions"]

SECTOR = 512
# FAT12/16/32 partition type ids, CHS and LBA variants.
FAT_TYPES = frozenset({0x01, 0x04, 0x06, 0x0B, 0x0C, 0x0E})
_GPT_PROTECTIVE = 0xEE
_EXTENDED = frozenset({0x05, 0x0F, 0x85})

# Magic numbers of the archive formats images are distributed in.
_COMPRESSED = {
    b"\xfd7zXZ\x00": ("xz", "xz -dk"),
    b"\x1f\x8b": ("gzip", "gunzip -k"),
    b"PK\x03\x04": ("zip", "unzip"),
    b"\x28\xb5\x2f\xfd": ("zstd", "zstd -d"),
}


@dataclass(frozen=True)
class Partition:
    """One primary partition: its number (1-4), MBR type id, and extent in bytes."""

    number: int
    type_id: int
    start: int
    size: int

    @property
    def is_fat(self) -> bool:
        return self.type_id in FAT_TYPES


def check_not_compressed(path: Path, head: bytes) -> None:
    for magic, (kind, command) in _COMPRESSED.items():
        if head.startswith(magic):
            raise ImageError(
                f"{path}: is a {kind}-compressed file, not a disk image; decompress it first "
                f"({command} {path.name})"
            )


def read_partitions(path: Path) -> list[Partition]:
    """The non-empty primary partitions of the image's MBR, checked to lie inside the file."""
    try:
        with path.open("rb") as f:
            mbr = f.read(SECTOR)
            size = f.seek(0, 2)
    except FileNotFoundError as exc:
        raise ImageError(f"{path}: no such image file") from exc
    except IsADirectoryError as exc:
        raise ImageError(f"{path}: is a directory, not an image file") from exc
    except OSError as exc:
        raise ImageError(f"{path}: cannot read image: {exc.strerror or exc}") from exc
    check_not_compressed(path, mbr)
    if len(mbr) < SECTOR or mbr[510:512] != b"\x55\xaa":
        raise ImageError(f"{path}: no partition table (no MBR boot signature); is this a disk image?")
    parts: list[Partition] = []
    for i in range(4):
        entry = mbr[446 + 16 * i: 446 + 16 * (i + 1)]
        type_id = entry[4]
        first, count = struct.unpack_from("<II", entry, 8)
        if type_id == 0 or count == 0:
            continue
        if type_id == _GPT_PROTECTIVE:
            raise ImageError(
                f"{path}: has a GPT partition table; only MBR images (as Raspberry Pi OS ships) are supported"
            )
        part = Partition(i + 1, type_id, first * SECTOR, count * SECTOR)
        if part.start + part.size > size:
            raise ImageError(
                f"{path}: partition {part.number} ends at byte {part.start + part.size} but the image has "
                f"only {size} bytes; the image is truncated"
            )
        parts.append(part)
    if not parts:
        raise ImageError(f"{path}: the partition table is empty")
    return parts


def boot_partition(path: Path) -> Partition:
    """The first FAT partition: where the Raspberry Pi firmware looks for its boot files."""
    parts = read_partitions(path)
    for part in parts:
        if part.is_fat:
            return part
    kinds = ", ".join(f"{p.number}: type 0x{p.type_id:02x}" for p in parts)
    extended = " (logical partitions are not searched)" if any(p.type_id in _EXTENDED for p in parts) else ""
    raise ImageError(f"{path}: no FAT boot partition in the partition table ({kinds}){extended}")
