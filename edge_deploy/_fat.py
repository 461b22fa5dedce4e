"""Read and write files in a FAT partition inside an image file, with GNU mtools.

No loop device, no mount, no root: mtools reads the file system straight from the image at the
partition's byte offset (``-i IMAGE@@OFFSET``). Each call is one short mtools process; a prepared
image needs a few dozen of them.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path, PurePosixPath

from ._errors import ImageError, ToolError

__all__ = ["FatVolume"]

log = logging.getLogger(__name__)

_INSTALL_HINT = "install mtools (Debian/Ubuntu: apt-get install mtools; macOS: brew install mtools)"


class FatVolume:
    """The FAT file system of one partition of ``image``, starting ``offset`` bytes into the file.

    Paths are absolute POSIX paths inside the volume (``/edge/agent.toml``).
    """

    def __init__(self, image: Path, offset: int) -> None:
        self.image = image
        self.offset = offset
        self._drive = f"{image}@@{offset}"
        missing = [tool for tool in ("mcopy", "mdir", "mmd", "mdel", "mdeltree") if shutil.which(tool) is None]
        if missing:
            raise ToolError(f"{', '.join(missing)} not found: {_INSTALL_HINT}")
        # Reading the root directory validates the boot sector before anything is written.
        self._run(["mdir", "-b", "::/"], what="read the boot partition")

    # -- mtools plumbing ---------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        # Images have no real drive geometry; without this mtools refuses some valid file systems.
        env["MTOOLS_SKIP_CHECK"] = "1"
        # A user's ~/.mtoolsrc could remap drives or change name handling; ignore it.
        env["MTOOLSRC"] = os.devnull
        return env

    def _run(self, args: list[str], *, what: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        cmd = [args[0], "-i", self._drive, *args[1:]]
        log.debug("mtools: %s", " ".join(cmd))
        try:
            proc = subprocess.run(cmd, capture_output=True, env=self._env(), stdin=subprocess.DEVNULL, check=False)
        except OSError as exc:
            raise ToolError(f"cannot run {args[0]}: {exc.strerror or exc}; {_INSTALL_HINT}") from exc
        if check and proc.returncode != 0:
            detail = proc.stderr.decode(errors="replace").strip().splitlines()
            reason = detail[-1] if detail else f"exit code {proc.returncode}"
            raise ImageError(f"{self.image}: cannot {what}: {reason}")
        return proc

    @staticmethod
    def _norm(path: str) -> str:
        p = PurePosixPath("/") / path
        if ".." in p.parts:
            raise ValueError(f"path {path!r} leaves the volume")
        return "::" + str(p)

    # -- queries -----------------------------------------------------------------------------------

    def exists(self, path: str) -> bool:
        return self._run(["mdir", "-b", self._norm(path)], what=f"list {path}", check=False).returncode == 0

    def is_dir(self, path: str) -> bool:
        # `mdir -b DIR` lists the entries with the directory prefix; for a file it prints the file itself.
        proc = self._run(["mdir", "-b", "-a", self._norm(path)], what=f"list {path}", check=False)
        if proc.returncode != 0:
            return False
        lines = proc.stdout.decode(errors="replace").splitlines()
        target = self._norm(path).rstrip("/")
        return not (len(lines) == 1 and lines[0].rstrip("/") == target and not lines[0].endswith("/"))

    def listdir(self, path: str = "/") -> list[str]:
        """Names in a directory (files and folders, hidden ones too), sorted."""
        proc = self._run(["mdir", "-b", "-a", self._norm(path)], what=f"list {path}")
        prefix = self._norm(path).rstrip("/") + "/"
        names = []
        for line in proc.stdout.decode(errors="replace").splitlines():
            if line.startswith(prefix):
                name = line[len(prefix):].rstrip("/")
                if name and name not in (".", ".."):
                    names.append(name)
        return sorted(names)

    def walk_files(self, path: str = "/") -> list[str]:
        """Every file below ``path``, as absolute paths, sorted."""
        proc = self._run(["mdir", "-b", "-/", "-a", self._norm(path)], what=f"list {path}")
        out = []
        for line in proc.stdout.decode(errors="replace").splitlines():
            if line.startswith("::") and not line.endswith("/"):
                out.append(line[2:])
        return sorted(out)

    def read(self, path: str) -> bytes:
        return self._run(["mcopy", "-n", self._norm(path), "-"], what=f"read {path}").stdout

    # -- changes -----------------------------------------------------------------------------------

    def makedirs(self, path: str) -> None:
        parts = PurePosixPath("/", path).parts[1:]
        current = ""
        for part in parts:
            current += "/" + part
            if not self.exists(current):
                self._run(["mmd", self._norm(current)], what=f"create folder {current}")

    def write(self, path: str, data: bytes) -> None:
        """Create or replace the file ``path`` with ``data`` (parent folders are created)."""
        parent = str(PurePosixPath(path).parent)
        if parent != "/":
            self.makedirs(parent)
        with tempfile.TemporaryDirectory(prefix="edge-fat-") as tmp:
            src = Path(tmp) / "data"
            src.write_bytes(data)
            self.copy_in(src, path)

    def copy_in(self, src: Path, path: str) -> None:
        """Copy the host file ``src`` to ``path`` in the volume, replacing what was there."""
        parent = str(PurePosixPath(path).parent)
        if parent != "/":
            self.makedirs(parent)
        # -o: overwrite without asking; -D o: the same for long-name clashes. Binary copy (no -t).
        self._run(["mcopy", "-o", "-D", "o", str(src), self._norm(path)], what=f"write {path}")

    def remove(self, path: str) -> None:
        """Delete a file or a folder tree; nothing happens if it does not exist."""
        if not self.exists(path):
            return
        tool = "mdeltree" if self.is_dir(path) else "mdel"
        self._run([tool, self._norm(path)], what=f"delete {path}")
