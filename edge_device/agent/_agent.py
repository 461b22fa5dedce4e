"""The device agent: pipeline, hybrid router, telemetry, updates, watchdog, local endpoint.

Threads::

    main        the pipeline (source → preprocess → router → sinks); returns on stop or end of source
    updater     polls the registry, installs, watches probation, rolls back
    cloud-*     cloud calls of the router (each bounded by its deadline)
    telemetry   outbox committer and MQTT publisher (edge_device.telemetry)
    commands    paho's thread for update notices and Home Assistant discovery
    sd-watchdog WATCHDOG=1 while frames come out
    local-http  /health and /latest
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from edge_runtime import EdgeError, Model, Pipeline, Record, Sink, open_sink
from edge_runtime.sources import Frame, Source, open_source

from ._commands import CommandClient, UpdateNotice, discovery_messages
from ._config import AgentConfig
from ._errors import StateError, UpdateRefused
from ._http import LocalHTTP
from ._router import CloudClassifier, Router
from ._sdnotify import SdNotifier, Watchdog
from ._startup import Startup, load_keys, model_options, resolve_startup
from ._state import Pointer, StateStore
from ._updater import Updater
from ._verify import parse_expiry

__all__ = ["Agent", "RepeatSource"]

log = logging.getLogger(__name__)




class RepeatSource(Source):
    """Plays a file source again and again (``source.repeat``), frame indexes counting on."""

    def __init__(self, make: Callable[[], Source]) -> None:
        self._make = make
        self._inner = make()
        self.live = self._inner.live
        self.name = self._inner.name
        self._closed = False

    def __iter__(self) -> Iterator[Frame]:
        i = 0
        while not self._closed:
            n = 0
            for frame in self._inner:
                frame.index = i
                i += 1
                n += 1
                yield frame
            if n == 0:
                return  # an empty source would spin forever
            self._inner.close()
            self._inner = self._make()

    def close(self) -> None:
        self._closed = True
        self._inner.close()


class _Forward:
    """Gives the pipeline a sink whose close() does nothing: the agent closes telemetry itself,
    after its last event."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink

    def write(self, record: Record) -> None:
        self._sink.write(record)

    def close(self) -> None:
        pass


