"""Reading, verifying, writing, signing and packing bundles.

A bundle is a directory (or the same directory as a ``.tar.gz``) with ``manifest.json``, the
model, ``labels.txt``, any other files listed in the manifest, and optionally ``manifest.sig``.
"""

from __future__ import annotations

import importlib
import io
import json
import logging
import os
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import BundleError, IntegrityError, ManifestError, SignatureError, UnsafeArchiveError, suggest_key
from ._manifest import FileEntry, Invalid, Manifest
from ._signing import sign_bytes, verify_bytes

if TYPE_CHECKING:
    import tarfile

    from ._signing import PrivateKey, PublicKey

__all__ = [
    "Bundle",
    "is_archive",
    "open_bundle",
    "pack_bundle",
    "prescan_tar",
    "safe_extract",
    "sha256_file",
    "sign_bundle",
    "write_bundle",
]

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
# Defaults sized for edge models; a caller with bigger bundles passes its own limit.
MAX_ARCHIVE_BYTES = 2 * 1024**3
MAX_ARCHIVE_MEMBERS = 10_000
#: PAX and GNU long-name/long-link headers hold names and a few attributes; tarfile reads them whole
#: into memory, so one that declares hundreds of MiB must be refused before tarfile sees it
MAX_EXTENDED_HEADER = 64 * 1024
#: JSON nesting a manifest may use (a real one uses 4); deeper input makes json.loads recurse to a crash
MAX_MANIFEST_DEPTH = 32


#: files up to this size are hashed with CPython's own SHA-256 (``_sha256``, 3.12+: ``_sha2``)
#: rather than hashlib's OpenSSL one: loading libcrypto costs 3.6 MiB of resident memory and ~3 ms,
#: and `edge run` on a small model needs it for nothing else. Measured on a 3.5 MB MobileNet: 11 ms
#: against 4 ms (+3 ms import) of CPU for 3.6 MiB less RSS. Bigger files go to OpenSSL (SHA-NI,
#: ARMv8 crypto extensions), where the speed matters more. The digest is the same either way.
_SMALL_HASH_BYTES = 8 * 1024 * 1024


def _sha256_for(size: int) -> Any:
    if size <= _SMALL_HASH_BYTES:
        for module in ("_sha256", "_sha2"):
            try:
                return importlib.import_module(module).sha256()
            except (ImportError, AttributeError):
                continue
    import hashlib

    return hashlib.sha256()


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        h = _sha256_for(os.fstat(f.fileno()).st_size)
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_archive(path: str | Path) -> bool:
    name = str(path).lower()
    return name.endswith((".tar.gz", ".tgz"))


class Bundle:
    """A verified bundle on disk. Obtain one with :func:`open_bundle`."""

    def __init__(
        self,
        root: Path,
        manifest: Manifest,
        manifest_bytes: bytes,
        signature: bytes | None,
        *,
        origin: Path,
        signed_by: str | None = None,
        tmpdir: str | None = None,
    ) -> None:
        self.root = root
        self.manifest = manifest
        self.manifest_bytes = manifest_bytes
        self.signature = signature
        self.origin = origin
        self.signed_by = signed_by
        self._finalizer: weakref.finalize[Any, Any] | None = None
        if tmpdir:
            import shutil  # only for an extracted archive: a bundle directory (the usual run) needs none

            self._finalizer = weakref.finalize(self, shutil.rmtree, tmpdir, True)

    @property
    def model_path(self) -> Path:
        return self.root / self.manifest.model

    def file(self, name: str) -> Path:
        if name not in self.manifest.files:
            raise BundleError(f"{self.origin}: {name!r} is not a file of this bundle")
        return self.root / name

    def labels(self) -> list[str]:
        name = self.manifest.postprocess.labels
        if name is None or name not in self.manifest.files:
            return []
        text = self.file(name).read_text(encoding="utf-8")
        return [line.rstrip("\r") for line in text.split("\n")][: _count_labels(text)]

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()

    def __repr__(self) -> str:
        m = self.manifest
        return f"<Bundle {m.name} v{m.version} {m.format} at {self.origin}>"


def _count_labels(text: str) -> int:
    lines = text.split("\n")
    # A trailing newline is not an extra empty label.
    return len(lines) - 1 if lines and lines[-1] == "" else len(lines)


