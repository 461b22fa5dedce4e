"""Hostile bundles and key paths: each is refused with one clear line, in bounded memory.

The memory tests run the real `edge` command under an address-space cap (``prlimit --as``) well below
what the attack used to cost, so a regression shows as a MemoryError or a kill, not as a slow test.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from edge_runtime import (
    MAX_VERSION,
    BundleError,
    InputError,
    ManifestError,
    Model,
    SignatureError,
    UnsafeArchiveError,
    generate_keypair,
    load_private_key,
    load_public_key,
    open_bundle,
    pack_bundle,
    prescan_tar,
    sign_bundle,
)

#: the cap the memory tests run `edge` under: the attacks below cost 2 GiB and more before the fixes
CAP_BYTES = 1536 * 1024 * 1024


def _edge(*args: str, cap: int | None = CAP_BYTES, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "edge_cli", *args]
    if cap is not None:
        prlimit = shutil.which("prlimit")
        assert prlimit, "prlimit (util-linux) is needed for the memory-capped tests"
        cmd = [prlimit, f"--as={cap}", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=cwd)


def _copy(bundle: Path, dst: Path) -> Path:
    shutil.copytree(bundle, dst)
    return dst


def _rewrite_manifest(bundle: Path, **changes: object) -> None:
    m = bundle / "manifest.json"
    data = json.loads(m.read_text())
    for key, value in changes.items():
        target = data
        *path, last = key.split("__")
        for p in path:
            target = target[p]
        target[last] = value
    m.write_text(json.dumps(data))
    (bundle / "manifest.sig").unlink(missing_ok=True)


def _pax_bomb(path: Path, declared: int) -> None:
    """A valid gzip stream whose first tar header is a PAX header declaring ``declared`` bytes."""
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = declared
    block = header.tobuf(format=tarfile.USTAR_FORMAT)
    zeros = b"0" * (1 << 20)
    with gzip.open(path, "wb", compresslevel=9) as gz:
        gz.write(block)
        left = declared
        while left > 0:
            n = min(left, len(zeros))
            gz.write(zeros[:n])
            left -= n
        gz.write(b"\0" * 1024)


def test_a_pax_header_declaring_700_mib_is_refused_before_tarfile_reads_it(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.tar.gz"
    _pax_bomb(bomb, 700 * 1024 * 1024)
    assert bomb.stat().st_size < 8 * 1024 * 1024  # small on the wire, as the attack was
    with pytest.raises(UnsafeArchiveError, match="PAX header declares 734003200 bytes"):
        prescan_tar(bomb)
    with pytest.raises(UnsafeArchiveError):
        open_bundle(bomb)
    proc = _edge("inspect", str(bomb))
    assert proc.returncode == 1, proc.stderr
    assert "PAX header declares" in proc.stderr and "Traceback" not in proc.stderr


def test_a_gnu_long_name_header_is_bounded_too(tmp_path: Path) -> None:
    header = tarfile.TarInfo("././@LongLink")
    header.type = tarfile.GNUTYPE_LONGNAME
    header.size = 10 * 1024 * 1024
    path = tmp_path / "longname.tar.gz"
    with gzip.open(path, "wb") as gz:
        gz.write(header.tobuf(format=tarfile.USTAR_FORMAT))
        gz.write(b"a" * header.size + b"\0" * 1024)
    with pytest.raises(UnsafeArchiveError, match="GNU long-name header declares 10485760 bytes"):
        prescan_tar(path)


def test_a_normal_archive_passes_the_prescan_under_the_cap(mobilenet_bundle: Path, tmp_path: Path) -> None:
    archive = pack_bundle(mobilenet_bundle, tmp_path / "ok.tar.gz")
    prescan_tar(archive)
    proc = _edge("inspect", str(archive))
    assert proc.returncode == 0, proc.stderr
    assert "mobilenet_v2" in proc.stdout


@pytest.mark.parametrize(("version", "ok"), [(1, True), (MAX_VERSION, True), (MAX_VERSION + 1, False),
                                              (2**63, False), (0, False)])
def test_the_manifest_version_is_a_32_bit_positive_integer(mobilenet_bundle: Path, tmp_path: Path,
                                                           version: int, ok: bool) -> None:
    b = _copy(mobilenet_bundle, tmp_path / "b")
    _rewrite_manifest(b, version=version)
    if ok:
        assert open_bundle(b, verify_hashes=False).manifest.version == version
    else:
        with pytest.raises(ManifestError, match="version"):
            open_bundle(b, verify_hashes=False)


def test_a_huge_preprocess_size_is_refused_by_the_manifest(mobilenet_bundle: Path, tmp_path: Path) -> None:
    b = _copy(mobilenet_bundle, tmp_path / "b")
    _rewrite_manifest(b, preprocess__size=[100000, 100000])
    with pytest.raises(ManifestError, match="larger than 8192"):
        open_bundle(b)
    proc = _edge("run", str(b), "--source", str(tmp_path))
    assert proc.returncode == 1 and "larger than 8192" in proc.stderr and "Traceback" not in proc.stderr


def test_a_size_that_disagrees_with_a_fixed_input_is_refused_at_load(mobilenet_bundle: Path, tmp_path: Path) -> None:
    b = _copy(mobilenet_bundle, tmp_path / "b")
    _rewrite_manifest(b, preprocess__size=[8000, 8000])
    with pytest.raises(InputError, match="disagrees with input .* fixed at 224x224"):
        Model.load(b)


def test_a_deeply_nested_manifest_is_refused_without_recursion(mobilenet_bundle: Path, tmp_path: Path) -> None:
    b = _copy(mobilenet_bundle, tmp_path / "b")
    (b / "manifest.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(ManifestError, match="nested 100000 levels"):
        open_bundle(b)
    proc = _edge("inspect", str(b), cap=None)
    assert proc.returncode == 1 and "nested" in proc.stderr and "RecursionError" not in proc.stderr


def test_with_a_trusted_key_the_signature_is_checked_before_the_manifest_is_parsed(
        mobilenet_bundle: Path, tmp_path: Path) -> None:
    priv, pub = generate_keypair(tmp_path / "keys")
    b = _copy(mobilenet_bundle, tmp_path / "b")
    sign_bundle(b, load_private_key(priv))
    (b / "manifest.json").write_bytes(b"{" * 100_000)  # tampered, and not even JSON
    with pytest.raises(SignatureError):
        open_bundle(b, pubkey=load_public_key(pub))


def test_keys_generate_force_replaces_a_world_readable_key_with_a_0600_one(tmp_path: Path) -> None:
    out = tmp_path / "keys"
    out.mkdir()
    old = out / "edge_signing.key"
    old.write_text("old")
    old.chmod(0o644)
    proc = _edge("keys", "generate", "--out", str(out), "--force", cap=None)
    assert proc.returncode == 0, proc.stderr
    assert (old.stat().st_mode & 0o777) == 0o600
    load_private_key(old)


def test_keys_generate_force_does_not_follow_a_symlink_at_the_key_path(tmp_path: Path) -> None:
    out = tmp_path / "keys"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    os.symlink(victim, out / "edge_signing.key")
    proc = _edge("keys", "generate", "--out", str(out), "--force", cap=None)
    assert proc.returncode == 0, proc.stderr
    assert victim.read_text() == "precious"
    key = out / "edge_signing.key"
    assert not key.is_symlink() and (key.stat().st_mode & 0o777) == 0o600


def test_a_truncated_archive_is_a_bundle_error(mobilenet_bundle: Path, tmp_path: Path) -> None:
    archive = pack_bundle(mobilenet_bundle, tmp_path / "ok.tar.gz")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(BundleError):
        open_bundle(cut)
