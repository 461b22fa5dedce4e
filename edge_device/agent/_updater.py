"""Signed model updates: learn of a version, download, verify, health-check, switch, watch, roll back.

One thread does all of it, so two updates never race. It wakes up to poll the registry every
``poll_interval_s``, when an MQTT notice arrives (a hint only: the registry is always asked and the
bundle always verified), when the probation of a new model ends either way, and when a reload is
asked for (SIGHUP, after ``edge agent rollback``).

The steps of an update and what a kill at each leaves (see ``_state`` for the pointer order)::

    download    staging/<name>-v<N>.tar.gz.part        resumed by the next attempt
    verify      staging/v<N>.work/ (extract, check)    removed and redone
    install     models/v<N>/ complete, not pointed at  replaced by the next attempt
    health      the new model loaded beside the old    redone
    switch      previous ← current, current ← v<N>     the commit point: old or new, both verified
    probation   K failing frames in a row → rollback   counted again after a restart
"""

from __future__ import annotations

import logging
import random
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edge_runtime import EdgeError, Model, PublicKey

from ._config import AgentConfig
from ._errors import StateError, UpdateError, UpdateRefused
from ._state import Pointer, StateStore, rollback_pointers
from ._verify import ModelOptions, check_rules, health_check, load_model, verify_bundle

__all__ = ["Probation", "RegistryClient", "UpdateResult", "Updater"]

log = logging.getLogger(__name__)

Emit = Callable[..., None]


class RegistryClient(Protocol):
    """What the updater needs of ``edge_device.client.CloudClient``."""

    def check_update(self, current_version: int | None = None, *, timeout: float | None = None) -> Any: ...

    def download(self, url: str, dest: str | Path, *, sha256: str | None = None, max_bytes: int | None = None,
                 timeout: float | None = None) -> Path: ...


@dataclass
class UpdateResult:
    """What one check did: ``none``, ``installed``, ``refused``, ``failed`` or ``unreachable``."""

    outcome: str
    version: int | None = None
    reason: str | None = None
    message: str | None = None


class Probation:
    """Counts the frames of a newly switched model: K failures in a row roll it back, N good frames
    confirm it. Fed from the pipeline thread, so it only counts and raises flags."""

    def __init__(self, version: int, failures: int, frames: int, on_verdict: Callable[[str, str], None]) -> None:
        self.version = version
        self._limit_fail = failures
        self._limit_good = frames
        self._on_verdict = on_verdict
        self.good = 0
        self.failed_in_row = 0
        self.done = False

    def observe(self, version: int, ok: bool) -> None:
        if self.done or version != self.version:
            return
        if ok:
            self.good += 1
            self.failed_in_row = 0
            if self.good >= self._limit_good:
                self.done = True
                self._on_verdict("confirm", f"{self.good} good frames")
        else:
            self.failed_in_row += 1
            if self.failed_in_row >= self._limit_fail:
                self.done = True
                self._on_verdict("rollback", f"{self.failed_in_row} failing frames in a row after the switch")