def open_bundle(
    path: str | Path,
    *,
    pubkey: PublicKey | list[PublicKey] | None = None,
    require_signature: bool = False,
    extract_to: str | Path | None = None,
    verify_hashes: bool = True,
) -> Bundle:
    """Open a bundle directory or archive, check every hash, and the signature when keys are given.

    With ``pubkey`` set, a missing or mismatching signature is an error. ``require_signature``
    without keys is an error too, since there is nothing to check it against.
    """
    p = Path(path)
    if not p.exists():
        raise BundleError(f"{p}: no such bundle")
    tmpdir: str | None = None
    if p.is_dir():
        root = p
    elif is_archive(p):
        import shutil  # here and below: a bundle directory (`edge run`'s usual case) needs neither
        import tempfile

        if extract_to is not None:
            root = Path(extract_to)
            root.mkdir(parents=True, exist_ok=True)
        else:
            tmpdir = tempfile.mkdtemp(prefix="edge-bundle-")
            root = Path(tmpdir)
        try:
            safe_extract(p, root)
        except BaseException:
            if tmpdir:
                shutil.rmtree(tmpdir, ignore_errors=True)
            raise
        root = _archive_root(root)
    elif p.suffix.lower() in (".tflite", ".onnx"):
        raise BundleError(f"{p}: is a bare model, not a bundle; wrap it first with `edge bundle {p} -o OUT`")
    else:
        raise BundleError(f"{p}: not a bundle directory or .tar.gz archive")
    try:
        return _load(root, p, pubkey, require_signature, verify_hashes, tmpdir)
    except BaseException:
        if tmpdir:
            import shutil

            shutil.rmtree(tmpdir, ignore_errors=True)
        raise


def _archive_root(root: Path) -> Path:
    # Archives may hold the files at the top or inside one folder; accept both.
    if (root / MANIFEST).exists():
        return root
    entries = [e for e in root.iterdir()]
    if len(entries) == 1 and entries[0].is_dir() and (entries[0] / MANIFEST).exists():
        return entries[0]
    return root


