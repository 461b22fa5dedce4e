"""Which model the agent starts with: ``current``, else ``previous``, else the configured bundle.

Each candidate is verified (signature against the pinned keys, every hash, the version its pointer
names, not a version known bad) and loaded before it is chosen; each one passed over is reported
as a fallback with the reason. ``edge agent status`` runs the same code read-only, which is how
the kill test checks what a restart would come up with.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime import Bundle, EdgeError, Model, PublicKey, is_archive, load_public_key

from ._config import AgentConfig
from ._errors import StateError
from ._state import AgentState, Pointer, StateStore, rollback_pointers
from ._verify import ModelOptions, load_model, verify_bundle

__all__ = ["Fallback", "Startup", "ensure_adopted", "load_keys", "model_options", "resolve_startup",
           "verify_startup"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fallback:
    """A candidate passed over at start, and why."""

    candidate: str  # current, previous, config, state
    dir: str | None
    error: str

    def as_dict(self) -> dict[str, Any]:
        return {"candidate": self.candidate, "dir": self.dir, "error": self.error}


@dataclass
class Startup:
    model: Model
    bundle: Bundle
    #: which candidate was chosen: current, previous or config
    chosen: str
    pointer: Pointer | None
    state: AgentState
    fallbacks: list[Fallback] = field(default_factory=list)
    #: set when a crash loop of a version on probation rolled it back before it was loaded
    rolled_back: dict[str, Any] | None = None
    adopted: bool = False

    def report(self) -> dict[str, Any]:
        m = self.bundle.manifest
        return {"chosen": self.chosen, "dir": str(self.bundle.root), "name": m.name, "version": m.version,
                "signed_by": self.bundle.signed_by, "backend": self.model.backend_name,
                "fallbacks": [f.as_dict() for f in self.fallbacks], "rolled_back": self.rolled_back,
                "adopted": self.adopted}


def load_keys(config: AgentConfig) -> list[PublicKey]:
    return [load_public_key(p) for p in config.model.trusted_keys]


def model_options(config: AgentConfig) -> ModelOptions:
    m = config.model
    return ModelOptions(backend=m.backend, threads=m.threads, profile=m.profile, top_k=m.top_k)


def _open_installed(store: StateStore, ptr: Pointer, keys: Sequence[PublicKey], state: AgentState,
                    expected_name: str | None) -> Bundle:
    d = store.model_dir(ptr.version)
    if not d.is_dir():
        raise StateError(f"models/{ptr.dir} is missing")
    bundle = verify_bundle(d, keys)
    m = bundle.manifest
    if m.version != ptr.version:
        raise StateError(f"models/{ptr.dir} holds version {m.version}, not {ptr.version}")
    if expected_name is not None and m.name != expected_name:
        raise StateError(f"models/{ptr.dir} holds model {m.name!r}, this device runs {expected_name!r}")
    if ptr.version in state.bad_versions:
        raise StateError(f"version {ptr.version} is marked bad ({state.bad_versions[ptr.version]})")
    return bundle


def _adopt(store: StateStore, config_bundle: Bundle, keys: Sequence[PublicKey]) -> Bundle:
    """Put the configured bundle into models/v<N> and point ``current`` at it (first start).

    An archive was already unpacked into staging by its verification: that directory is moved in.
    A bundle directory is copied (the user's files are never moved)."""
    v = config_bundle.manifest.version
    root = Path(config_bundle.root)
    work: Path | None = None
    if store.staging not in root.parents:
        work = store.staging / f"adopt-v{v}.work"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(root, work)
        root = work
        verify_bundle(root, keys)  # the copy, not only the original, must be whole
    target = store.install_dir(root, v)
    if work is None:
        shutil.rmtree(store.staging / "config-bundle.work", ignore_errors=True)
    with store.locked():
        store.write_pointer("current", Pointer(target.name, v))
    return verify_bundle(target, keys)


def ensure_adopted(config: AgentConfig, *, keys: Sequence[PublicKey] | None = None,
                   store: StateStore | None = None) -> Pointer | None:
    """Adopt the configured bundle if nothing is installed yet (what a first start does), so that
    a bundle installed by hand has a version to roll back to. Returns the ``current`` pointer."""
    store = store or StateStore(config.state_dir)
    keys = load_keys(config) if keys is None else keys
    store.ensure()
    with store.locked():
        cur, prev = store.read_pointer("current"), store.read_pointer("previous")
    if cur is not None or prev is not None:
        return cur
    src = config.model.bundle
    work = store.staging / "config-bundle.work" if is_archive(src) else None
    if work is not None:
        shutil.rmtree(work, ignore_errors=True)
    adopted = _adopt(store, verify_bundle(src, keys, extract_to=work), keys)
    state = store.load()
    state.highest_accepted = max(state.highest_accepted, adopted.manifest.version)
    state.model_name = state.model_name or adopted.manifest.name
    store.save(state)
    return store.read_pointer("current")


def resolve_startup(config: AgentConfig, *, keys: Sequence[PublicKey] | None = None,
                    store: StateStore | None = None, readonly: bool = False) -> Startup:
    """Choose, verify and load the model to start with. ``readonly`` changes nothing on disk."""
    store = store or StateStore(config.state_dir)
    keys = load_keys(config) if keys is None else keys
    opts = model_options(config)
    fallbacks: list[Fallback] = []
    if not readonly:
        store.ensure()
    try:
        state = store.load()
    except StateError as exc:
        # Never expected (state.json is replaced atomically), but a device must still start; the
        # highest version is rebuilt from the pointers below.
        log.error("%s; starting from the pointers alone", exc)
        fallbacks.append(Fallback("state", "state.json", str(exc)))
        state = AgentState()
    expected_name = config.model.name or state.model_name
    rolled_back: dict[str, Any] | None = None

    pointers: dict[str, Pointer | None] = {}
    for name in ("current", "previous"):
        try:
            pointers[name] = store.read_pointer(name)
        except StateError as exc:
            fallbacks.append(Fallback(name, None, str(exc)))
            pointers[name] = None
    cur = pointers["current"]

    if not readonly and state.running and cur is not None and state.trial == cur.version:
        # The last run of a version on probation did not stop cleanly: count it; a crash loop that a
        # health check cannot see (a segfault in the backend) must still end in a rollback.
        state.trial_starts += 1
        if state.trial_starts > config.updates.max_trial_starts and pointers["previous"] is not None:
            reason = f"did not run cleanly through {state.trial_starts - 1} starts on probation"
            try:
                left, back = rollback_pointers(store, reason)
                rolled_back = {"from": left.version, "to": back.version, "reason": reason}
                log.warning("version %d rolled back to %d at start: %s", left.version, back.version, reason)
                state = store.load()
                pointers = {"current": back, "previous": None}
            except StateError as exc:
                log.error("rollback at start failed: %s", exc)

    chosen: tuple[str, Bundle, Pointer | None] | None = None
    model: Model | None = None
    for name in ("current", "previous"):
        ptr = pointers[name]
        if ptr is None:
            continue
        try:
            bundle = _open_installed(store, ptr, keys, state, expected_name)
            model = load_model(bundle, opts)
        except EdgeError as exc:  # StateError, UpdateRefused, a backend that cannot load it
            log.error("start: %s model %s is not usable: %s", name, ptr.dir, exc)
            fallbacks.append(Fallback(name, ptr.dir, str(exc)))
            continue
        chosen = (name, bundle, ptr)
        break

    adopted = False
    if chosen is None:
        src = config.model.bundle
        work = store.staging / "config-bundle.work" if is_archive(src) and not readonly else None
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
        # A readonly check of an archive extracts into a temporary directory (open_bundle's default).
        b = verify_bundle(src, keys, extract_to=work)
        if expected_name is not None and b.manifest.name != expected_name:
            raise StateError(f"model.bundle {src} is model {b.manifest.name!r}, the state directory holds "
                             f"{expected_name!r}; fix model.bundle or model.name")
        first_boot = cur is None and pointers["previous"] is None and not any(
            f.candidate in ("current", "previous") for f in fallbacks)
        if first_boot and not readonly:
            b = _adopt(store, b, keys)
            adopted = True
            chosen = ("current", b, Pointer(b.root.name, b.manifest.version))
        else:
            chosen = ("config", b, None)
        model = load_model(b, opts)
    assert model is not None
    name, bundle, ptr = chosen
    if not readonly:
        # What a pointer names was accepted, whatever state.json says (a kill between the pointer
        # switch and the state.json write must not reopen the door to a downgrade).
        for p in (ptr, pointers.get("previous")):
            if p is not None:
                state.highest_accepted = max(state.highest_accepted, p.version)
        state.model_name = state.model_name or bundle.manifest.name
        state.running = True
        if state.trial is not None and (ptr is None or ptr.version != state.trial):
            state.trial, state.trial_starts = None, 0
        store.save(state)
    return Startup(model, bundle, name, ptr, state, fallbacks, rolled_back, adopted)


def verify_startup(config: AgentConfig) -> dict[str, Any]:
    """What a start would come up with, without changing anything: verify, load, report, close."""
    st = resolve_startup(config, readonly=True)
    try:
        return st.report()
    finally:
        st.model.close()