class Updater:
    """The update thread. ``activate(model, pointer)`` is how it hands a model to the pipeline."""

    def __init__(self, config: AgentConfig, store: StateStore, keys: Sequence[PublicKey], opts: ModelOptions, *,
                 client: RegistryClient | None, emit: Emit, activate: Callable[[Model, Pointer], None],
                 running: Callable[[], tuple[str, int, Pointer | None]],
                 standby: Callable[[int], Model | None] | None = None, rng: random.Random | None = None) -> None:
        self.config = config
        self.cfg = config.updates
        self.store = store
        self.keys = list(keys)
        self.opts = opts
        self.client = client
        self._emit = emit
        self._activate = activate
        self._running = running
        self._standby = standby or (lambda version: None)
        self._rng = rng or random.Random()
        self._cond = threading.Condition()
        self._stop = False
        self._wake_check: str | None = None
        self._verdict: tuple[str, str] | None = None
        self._reload = False
        #: (version, sha256) of a download → (reason, the policy that refused it, or None for a verdict)
        self._refused: dict[tuple[int, str | None], tuple[str, Any]] = {}
        self._failures = 0
        self.probation: Probation | None = None
        self.last_result: UpdateResult | None = None
        self.checks = 0
        self._thread = threading.Thread(target=self._loop, name="updater", daemon=True)

    # -- control (any thread) -----------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def notify(self, trigger: str = "notice") -> None:
        """Check the registry now (an MQTT notice, or by hand)."""
        with self._cond:
            self._wake_check = trigger
            self._cond.notify_all()

    def request_reload(self) -> None:
        """Re-read the ``current`` pointer and switch to it (after ``edge agent rollback``)."""
        with self._cond:
            self._reload = True
            self._cond.notify_all()

    def observe(self, model: Model, ok: bool) -> None:
        """Called for every local prediction (pipeline thread): feeds the probation."""
        p = self.probation
        if p is not None:
            p.observe(model.version, ok)

    def start_probation(self, version: int) -> None:
        self.probation = Probation(version, self.cfg.rollback_after_failures, self.cfg.probation_frames,
                                   self._on_verdict)

    def _on_verdict(self, verdict: str, why: str) -> None:
        with self._cond:
            self._verdict = (verdict, why)
            self._cond.notify_all()

    # -- the thread -----------------------------------------------------------------------------
    def _loop(self) -> None:
        next_poll = time.monotonic() + self.cfg.first_poll_s
        while True:
            with self._cond:
                while not (self._stop or self._wake_check or self._verdict or self._reload) and (
                        self.client is None or time.monotonic() < next_poll):
                    self._cond.wait(None if self.client is None else max(0.0, next_poll - time.monotonic()))
                if self._stop:
                    return
                verdict, self._verdict = self._verdict, None
                reload, self._reload = self._reload, False
                trigger, self._wake_check = self._wake_check, None
            try:
                if verdict is not None:
                    self._handle_verdict(*verdict)
                if reload:
                    self.reload_current()
                if trigger is not None or (self.client is not None and time.monotonic() >= next_poll):
                    result = self.check(trigger or "poll")
                    next_poll = time.monotonic() + self._next_delay(result)
            except EdgeError as exc:
                # A disk or state error must not end the thread: the device keeps serving and the
                # next poll tries again.
                log.error("updater: %s", exc)
                self._emit("update_failed", stage="updater", error=str(exc))
                next_poll = time.monotonic() + self._next_delay(UpdateResult("failed"))
            except Exception as exc:
                # Supervisor loop, so broad on purpose: a bug in one attempt must not end updates for
                # the months the device runs; it is logged with its traceback and retried later.
                log.exception("updater: unexpected error; retrying later")
                self._emit("update_failed", stage="updater", error=f"{type(exc).__name__}: {exc}")
                next_poll = time.monotonic() + self._next_delay(UpdateResult("failed"))

    def _next_delay(self, result: UpdateResult) -> float:
        if result.outcome in ("failed", "unreachable"):
            self._failures += 1
            step = min(self.cfg.poll_interval_s, 5.0 * 2 ** min(self._failures - 1, 16))
            return step / 2 + self._rng.uniform(0, step / 2)
        self._failures = 0
        return self.cfg.poll_interval_s

    # -- checking the registry --------------------------------------------------------------------
    def check(self, trigger: str = "poll") -> UpdateResult:
        """Ask the registry what this device should run; install it if it is new and passes."""
        from edge_device.client import ClientError

        assert self.client is not None
        self.checks += 1
        _, running_version, _ = self._running()
        try:
            info = self.client.check_update(current_version=running_version, timeout=self.config.cloud.timeout_s)
        except ClientError as exc:
            log.warning("updater: registry not reachable: %s", exc)
            return self._result(UpdateResult("unreachable", message=str(exc)))
        if not isinstance(info, dict) or not info.get("update_available"):
            return self._result(UpdateResult("none"))
        version, url, sha = info.get("version"), info.get("url"), info.get("sha256")
        if not isinstance(version, int) or isinstance(version, bool) or not isinstance(url, str):
            log.warning("updater: the registry's answer is malformed: %r", info)
            return self._result(UpdateResult("failed", message="malformed registry answer"))
        sha = sha if isinstance(sha, str) else None
        if version == running_version:
            return self._result(UpdateResult("none", version))
        try:
            self._precheck(info, version)
        except UpdateRefused as exc:
            return self._refuse(exc, version, sha)
        known = self._refused.get((version, sha))
        if known is not None:
            reason, policy = known
            if policy is None or policy == self._policy():
                return self._result(UpdateResult("refused", version, reason))
            # refused by a policy that has changed since: this content gets another chance
            del self._refused[(version, sha)]
        self._emit("update_started", version=version, size=info.get("size"), trigger=trigger)
        try:
            archive = self._download(info, version, url, sha)
            model = self.install(archive, expected_version=version)
        except UpdateRefused as exc:
            return self._refuse(exc, version, sha)
        except UpdateError as exc:
            log.warning("updater: version %d not installed: %s", version, exc)
            self._emit("update_failed", version=version, stage="download", error=str(exc))
            return self._result(UpdateResult("failed", version, message=str(exc)))
        return self._result(UpdateResult("installed", model.version))

    def _result(self, r: UpdateResult) -> UpdateResult:
        self.last_result = r
        return r

    def _expected_name(self) -> str | None:
        name, _, _ = self._running()
        return self.config.model.name or name

    def _precheck(self, info: dict[str, Any], version: int) -> None:
        """The rules that can be applied before downloading anything (the registry's word is not
        trusted: they are applied again to the signed manifest)."""
        want = self._expected_name()
        model = info.get("model")
        if isinstance(model, str) and want is not None and model != want:
            raise UpdateRefused("wrong-model", f"the registry offers model {model!r}, this device runs {want!r}",
                                version=version)
        state = self.store.load()
        if version in state.bad_versions:
            raise UpdateRefused("bad-version", f"version {version} was refused before "
                                f"({state.bad_versions[version]})", version=version)
        if version <= state.highest_accepted:
            raise UpdateRefused("downgrade", f"version {version} is not newer than version "
                                f"{state.highest_accepted}, the highest ever accepted", version=version)
        size = info.get("size")
        if isinstance(size, int) and size > self.cfg.max_bundle_bytes:
            raise UpdateRefused("too-large", f"version {version} is {size} bytes, more than "
                                f"updates.max_bundle_bytes = {self.cfg.max_bundle_bytes}", version=version)

    def _policy(self) -> tuple[Any, ...]:
        """What a policy refusal depends on: the update rules and the model this device runs."""
        return (self.cfg, self._expected_name())

    def _refuse(self, exc: UpdateRefused, version: int, sha: str | None) -> UpdateResult:
        key = (version, sha)
        known = self._refused.get(key)
        if known is None or known[0] != exc.reason:
            # Said once per version and content, not at every poll.
            log.warning("updater: version %d refused (%s%s): %s", version, exc.reason,
                        ", by this device's policy" if exc.policy else "", exc)
            self._emit("update_refused", version=version, reason=exc.reason, error=str(exc), policy=exc.policy)
        self._refused[key] = (exc.reason, self._policy() if exc.policy else None)
        return self._result(UpdateResult("refused", version, exc.reason, str(exc)))

    def _download(self, info: dict[str, Any], version: int, url: str, sha: str | None) -> Path:
        from edge_device.client import ClientError

        assert self.client is not None
        name = self._expected_name() or "model"
        dest = self.store.staging / f"{name}-v{version}.tar.gz"
        self.store.ensure()
        try:
            self.client.download(url, dest, sha256=sha, max_bytes=self.cfg.max_bundle_bytes,
                                 timeout=self.cfg.download_timeout_s)
        except ClientError as exc:
            if "limit" in str(exc):
                raise UpdateRefused("too-large", f"version {version}: {exc}", version=version) from exc
            raise UpdateError(f"download of version {version} failed: {exc}") from exc
        self._emit("update_downloaded", version=version, bytes=dest.stat().st_size)
        return dest

    # -- installing -------------------------------------------------------------------------------
    def install(self, archive: Path, *, expected_version: int | None = None) -> Model:
        """Verify, health-check and switch to the bundle at ``archive``; return the model now serving.

        Used for registry downloads and for ``edge agent install``. Raises :class:`UpdateRefused`
        (the device keeps serving what it served) or :class:`UpdateError`.
        """
        work = self.store.staging / f"v{expected_version or 'manual'}.work"
        shutil.rmtree(work, ignore_errors=True)
        try:
            return self._install(archive, work, expected_version)
        finally:
            shutil.rmtree(work, ignore_errors=True)
            if archive.parent == self.store.staging:
                archive.unlink(missing_ok=True)

    def _install(self, archive: Path, work: Path, expected_version: int | None) -> Model:
        bundle = verify_bundle(archive, self.keys, extract_to=work if archive.is_file() else None)
        m = bundle.manifest
        state = self.store.load()
        check_rules(m, highest=state.highest_accepted, bad=state.bad_versions, expected_name=self._expected_name(),
                    expected_version=expected_version, require_expiry=self.cfg.require_expiry,
                    require_samples=self.cfg.require_samples, grace_s=self.cfg.expiry_grace_s)
        self._emit("update_verified", version=m.version, signed_by=bundle.signed_by)
        if archive.is_file():
            target = self.store.install_dir(bundle.root, m.version)
        else:  # a directory given by hand: copy it, never move the user's files
            tmp = self.store.staging / f"v{m.version}.copy.work"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(bundle.root, tmp)
            target = self.store.install_dir(tmp, m.version)
        bundle = verify_bundle(target, self.keys)  # what will run is what was verified
        try:
            model = health_check(bundle, self.opts, require_samples=self.cfg.require_samples)
        except UpdateRefused as exc:
            if not exc.policy:  # a verdict on this signed content: never again; a policy refusal is not
                self._mark_bad(m.version, f"health check failed: {exc}")
            self.store.remove_model(m.version)
            raise
        self._emit("update_healthy", version=m.version, samples=len(m.samples))
        try:
            old = self._switch(m.version)
        except BaseException:
            model.close()
            raise
        self.start_probation(m.version)
        self._activate(model, Pointer(target.name, m.version))
        self._emit("update_succeeded", version=m.version, previous=old.version if old else None)
        log.info("updater: now serving %s v%d", m.name, m.version)
        return model

    def _switch(self, version: int) -> Pointer | None:
        """The commit: previous ← current, current ← v<N>, then state.json. Rules re-checked under
        the lock, since another process (``edge agent rollback``) may have changed the state."""
        with self.store.locked():
            state = self.store.load()
            if version in state.bad_versions or version <= state.highest_accepted:
                raise UpdateRefused("downgrade", f"version {version} is no longer newer than the highest "
                                    f"accepted ({state.highest_accepted})", version=version)
            old = self.store.read_pointer("current")
            if old is not None:
                self.store.write_pointer("previous", old)
            self.store.write_pointer("current", Pointer(f"v{version}", version))
            state.highest_accepted = version
            state.trial, state.trial_starts = version, 0
            state.running = True
            self.store.save(state)
        return old

    def _mark_bad(self, version: int, reason: str) -> None:
        with self.store.locked():
            state = self.store.load()
            state.bad_versions[version] = reason
            self.store.save(state)

    # -- after the switch -------------------------------------------------------------------------
    def _handle_verdict(self, verdict: str, why: str) -> None:
        p = self.probation
        if p is None:
            return
        if verdict == "confirm":
            with self.store.locked():
                state = self.store.load()
                if state.trial == p.version:
                    state.trial, state.trial_starts = None, 0
                    self.store.save(state)
            self.probation = None
            self._emit("update_confirmed", version=p.version, reason=why)
            return
        self.rollback(f"automatic: {why}")

    def rollback(self, reason: str) -> Model:
        """Back to the previous version: pointers first, then the pipeline; the version left is bad."""
        left, back = rollback_pointers(self.store, reason)
        self.probation = None
        try:
            # The model that served before the switch is still loaded: going back is instant.
            model = self._standby(back.version) or self._load_installed(back)
        except EdgeError as exc:
            self._emit("rollback_failed", version=left.version, to=back.version, error=str(exc))
            raise
        self._activate(model, back)
        self.store.remove_model(left.version)
        log.warning("rolled back from v%d to v%d: %s", left.version, back.version, reason)
        self._emit("rolled_back", version=back.version, **{"from": left.version}, reason=reason)
        return model

    def _load_installed(self, ptr: Pointer) -> Model:
        bundle = verify_bundle(self.store.model_dir(ptr.version), self.keys)
        if bundle.manifest.version != ptr.version:
            raise StateError(f"models/{ptr.dir} holds version {bundle.manifest.version}, not {ptr.version}")
        return load_model(bundle, self.opts)

    def reload_current(self) -> Model | None:
        """Switch to what ``current`` names if that is not what runs (a rollback by hand)."""
        ptr = self.store.read_pointer("current")
        _, running_version, _running_ptr = self._running()
        if ptr is None or ptr.version == running_version:
            return None
        model = self._load_installed(ptr)
        state = self.store.load()
        self.probation = None
        if state.trial == ptr.version:
            self.start_probation(ptr.version)  # installed by hand (`edge agent install`): on probation too
        self._activate(model, ptr)
        reason = state.bad_versions.get(running_version)
        if reason is not None:
            self.store.remove_model(running_version)
            self._emit("rolled_back", version=ptr.version, **{"from": running_version}, reason=reason)
        else:
            self._emit("model_reloaded", version=ptr.version, previous=running_version)
        return model