def _load(
    root: Path,
    origin: Path,
    pubkey: PublicKey | list[PublicKey] | None,
    require_signature: bool,
    verify_hashes: bool,
    tmpdir: str | None,
) -> Bundle:
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise ManifestError(f"{origin}: has no {MANIFEST}")
    if mpath.stat().st_size > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{origin}: {MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes")
    raw = mpath.read_bytes()
    sig_path = root / SIGNATURE
    signature = sig_path.read_bytes() if sig_path.is_file() else None
    signed_by = None
    # The signature covers the raw bytes: check it before parsing, so that with a trusted key nothing
    # an attacker wrote reaches the JSON parser or the manifest model.
    if pubkey is not None or require_signature:
        if pubkey is None:
            raise SignatureError(f"{origin}: a signature is required but no public key was given to check it")
        if signature is None:
            raise SignatureError(f"{origin}: is not signed ({SIGNATURE} missing) but a trusted key was given")
        signed_by = verify_bytes(pubkey, raw, signature, what=f"{origin}/{SIGNATURE}")
    manifest = parse_manifest(raw, where=f"{origin}/{MANIFEST}")
    if verify_hashes:
        verify_files(root, manifest, origin=origin)
    return Bundle(root, manifest, raw, signature, origin=origin, signed_by=signed_by, tmpdir=tmpdir)


def parse_manifest(raw: bytes, *, where: str) -> Manifest:
    depth = _json_depth(raw)
    if depth > MAX_MANIFEST_DEPTH:
        raise ManifestError(f"{where}: JSON nested {depth} levels deep; a manifest uses at most {MAX_MANIFEST_DEPTH}")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ManifestError(f"{where}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: must be a JSON object")
    try:
        return Manifest.from_dict(data)
    except Invalid as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"]) or "(root)"
        hint = suggest_key(Manifest, tuple(str(x) for x in first["loc"])) \
            if first["type"] == "extra_forbidden" else ""
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ManifestError(f"{where}: {loc}: {first['msg']}{hint}{more}") from exc


def _json_depth(raw: bytes) -> int:
    """The deepest nesting of ``[``/``{`` in a JSON text, strings skipped, without parsing it."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def verify_files(root: Path, manifest: Manifest, *, origin: Path) -> None:
    for name, entry in manifest.files.items():
        fp = root / name
        if fp.is_symlink() or not fp.is_file():
            raise IntegrityError(f"{origin}: file {name} listed in the manifest is missing")
        size = fp.stat().st_size
        if size != entry.size:
            raise IntegrityError(
                f"{origin}: {name} is {size} bytes, the manifest says {entry.size} (truncated or replaced)"
            )
        digest = sha256_file(fp)
        if digest != entry.sha256:
            raise IntegrityError(f"{origin}: {name} sha256 {digest[:12]}… differs from the manifest's "
                                 f"{entry.sha256[:12]}… (file was modified)")


def safe_extract(
    archive: str | Path,
    dest: str | Path,
    *,
    max_bytes: int = MAX_ARCHIVE_BYTES,
    max_members: int = MAX_ARCHIVE_MEMBERS,
) -> None:
    """Extract a .tar.gz, refusing anything but plain files and folders inside ``dest``.

    Every entry is checked before anything is written, so a hostile archive writes nothing.
    """
    import shutil
    import tarfile  # here: opening a bundle directory (`edge run`'s usual case) needs no tar

    a, d = Path(archive), Path(dest).resolve()
    prescan_tar(a, max_members=max_members)
    try:
        tf = tarfile.open(a, "r:gz")  # noqa: SIM115 - closed by the `with` below, after the error mapping
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"{a}: not a readable .tar.gz ({exc})") from exc
    with tf:
        try:
            members = _checked_members(tf, a, d, max_bytes, max_members)
            for m in members:
                target = d / m.name
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(m)
                if src is None:
                    raise BundleError(f"{a}: entry {m.name!r} has no data")
                with src, target.open("wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise BundleError(f"{a}: archive is corrupt or truncated ({exc})") from exc


def prescan_tar(archive: str | Path, *, max_members: int = MAX_ARCHIVE_MEMBERS,
                max_extended: int = MAX_EXTENDED_HEADER) -> None:
    """Walk a .tar.gz's raw 512-byte headers and refuse oversized PAX / GNU long-name headers.

    tarfile reads an extended header's whole payload into memory before it yields the member, so a
    few MB of gzip declaring a 700 MiB PAX header cost GiBs before any of our checks ran. Here only the
    header blocks are looked at (the data is streamed past in 1 MiB reads), in constant memory.
    """
    import gzip
    import zlib
    a = Path(archive)
    try:
        with gzip.open(a, "rb") as gz:
            members = 0
            while True:
                block = gz.read(512)
                if len(block) < 512:
                    return  # truncated: tarfile reports it with its own words
                if block == b"\0" * 512:
                    return
                size = _tar_size(block[124:136])
                kind = block[156:157]
                if kind in (b"x", b"g", b"L", b"K") and size > max_extended:
                    what = {b"x": "PAX", b"g": "global PAX", b"L": "GNU long-name", b"K": "GNU long-link"}[kind]
                    raise UnsafeArchiveError(f"{a}: a {what} header declares {size} bytes "
                                             f"(at most {max_extended} are allowed); refused before reading it")
                if kind not in (b"x", b"g", b"L", b"K"):
                    members += 1
                    if members > max_members:
                        raise UnsafeArchiveError(f"{a}: more than {max_members} entries")
                remaining = (size + 511) // 512 * 512
                while remaining:
                    chunk = gz.read(min(remaining, 1 << 20))
                    if not chunk:
                        return
                    remaining -= len(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise BundleError(f"{a}: not a readable .tar.gz ({exc})") from exc


def _tar_size(field: bytes) -> int:
    if field[:1] in (b"\x80", b"\xff"):  # GNU base-256 for sizes over 8 GiB
        return int.from_bytes(field[1:], "big") if field[:1] == b"\x80" else -1
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError as exc:
        raise UnsafeArchiveError(f"malformed tar header size field {field!r}") from exc


def _checked_members(
    tf: tarfile.TarFile, a: Path, d: Path, max_bytes: int, max_members: int
) -> list[tarfile.TarInfo]:
    members: list[tarfile.TarInfo] = []
    total = 0
    for m in tf:
        if len(members) >= max_members:
            raise UnsafeArchiveError(f"{a}: more than {max_members} entries")
        name = m.name
        if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
            raise UnsafeArchiveError(f"{a}: entry {name!r} has an absolute path")
        parts = name.replace("\\", "/").split("/")
        if ".." in parts:
            raise UnsafeArchiveError(f"{a}: entry {name!r} escapes the target directory with '..'")
        if m.issym() or m.islnk():
            raise UnsafeArchiveError(f"{a}: entry {name!r} is a link (to {m.linkname!r}); links are not allowed")
        if not (m.isfile() or m.isdir()):
            raise UnsafeArchiveError(f"{a}: entry {name!r} is a device, fifo or other special file")
        target = (d / name).resolve()
        if target != d and d not in target.parents:
            raise UnsafeArchiveError(f"{a}: entry {name!r} resolves outside the target directory")
        total += m.size
        if total > max_bytes:
            raise UnsafeArchiveError(f"{a}: unpacks to more than {max_bytes} bytes")
        members.append(m)
    return members


def write_bundle(
    out_dir: str | Path,
    *,
    model_file: str | Path,
    manifest_fields: Mapping[str, Any],
    labels: Iterable[str] | None = None,
    extra_files: Mapping[str, str | Path | bytes] | None = None,
    sign_key: PrivateKey | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a bundle directory: copy the model and files, hash them, write (and sign) the manifest.

    ``manifest_fields`` holds every manifest field except ``model`` and ``files``, which are
    computed here. If ``out_dir`` ends in ``.tar.gz`` the archive form is written instead.
    """
    import shutil
    import tempfile
    out = Path(out_dir)
    if is_archive(out):
        with tempfile.TemporaryDirectory(prefix="edge-bundle-") as tmp:
            stage = Path(tmp) / "bundle"
            write_bundle(stage, model_file=model_file, manifest_fields=manifest_fields, labels=labels,
                         extra_files=extra_files, sign_key=sign_key)
            pack_bundle(stage, out, overwrite=overwrite)
        return out
    if out.exists() and not overwrite and any(out.iterdir()):
        raise BundleError(f"{out}: exists and is not empty; choose another -o or remove it")
    out.mkdir(parents=True, exist_ok=True)
    src = Path(model_file)
    model_name = "model" + src.suffix.lower()
    shutil.copyfile(src, out / model_name)
    fields = dict(manifest_fields)
    if labels is not None:
        label_list = list(labels)
        (out / "labels.txt").write_text("".join(f"{lbl}\n" for lbl in label_list), encoding="utf-8")
    for name, content in (extra_files or {}).items():
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            shutil.copyfile(content, target)
    files: dict[str, FileEntry] = {}
    for fp in sorted(out.rglob("*")):
        rel = fp.relative_to(out).as_posix()
        if fp.is_file() and rel not in (MANIFEST, SIGNATURE):
            files[rel] = FileEntry(sha256=sha256_file(fp), size=fp.stat().st_size)
    fields["model"] = model_name
    fields["files"] = files
    if labels is None and "labels.txt" not in files:
        pp = dict(fields.get("postprocess") or {})
        if pp.get("labels", "labels.txt") == "labels.txt":
            pp["labels"] = None
            fields["postprocess"] = pp
    try:
        manifest = Manifest.from_dict(fields)
    except Invalid as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise ManifestError(f"cannot build manifest: {loc}: {first['msg']}") from exc
    raw = manifest.to_json_bytes()
    _write_durably(out / MANIFEST, raw)
    sig = out / SIGNATURE
    if sign_key is not None:
        _write_durably(sig, sign_bytes(sign_key, raw))
    elif sig.exists():
        sig.unlink()
    return out


def sign_bundle(path: str | Path, key: PrivateKey) -> Path:
    """(Re)sign a bundle directory or archive in place with ``key``. The hashes are checked first:
    signing a bundle whose files do not match its manifest would bless a tampered bundle."""
    import tempfile
    p = Path(path)
    if p.is_dir():
        b = open_bundle(p)
        _write_durably(p / SIGNATURE, sign_bytes(key, b.manifest_bytes))
        return p / SIGNATURE
    if is_archive(p):
        with tempfile.TemporaryDirectory(prefix="edge-sign-") as tmp:
            b = open_bundle(p, extract_to=tmp)
            _write_durably(b.root / SIGNATURE, sign_bytes(key, b.manifest_bytes))
            pack_bundle(b.root, p, overwrite=True)
        return p
    raise BundleError(f"{p}: not a bundle directory or .tar.gz archive")


def pack_bundle(bundle_dir: str | Path, archive: str | Path, *, overwrite: bool = False) -> Path:
    """Pack a bundle directory into a .tar.gz with the files at the archive's top level."""
    import gzip
    import tarfile

    src, dst = Path(bundle_dir), Path(archive)
    if dst.exists() and not overwrite:
        raise BundleError(f"{dst}: exists; choose another -o or remove it")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".part")
    # Fixed owner, mtimes and gzip header so that the same bundle packs to the same bytes
    # (the registry's ETag and a device's resumed download rely on that).
    with tmp.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for fp in sorted(src.rglob("*")):
            if not fp.is_file():
                continue
            info = tarfile.TarInfo(fp.relative_to(src).as_posix())
            info.size = fp.stat().st_size
            info.mode = 0o644
            info.mtime = 0
            with fp.open("rb") as f:
                tf.addfile(info, f)
    os.replace(tmp, dst)
    return dst


def _write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def manifest_summary(manifest: Manifest) -> dict[str, Any]:
    """The manifest as plain JSON data (for `edge inspect --json`)."""
    data: dict[str, Any] = json.load(io.BytesIO(manifest.to_json_bytes()))
    return data
