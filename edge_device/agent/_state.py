"""The agent's state directory, written so that a kill at any instant leaves a usable device.

Layout (default ``/var/lib/edge``)::

    models/v<N>/     verified, extracted bundles; a directory appears here only complete (rename)
    staging/         downloads (``*.part`` resumes) and extraction work directories
    current          pointer: JSON naming the active ``models/`` directory
    previous         pointer: the one before it (what a rollback goes back to)
    state.json       highest version ever accepted, versions refused as bad, the trial in progress
    agent.lock       held by the running agent (one agent per state directory)
    state.lock       held for the few milliseconds a pointer or state.json changes

Every file is replaced atomically: write a temporary file, fsync it, rename it over the old one,
fsync the directory. The order of the steps of a switch is what makes a kill harmless:

1. the new bundle is extracted and verified in ``staging/``, then renamed into ``models/v<N>``
   (complete, verified, not yet used);
2. ``previous`` is set to the old ``current`` (a kill here: both name the old version);
3. ``current`` is set to ``v<N>`` (the commit point);
4. ``state.json`` records ``v<N>`` as the highest accepted (a kill before this is repaired at the
   next start: the highest accepted is never below what a pointer names).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._errors import AgentRunningError, StateError

__all__ = ["AgentState", "Pointer", "StateStore", "atomic_write", "fsync_dir", "rollback_pointers"]

log = logging.getLogger(__name__)

STATE_SCHEMA = 1
_DIR_RE = re.compile(r"^v([1-9][0-9]{0,9})$")


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (a bundle: a handful of files)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: after a crash it holds either the old or the new bytes."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StateError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    fsync_dir(path.parent)


@dataclass(frozen=True)
class Pointer:
    """What ``current`` or ``previous`` names: a directory of ``models/`` and its version."""

    dir: str
    version: int

    def to_bytes(self) -> bytes:
        return (json.dumps({"dir": self.dir, "version": self.version}) + "\n").encode()


@dataclass
class AgentState:
    """The content of ``state.json``."""

    highest_accepted: int = 0
    #: version -> why it is never to be accepted again (failed health check, rolled back)
    bad_versions: dict[int, str] = field(default_factory=dict)
    #: the version on probation since its switch (None once confirmed)
    trial: int | None = None
    #: unclean starts of the trial version (a crash loop rolls it back)
    trial_starts: int = 0
    #: set while an agent runs, cleared at a clean stop: a start that finds it set follows a crash
    running: bool = False
    model_name: str | None = None

    def to_bytes(self) -> bytes:
        return (json.dumps({
            "schema": STATE_SCHEMA, "model_name": self.model_name, "highest_accepted": self.highest_accepted,
            "bad_versions": {str(k): v for k, v in sorted(self.bad_versions.items())},
            "trial": self.trial, "trial_starts": self.trial_starts, "running": self.running,
        }, indent=2) + "\n").encode()

    @classmethod
    def from_bytes(cls, raw: bytes, where: str) -> AgentState:
        try:
            d = json.loads(raw)
            if not isinstance(d, dict):
                raise ValueError("not a JSON object")
            bad = {int(k): str(v) for k, v in (d.get("bad_versions") or {}).items()}
            trial = d.get("trial")
            return cls(highest_accepted=int(d.get("highest_accepted") or 0), bad_versions=bad,
                       trial=int(trial) if trial is not None else None, trial_starts=int(d.get("trial_starts") or 0),
                       running=bool(d.get("running")), model_name=d.get("model_name"))
        except (ValueError, TypeError, AttributeError) as exc:
            raise StateError(f"{where}: is corrupt ({exc})") from exc


class StateStore:
    """Reads and atomically writes the state directory. Thread-safe; across processes, mutations
    hold ``state.lock``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.models = self.root / "models"
        self.staging = self.root / "staging"
        self._lock = threading.RLock()
        self._agent_lock_fd: int | None = None

    # -- layout ---------------------------------------------------------------------------------
    def ensure(self) -> None:
        try:
            for d in (self.root, self.models, self.staging):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"state directory {self.root}: cannot create ({exc.strerror}); "
                             "set state_dir to a writable folder") from exc

    def model_dir(self, version: int) -> Path:
        return self.models / f"v{version}"

    @staticmethod
    def dir_version(name: str) -> int | None:
        m = _DIR_RE.match(name)
        return int(m.group(1)) if m else None

    # -- locks ----------------------------------------------------------------------------------
    def acquire_agent_lock(self) -> None:
        """One agent per state directory; the kernel releases the lock when the process dies."""
        self.ensure()
        path = self.root / "agent.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise AgentRunningError(f"{self.root}: another agent (pid {other}) is running on this state "
                                        "directory") from exc
            raise StateError(f"{path}: cannot lock ({exc.strerror})") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._agent_lock_fd = fd

    def release_agent_lock(self) -> None:
        if self._agent_lock_fd is not None:
            os.close(self._agent_lock_fd)
            self._agent_lock_fd = None

    def running_agent_pid(self) -> int | None:
        """The pid of the agent holding this state directory, or None when no agent runs."""
        path = self.root / "agent.lock"
        if not path.exists():
            return None
        fd = os.open(path, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                text = os.pread(fd, 32, 0).decode(errors="replace").strip()
                return int(text) if text.isdigit() else None
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise changes of pointers and state.json between threads and processes."""
        self.ensure()
        with self._lock:
            # Read-only is enough for flock, and works whoever created the file (root running
            # `edge agent rollback` beside the agent's own user).
            fd = os.open(self.root / "state.lock", os.O_RDONLY | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing releases the flock

    # -- pointers -------------------------------------------------------------------------------
    def read_pointer(self, name: str) -> Pointer | None:
        """``current`` or ``previous``; None when absent. A corrupt pointer raises StateError."""
        path = self.root / name
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"{path}: cannot read ({exc.strerror})") from exc
        try:
            d = json.loads(raw)
            dir_name, version = str(d["dir"]), int(d["version"])
        except (ValueError, TypeError, KeyError) as exc:
            raise StateError(f"{path}: is corrupt ({exc.__class__.__name__})") from exc
        if self.dir_version(dir_name) != version:
            raise StateError(f"{path}: names {dir_name!r}, which is not the directory of version {version}")
        return Pointer(dir_name, version)

    def write_pointer(self, name: str, pointer: Pointer | None) -> None:
        path = self.root / name
        if pointer is None:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                raise StateError(f"{path}: cannot remove ({exc.strerror})") from exc
            fsync_dir(self.root)
            return
        atomic_write(path, pointer.to_bytes())

    # -- state.json -----------------------------------------------------------------------------
    def load(self) -> AgentState:
        path = self.root / "state.json"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return AgentState()
        except OSError as exc:
            raise StateError(f"{path}: cannot read ({exc.strerror})") from exc
        return AgentState.from_bytes(raw, str(path))

    def save(self, state: AgentState) -> None:
        atomic_write(self.root / "state.json", state.to_bytes())

    # -- models ---------------------------------------------------------------------------------
    def install_dir(self, src: Path, version: int) -> Path:
        """Rename an extracted, verified bundle directory into ``models/v<N>``.

        A leftover ``models/v<N>`` (an install that never got switched to) is replaced; the directory
        a pointer names is never touched.
        """
        target = self.model_dir(version)
        with self.locked():
            names = {p.dir for p in (self._safe_pointer("current"), self._safe_pointer("previous")) if p}
            if target.name in names:
                raise StateError(f"{target}: is in use (a pointer names it); not replacing it")
            if target.exists():
                self._remove_tree(target)
            # The bundle's files must be on disk before a pointer can name them: after a power cut
            # (not a process kill, where the page cache survives) an unsynced model file comes back
            # empty, fails its hash, and the device falls back to an older version.
            fsync_tree(src)
            try:
                os.replace(src, target)
            except OSError as exc:
                raise StateError(f"cannot move {src} to {target} ({exc.strerror})") from exc
            fsync_dir(self.models)
        return target

    def _safe_pointer(self, name: str) -> Pointer | None:
        try:
            return self.read_pointer(name)
        except StateError:
            return None

    def _remove_tree(self, path: Path) -> None:
        # Rename first, so that a kill mid-delete never leaves a half-deleted models/v<N>.
        trash = self.staging / f".trash-{path.name}-{os.getpid()}-{threading.get_ident()}"
        try:
            os.replace(path, trash)
            fsync_dir(path.parent)
        except OSError as exc:
            raise StateError(f"{path}: cannot remove ({exc.strerror})") from exc
        shutil.rmtree(trash, ignore_errors=True)

    def remove_model(self, version: int) -> None:
        """Delete ``models/v<N>`` unless a pointer names it."""
        with self.locked():
            names = {p.dir for p in (self._safe_pointer("current"), self._safe_pointer("previous")) if p}
            target = self.model_dir(version)
            if target.name not in names and target.exists():
                self._remove_tree(target)

    def collect_garbage(self) -> list[str]:
        """Remove model directories no pointer names, and stale work directories in staging.

        Downloads (``*.tar.gz.part``) stay: the next attempt resumes them.
        """
        removed: list[str] = []
        with self.locked():
            try:
                names = {p.dir for p in (self.read_pointer("current"), self.read_pointer("previous")) if p}
            except StateError as exc:
                # Which directory a corrupt pointer meant is unknown: keep every model directory.
                log.warning("not removing old models: %s", exc)
                names = None
            for d in sorted(self.models.iterdir()) if self.models.exists() and names is not None else []:
                if names is not None and d.name not in names:
                    self._remove_tree(d) if d.is_dir() else d.unlink()
                    removed.append(f"models/{d.name}")
        for d in sorted(self.staging.iterdir()) if self.staging.exists() else []:
            if d.is_dir() and (d.name.endswith(".work") or d.name.startswith(".trash-")):
                shutil.rmtree(d, ignore_errors=True)
                removed.append(f"staging/{d.name}")
        return removed

    def describe(self) -> dict[str, Any]:
        """Pointers, state and installed versions, for ``edge agent status``."""
        out: dict[str, Any] = {"state_dir": str(self.root)}
        for name in ("current", "previous"):
            try:
                p = self.read_pointer(name)
                out[name] = {"dir": p.dir, "version": p.version} if p else None
            except StateError as exc:
                out[name] = {"error": str(exc)}
        try:
            st = self.load()
            out["highest_accepted"] = st.highest_accepted
            out["bad_versions"] = {str(k): v for k, v in st.bad_versions.items()}
            out["trial"] = st.trial
        except StateError as exc:
            out["state_error"] = str(exc)
        out["installed"] = sorted(d.name for d in self.models.iterdir()) if self.models.exists() else []
        out["agent_pid"] = self.running_agent_pid()
        return out


def rollback_pointers(store: StateStore, reason: str) -> tuple[Pointer, Pointer]:
    """Point ``current`` back at ``previous`` and mark the version left as bad (never accepted again).

    Order: ``current`` first (the commit point), then ``previous`` cleared, then state.json. A kill
    between the steps leaves ``current`` on a complete, verified directory either way.
    """
    with store.locked():
        cur = store.read_pointer("current")
        prev = store.read_pointer("previous")
        if cur is None or prev is None:
            raise StateError(f"{store.root}: nothing to roll back to (no previous version recorded)")
        if not store.model_dir(prev.version).is_dir():
            raise StateError(f"{store.root}: the previous version's directory models/{prev.dir} is gone")
        store.write_pointer("current", prev)
        store.write_pointer("previous", None)
        try:
            state = store.load()
        except StateError:
            state = AgentState()
        state.bad_versions[cur.version] = reason
        state.highest_accepted = max(state.highest_accepted, cur.version)
        if state.trial == cur.version:
            state.trial, state.trial_starts = None, 0
        store.save(state)
    return cur, prev
