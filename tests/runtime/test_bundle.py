"""Bundles: manifest contents, hashes, signatures, archives, and every way a bundle can be bad."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from edge_runtime import (
    BundleError,
    IntegrityError,
    ManifestError,
    Model,
    SignatureError,
    UnsafeArchiveError,
    generate_keypair,
    load_private_key,
    load_public_key,
    make_bundle,
    open_bundle,
    pack_bundle,
    safe_extract,
    sign_bundle,
)
from edge_runtime._bundle import sha256_file


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("keys")
    priv, pub = generate_keypair(d)
    other_priv, other_pub = generate_keypair(d / "other")
    return load_private_key(priv), load_public_key(pub), load_private_key(other_priv), load_public_key(other_pub)


@pytest.fixture()
def signed_bundle(tmp_path: Path, mobilenet_tflite: Path, imagenet_labels: list[str], keys) -> Path:
    return make_bundle(mobilenet_tflite, tmp_path / "b", name="mobilenet_v2", labels=imagenet_labels,
                       sign_key=keys[0])


def test_manifest_is_read_from_the_model(mobilenet_bundle: Path, mobilenet_tflite: Path) -> None:
    m = json.loads((mobilenet_bundle / "manifest.json").read_text())
    assert m["schema"] == 1 and m["name"] == "mobilenet_v2" and m["version"] == 1
    assert m["format"] == "tflite" and m["model"] == "model.tflite"
    (inp,) = m["inputs"]
    assert inp["shape"] == [1, 224, 224, 3] and inp["dtype"] == "uint8" and inp["layout"] == "NHWC"
    assert inp["quantization"] == {"scale": 0.0078125, "zero_point": 128}
    (out,) = m["outputs"]
    assert out["shape"] == [1, 1001] and out["quantization"] == {"scale": 0.00390625, "zero_point": 0}
    assert m["files"]["model.tflite"]["sha256"] == sha256_file(mobilenet_tflite)
    assert m["files"]["model.tflite"]["size"] == mobilenet_tflite.stat().st_size
    assert set(m["files"]) == {"model.tflite", "labels.txt"}
    assert m["quantization"] == "int8"
    assert len((mobilenet_bundle / "labels.txt").read_text().splitlines()) == 1001


def test_signed_bundle_verifies_and_names_the_key(signed_bundle: Path, keys) -> None:
    b = open_bundle(signed_bundle, pubkey=keys[1])
    assert b.signed_by is not None and len(b.signed_by) == 16
    # any of several trusted keys may have signed
    assert open_bundle(signed_bundle, pubkey=[keys[3], keys[1]]).signed_by == b.signed_by


def test_wrong_key_is_refused(signed_bundle: Path, keys) -> None:
    with pytest.raises(SignatureError, match="does not match the trusted key"):
        open_bundle(signed_bundle, pubkey=keys[3])


def test_unsigned_bundle_is_refused_when_a_key_is_pinned(mobilenet_bundle: Path, keys) -> None:
    with pytest.raises(SignatureError, match="not signed"):
        open_bundle(mobilenet_bundle, pubkey=keys[1])


def test_tampered_manifest_breaks_the_signature(signed_bundle: Path, keys) -> None:
    mp = signed_bundle / "manifest.json"
    mp.write_text(mp.read_text().replace('"version": 1', '"version": 2'))
    with pytest.raises(SignatureError, match="manifest.sig"):
        open_bundle(signed_bundle, pubkey=keys[1])


def test_tampered_model_fails_its_hash_even_unsigned(signed_bundle: Path) -> None:
    model = signed_bundle / "model.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"model\.tflite sha256 .* differs"):
        open_bundle(signed_bundle)


def test_truncated_model_is_named(signed_bundle: Path) -> None:
    model = signed_bundle / "model.tflite"
    model.write_bytes(model.read_bytes()[:1000])
    with pytest.raises(IntegrityError, match=r"model\.tflite is 1000 bytes.*truncated"):
        open_bundle(signed_bundle)


def test_missing_file_is_named(signed_bundle: Path) -> None:
    (signed_bundle / "labels.txt").unlink()
    with pytest.raises(IntegrityError, match="labels.txt listed in the manifest is missing"):
        open_bundle(signed_bundle)


def test_malformed_manifest_names_the_field(signed_bundle: Path) -> None:
    mp = signed_bundle / "manifest.json"
    m = json.loads(mp.read_text())
    m["version"] = "two"
    mp.write_text(json.dumps(m))
    with pytest.raises(ManifestError, match="version"):
        open_bundle(signed_bundle)
    mp.write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        open_bundle(signed_bundle)
    m["version"] = 1
    m["files"]["../../etc/passwd"] = m["files"]["labels.txt"]
    mp.write_text(json.dumps(m))
    with pytest.raises(ManifestError, match="plain relative path"):
        open_bundle(signed_bundle)


def test_manifest_that_lies_about_the_model_is_refused(tmp_path: Path, signed_bundle: Path) -> None:
    # Rewrite the manifest so that its hashes match but its input shape does not describe the model.
    mp = signed_bundle / "manifest.json"
    m = json.loads(mp.read_text())
    m["inputs"][0]["shape"] = [1, 299, 299, 3]
    mp.write_text(json.dumps(m))
    (signed_bundle / "manifest.sig").unlink()
    with pytest.raises(BundleError, match=r"manifest says input 'input' is uint8\[1, 299, 299, 3\]"):
        Model.load(signed_bundle, backend="litert")


def test_archive_round_trip_and_signing_in_place(tmp_path: Path, mobilenet_tflite: Path,
                                                 imagenet_labels: list[str], keys) -> None:
    arc = make_bundle(mobilenet_tflite, tmp_path / "mb.tar.gz", name="mobilenet_v2", labels=imagenet_labels)
    assert tarfile.is_tarfile(arc)
    with tarfile.open(arc) as tf:
        assert sorted(tf.getnames()) == ["labels.txt", "manifest.json", "model.tflite"]
    with pytest.raises(SignatureError):
        open_bundle(arc, pubkey=keys[1])
    sign_bundle(arc, keys[0])
    b = open_bundle(arc, pubkey=keys[1])
    assert b.manifest.name == "mobilenet_v2" and b.root.is_dir()
    root = b.root
    b.close()
    assert not root.exists(), "the temporary extraction folder must be removed on close"


def test_pack_is_reproducible(tmp_path: Path, mobilenet_bundle: Path) -> None:
    a = pack_bundle(mobilenet_bundle, tmp_path / "a.tar.gz")
    b = pack_bundle(mobilenet_bundle, tmp_path / "b.tar.gz")
    assert sha256_file(a) == sha256_file(b)


def test_signing_a_tampered_bundle_is_refused(signed_bundle: Path, keys) -> None:
    (signed_bundle / "labels.txt").write_text("cat\n")
    with pytest.raises(IntegrityError):
        sign_bundle(signed_bundle, keys[0])


def _archive(path: Path, entries: list[tarfile.TarInfo], payload: bytes = b"x") -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info in entries:
            if info.isfile():
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
            else:
                tf.addfile(info)
    return path


def _entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (_entry("/tmp/evil.txt"), "absolute path"),
        (_entry("../evil.txt"), "escapes the target directory"),
        (_entry("ok/../../evil.txt"), "escapes the target directory"),
        (_entry("link", tarfile.SYMTYPE, "/etc/passwd"), "is a link"),
        (_entry("hard", tarfile.LNKTYPE, "manifest.json"), "is a link"),
        (_entry("dev", tarfile.CHRTYPE), "device, fifo or other special file"),
        (_entry("fifo", tarfile.FIFOTYPE), "device, fifo or other special file"),
    ],
)
def test_hostile_archives_write_nothing(tmp_path: Path, entry: tarfile.TarInfo, message: str) -> None:
    # A harmless entry first: checking every entry before extracting means even it is not written.
    arc = _archive(tmp_path / "evil.tar.gz", [_entry("manifest.json"), entry])
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UnsafeArchiveError, match=message):
        safe_extract(arc, dest)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "evil.txt").exists()
    with pytest.raises(UnsafeArchiveError):
        open_bundle(arc)


def test_corrupt_archive_is_a_clear_error(tmp_path: Path, mobilenet_bundle: Path) -> None:
    arc = pack_bundle(mobilenet_bundle, tmp_path / "mb.tar.gz")
    data = arc.read_bytes()
    arc.write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="corrupt or truncated|not a readable"):
        open_bundle(arc)
    (tmp_path / "garbage.tar.gz").write_bytes(b"\x00" * 100)
    with pytest.raises(BundleError, match="not a readable .tar.gz"):
        open_bundle(tmp_path / "garbage.tar.gz")


def test_a_bare_model_is_not_a_bundle(mobilenet_tflite: Path) -> None:
    with pytest.raises(BundleError, match="edge bundle"):
        open_bundle(mobilenet_tflite)


def test_archive_folder_layout_is_accepted(tmp_path: Path, mobilenet_bundle: Path) -> None:
    # Archives made by hand often hold one top-level folder.
    arc = tmp_path / "folder.tar.gz"
    with tarfile.open(arc, "w:gz") as tf:
        tf.add(mobilenet_bundle, arcname="mobilenet")
    b = open_bundle(arc)
    assert b.manifest.name == "mobilenet_v2"
    shutil.rmtree(b.root.parent, ignore_errors=True)