class Agent:
    """Run with :meth:`run` (blocks until :meth:`stop`, SIGTERM in the CLI, or the source's end)."""

    def __init__(self, config: AgentConfig, *, source: Source | None = None, extra_sinks: Sequence[Sink] = (),
                 notifier: SdNotifier | None = None) -> None:
        self.config = config
        self.store = StateStore(config.state_dir)
        self.keys = load_keys(config)
        self.opts = model_options(config)
        self.notifier = notifier or SdNotifier()
        self._source_override = source
        self._extra_sinks = list(extra_sinks)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.started_at = time.time()
        self.phase = "starting"
        self.frames = 0
        self.errors = 0
        self._last_progress = time.monotonic()
        self.latest: Record | None = None
        self.events: list[dict[str, Any]] = []
        self.telemetry: Any = None
        self.pipeline: Pipeline | None = None
        self.router: Router | None = None
        self.updater: Updater | None = None
        self.commands: CommandClient | None = None
        self.http: LocalHTTP | None = None
        self.watchdog: Watchdog | None = None
        self.source: Source | None = None
        self._sinks: list[Sink] = []
        self.model: Model | None = None
        self.pointer: Pointer | None = None
        self.chosen = ""
        self._standby: Model | None = None  # the model before the last switch: instant rollback
        self._retired: list[Model] = []  # replaced models, closed once the pipeline stopped using them
        self._status_at = 0.0
        self.exit_code = 0

    # -- events ----------------------------------------------------------------------------------
    def event(self, name: str, **fields: Any) -> None:
        """An event goes to the log, the local /health endpoint and ``edge/D/events``."""
        rec = {"event": name, "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **fields}
        log.info("event %s %s", name, {k: v for k, v in fields.items()})
        with self._lock:
            self.events.append(rec)
            del self.events[:-50]
        if self.telemetry is not None:
            try:
                self.telemetry.event(name, **fields)
            except EdgeError as exc:
                log.error("event %s not queued: %s", name, exc)

    # -- starting --------------------------------------------------------------------------------
    def start(self) -> None:
        """Everything but the pipeline loop. Raises AgentError (and friends) when it cannot start."""
        cfg = self.config
        self.notifier.status("starting")
        self.watchdog = Watchdog(self.notifier, self._progressing)
        self.watchdog.start()
        self.store.acquire_agent_lock()
        try:
            self._start()
        except BaseException:
            self._close_parts()
            self.store.release_agent_lock()
            raise
        self.phase = "running"
        self._last_progress = time.monotonic()
        assert self.model is not None
        self.notifier.ready(self._status_text())
        self.event("agent_started", version=self.model.version, model=self.model.name, chosen=self.chosen,
                   mode=cfg.router.mode)

    def _start(self) -> None:
        cfg = self.config
        if cfg.telemetry.active:
            self.telemetry = self._open_telemetry()
        self.store.ensure()
        removed = self.store.collect_garbage()  # installs a kill interrupted, stale work directories
        if removed:
            log.info("removed leftovers: %s", ", ".join(removed))
        startup = resolve_startup(cfg, keys=self.keys, store=self.store)
        self._adopt_startup(startup)
        assert self.model is not None
        token = cfg.cloud_token()
        cloud = None
        if cfg.router.mode != "offline" and cfg.cloud.url is not None:
            cloud = CloudClassifier(cfg.cloud.url, token, cfg.router.cloud_model or self.model.name, cfg.router.top_k)
        self.router = Router(cfg.router, cloud, on_local=self._on_local)
        self.source = self._source_override or self._open_source()
        sinks: list[Sink] = [open_sink(o) for o in cfg.outputs]
        self._sinks = sinks
        all_sinks: list[Sink] = ([_Forward(self.telemetry)] if self.telemetry is not None else []) + sinks + \
            self._extra_sinks
        self.pipeline = Pipeline(self.model, self.source, all_sinks, predictor=self.router,
                                 on_record=self._on_record, workers=cfg.source.workers, limit=cfg.source.limit)
        client = None
        if cfg.updates_active and cfg.cloud.url is not None:
            from edge_device.client import CloudClient

            client = CloudClient(cfg.cloud.url, token, timeout=cfg.cloud.timeout_s)
        self.updater = Updater(cfg, self.store, self.keys, self.opts, client=client, emit=self.event,
                               activate=self._activate, running=self._running, standby=self._standby_model)
        if startup.state.trial is not None and self.pointer is not None and self.pointer.version == startup.state.trial:
            self.updater.start_probation(startup.state.trial)  # a restart does not end a probation
        if self.telemetry is not None and (cfg.telemetry.commands or cfg.home_assistant.enabled):
            self.commands = self._open_commands()
        if cfg.http.enabled:
            self.http = LocalHTTP(cfg.http.host, cfg.http.port, health=self.health, latest=lambda: self.latest)
            self.http.start()
        # Without a registry the thread still runs: probation verdicts and reloads (SIGHUP) are its job.
        self.updater.start()

    def _adopt_startup(self, st: Startup) -> None:
        self.model = st.model
        self.pointer = st.pointer
        self.chosen = st.chosen
        if st.adopted:
            self.event("model_installed", version=st.model.version, source=str(self.config.model.bundle))
        for fb in st.fallbacks:
            self.event("model_fallback", **fb.as_dict())
        expires = st.bundle.manifest.expires
        if expires is not None:
            try:
                expired = parse_expiry(expires) < datetime.now(UTC)
            except UpdateRefused:
                expired = False
            if expired:
                # An expired bundle is not accepted as an update, but the model already running keeps
                # serving: a device that stops answering is worse than one answering with an old model.
                log.warning("the running model expired at %s; it keeps serving until an update arrives", expires)
                self.event("model_expired", version=st.model.version, expires=expires)
        if st.rolled_back:
            self.event("rolled_back", version=st.rolled_back["to"], **{"from": st.rolled_back["from"]},
                       reason=st.rolled_back["reason"])
        if self.telemetry is not None:
            # Asks telemetry to show the running version in the retained status, where it can.
            setter = getattr(self.telemetry, "set_status", None)
            if callable(setter):
                setter(model={"name": st.model.name, "version": st.model.version})

    def _open_telemetry(self) -> Any:
        from ..telemetry import open_telemetry

        t = self.config.telemetry
        assert t.mqtt_url is not None
        return open_telemetry(
            t.mqtt_url, self.config.device_id, self.config.outbox_path, username=t.username,
            password_file=t.password_file, ca_file=t.ca_file, cert_file=t.cert_file, key_file=t.key_file,
            delivery={"confirm": t.confirm}, batch={"linger_s": t.linger_s}, metrics_interval_s=t.metrics_interval_s)

    def _mqtt_config(self) -> Any:
        from ..telemetry import MqttConfig

        t = self.config.telemetry
        return MqttConfig(url=t.mqtt_url or "", username=t.username, password_file=t.password_file,
                          ca_file=t.ca_file, cert_file=t.cert_file, key_file=t.key_file)

    def _open_commands(self) -> CommandClient:
        cfg = self.config
        retained: list[tuple[str, bytes]] = []
        if cfg.home_assistant.enabled:
            assert self.model is not None
            retained = discovery_messages(cfg.device_id, prefix=cfg.home_assistant.discovery_prefix,
                                          name=cfg.home_assistant.name, model_name=self.model.name,
                                          task=self.model.manifest.task,
                                          count_labels=cfg.home_assistant.count_labels)
        client = CommandClient(self._mqtt_config(), cfg.device_id, on_update=self._on_notice, retained=retained,
                               via=self.telemetry)
        client.start()
        return client

    def _open_source(self) -> Source:
        spec = self.config.source.spec
        first = open_source(spec)
        if not self.config.source.repeat or first.live:
            return first  # a camera does not end: nothing to repeat
        first.close()
        return RepeatSource(lambda: open_source(spec))

    # -- running ---------------------------------------------------------------------------------
    def run(self) -> int:
        """Start, serve until stopped or the source ends, shut down. Returns the exit code."""
        self.start()
        try:
            assert self.pipeline is not None
            if not self._stop.is_set():  # a SIGTERM during the start skips straight to the stop
                stats = self.pipeline.run()
                log.info("pipeline ended: %s", stats.as_dict())
        finally:
            self.shutdown()
        return self.exit_code

    def stop(self) -> None:
        """Ask the agent to stop (safe from a signal handler or any thread)."""
        self._stop.set()
        if self.pipeline is not None:
            self.pipeline.stop()

    def reload(self) -> None:
        """SIGHUP: switch to what ``current`` names (after ``edge agent rollback``)."""
        if self.updater is not None:
            self.updater.request_reload()

    def _on_record(self, rec: Record) -> None:
        # Pipeline thread: keep it cheap.
        self.frames += 1
        if "error" in rec:
            self.errors += 1
        self.latest = rec
        self._last_progress = time.monotonic()
        if self._retired and rec.get("backend") != "cloud":
            with self._lock:
                active = self.model
                ref = rec.get("model")
                if active is not None and ref is not None and ref["version"] == active.version:
                    retired, self._retired = self._retired, []
                else:
                    retired = []
            for m in retired:
                m.close()
        now = time.monotonic()
        if now - self._status_at > 10.0:
            self._status_at = now
            self.notifier.status(self._status_text())

    def _on_local(self, model: Model, ok: bool) -> None:
        if self.updater is not None:
            self.updater.observe(model, ok)

    def _on_notice(self, notice: UpdateNotice) -> None:
        if self.updater is not None and self.updater.client is not None:
            self.updater.notify("notice")

    def _running(self) -> tuple[str, int, Pointer | None]:
        m = self.model
        assert m is not None
        return m.name, m.version, self.pointer

    def _standby_model(self, version: int) -> Model | None:
        with self._lock:
            m = self._standby
            return m if m is not None and m.version == version else None

    def _activate(self, model: Model, pointer: Pointer) -> None:
        """Hand a model to the pipeline: it takes over between two frames."""
        with self._lock:
            old = self.model
            self.model = model
            self.pointer = pointer
            self.chosen = "current"
            if old is not None and old is not model:
                if self._standby is model:  # going back: the model left is done with
                    self._standby = None
                    self._retired.append(old)
                else:  # going forward: the old one stays loaded for an instant rollback
                    if self._standby is not None:
                        self._retired.append(self._standby)
                    self._standby = old
        if self.pipeline is not None:
            self.pipeline.swap_model(model)
        self.notifier.status(self._status_text())
        setter = getattr(self.telemetry, "set_status", None) if self.telemetry is not None else None
        if callable(setter):
            setter(model={"name": model.name, "version": model.version})

    # -- health ----------------------------------------------------------------------------------
    def _stall_s(self) -> float:
        """How long without a frame counts as hung: a whole watchdog period, or 30 s without one."""
        interval = self.notifier.watchdog_interval_s
        return 2 * interval if interval else 30.0

    def _progressing(self) -> bool:
        if self.phase != "running":
            return True  # start and stop are bounded by systemd's own timeouts
        return time.monotonic() - self._last_progress < self._stall_s()

    def _status_text(self) -> str:
        m = self.model
        what = f"{m.name} v{m.version}" if m else "no model"
        return f"{self.phase}: {what}, {self.config.router.mode} mode, {self.frames} frames"

    def health(self) -> tuple[bool, dict[str, Any]]:
        m = self.model
        age = time.monotonic() - self._last_progress
        ok = self.phase == "running" and age < self._stall_s()
        body: dict[str, Any] = {
            "status": "ok" if ok else ("starting" if self.phase == "starting" else "stalled"),
            "device_id": self.config.device_id, "phase": self.phase,
            "model": {"name": m.name, "version": m.version, "backend": m.backend_name} if m else None,
            "chosen": self.chosen, "frames": self.frames, "errors": self.errors,
            "last_frame_age_s": round(age, 3), "uptime_s": round(time.time() - self.started_at, 1),
            "mode": self.config.router.mode,
        }
        if self.router is not None:
            breaker = self.router.breaker
            body["cloud"] = {"breaker": breaker.state, "retry_in_s": round(breaker.retry_in(), 3),
                             "routes": dict(self.router.counts)}
        if self.updater is not None:
            last = self.updater.last_result
            body["updates"] = {"checks": self.updater.checks,
                               "probation": self.updater.probation.version if self.updater.probation else None,
                               "last": dataclasses.asdict(last) if last else None}
        with self._lock:
            body["events"] = list(self.events[-10:])
        return ok, body

    # -- stopping --------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Flush and close everything; publish ``offline``; mark the stop clean in state.json."""
        self.phase = "stopping"
        self.notifier.stopping(self._status_text())
        if self.updater is not None:
            self.updater.stop()
        if self.pipeline is not None:
            self.pipeline.stop()
        self.event("agent_stopped", version=self.model.version if self.model else None, frames=self.frames)
        self._close_parts()
        try:
            with self.store.locked():
                state = self.store.load()
                state.running = False
                self.store.save(state)
        except StateError as exc:
            log.error("could not record the clean stop: %s", exc)
        self.store.release_agent_lock()
        self.phase = "stopped"

    def _close_parts(self) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()
        if self.router is not None:
            self.router.close()
        if self.commands is not None:
            self.commands.close()
        if self.http is not None:
            self.http.close()
        if self.source is not None:
            self.source.close()
        if self.telemetry is not None:
            try:
                # Commits what was accepted, drains for a moment, says "offline"; the rest of the
                # outbox waits for the next start.
                self.telemetry.close(drain_s=self.config.telemetry.drain_s)
            except EdgeError as exc:
                log.error("telemetry did not close cleanly: %s", exc)
            self.telemetry = None
        for m in {id(x): x for x in [self.model, self._standby, *self._retired] if x is not None}.values():
            m.close()
        self._retired = []
        self._standby = None
        self.notifier.close()
