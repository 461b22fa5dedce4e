"""SIGKILL the agent at 100 random points of an update; every restart comes up on a verified model.

The agent runs as `edge agent` (a real process) against the real cloud service, which serves a
newer signed bundle of about 4 MB through a bandwidth-limited proxy, so the download takes a while
and kills land in every step: download, extraction and verification, health check, switch, first
frames on probation, and (one kill in ten) the start itself, adoption included. After each kill the
test checks what a restart would run, with the agent's own startup code (read-only): no fallback
needed, version 1 or 2, verified, and answering the reference image right. The next iteration then
really restarts the agent on that state, so interrupted downloads and installs are resumed or redone.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_device.agent import StateError, StateStore, load_config, resolve_startup
from edge_runtime import load_image
from tests.support.agent import IMAGES, admin, agent_config, register, start_service, write_config
from tests.support.net import wait_for
from tests.support.paths import ROOT, env_with_project
from tests.support.servers import TcpProxy
from tests.support.service import CloudService

KILLS = 100
SEED = 20240611
# Step of the update a kill interrupted: the last event the agent logged before it.
PHASES = {"agent_started": "download", "update_started": "download", "update_downloaded": "verify",
          "update_verified": "health check", "update_healthy": "switch", "update_succeeded": "first frames",
          "update_confirmed": "after confirmation", "update_failed": "retry after a failed attempt",
          "update_refused": "after a refusal", None: "start"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, keys, release) -> Iterator[tuple[Path, CloudService, TcpProxy]]:
    tmp = tmp_path_factory.mktemp("kill")
    cloud = start_service(tmp, [keys[1]])
    big = release(2, pad_bytes=1_000_000)  # about 4 MB
    assert big.stat().st_size > 4_000_000
    admin(cloud).publish(release(1), channel="stable")
    admin(cloud).publish(big, channel="stable")
    proxy = TcpProxy(cloud.port)
    proxy.rate = 12e6  # bytes/s: the 4 MB download takes about a third of a second
    token = register(cloud, "kill-1", tmp)
    frames = tmp / "frames"
    frames.mkdir()
    for p in sorted(IMAGES.glob("*.png")):
        (frames / p.name).symlink_to(p)
    cfg = agent_config(tmp, device_id="kill-1", bundle=release(1), keys=keys, source=str(frames),
                       cloud={"url": proxy.url, "token_file": str(token), "timeout_s": 10},
                       updates={"enabled": True, "first_poll_s": 0, "poll_interval_s": 0.5,
                                "probation_frames": 10, "max_trial_starts": 3})
    cfg["source"] = {"spec": str(frames), "repeat": True}
    path = write_config(tmp / "agent.toml", cfg)
    yield path, cloud, proxy
    proxy.close()
    cloud.stop()


class AgentProcess:
    """`python -m edge_cli -v agent --config FILE`, its log lines timestamped as they come."""

    def __init__(self, config: Path) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "edge_cli", "-v", "agent", "--config", str(config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env_with_project(),
                                     cwd=ROOT, text=True)
        self.lines: list[tuple[float, str]] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def event_time(self, name: str) -> float | None:
        for t, line in list(self.lines):
            if f" event {name} " in line:
                return t
        return None

    def last_event(self) -> str | None:
        last = None
        for _, line in list(self.lines):
            if " event " in line:
                last = line.split(" event ", 1)[1].split(" ", 1)[0]
        return last

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._t.join(5)

    def log(self) -> str:
        return "\n".join(line for _, line in self.lines[-40:])


def steady(state_dir: Path) -> bool:
    """Nothing left to do: on v2 and confirmed, or v2 refused (rolled back as a crash loop)."""
    store = StateStore(state_dir)
    try:
        cur, state = store.read_pointer("current"), store.load()
    except StateError:  # a corrupt state is what the assertions below report
        return False
    return (cur is not None and cur.version == 2 and state.trial is None) or 2 in state.bad_versions


def check_restart(config: Path) -> dict:
    """What the next start would run, by the agent's own startup code, read-only."""
    cfg = load_config(config, environ={})
    st = resolve_startup(cfg, readonly=True)
    try:
        report = st.report()
        report["top1"] = st.model.predict(load_image(IMAGES / "cat.png")).label
    finally:
        st.model.close()
    store = StateStore(cfg.state_dir)
    report["state"] = store.describe()
    return report


LANES = 2  # two agents on two state directories at once: the same kills in half the time


def kill_lane(config: Path, kills: int, seed: int, startup_s: float,
              window_s: float) -> tuple[Counter[str], Counter[int], int]:
    """Start, kill at a random point, check what a restart would run; ``kills`` times."""
    state_dir = load_config(config, environ={}).state_dir
    rng = random.Random(seed)
    phases: Counter[str] = Counter()
    versions: Counter[int] = Counter()
    resets = 0
    for i in range(kills):
        if steady(state_dir):
            shutil.rmtree(state_dir)
            resets += 1
        agent = AgentProcess(config)
        try:
            if rng.random() < 0.1:  # during the start itself (adoption of the configured bundle)
                time.sleep(rng.uniform(0, startup_s))
            else:
                wait_for(lambda a=agent: a.event_time("agent_started") is not None or a.proc.poll() is not None,
                         60, "the agent to start")
                assert agent.proc.poll() is None, f"the agent exited {agent.proc.returncode}:\n{agent.log()}"
                time.sleep(rng.uniform(0, window_s))
            phase = PHASES.get(agent.last_event(), agent.last_event() or "start")
        finally:
            agent.kill()
        phases[phase] += 1
        report = check_restart(config)
        where = f"kill {i} during {phase}: {json.dumps(report, default=str)}\n{agent.log()}"
        assert report["fallbacks"] == [], where
        assert report["version"] in (1, 2), where
        assert report["top1"] == "Egyptian cat", where
        if report["chosen"] == "config":  # only before the first adoption completed
            assert report["state"]["current"] is None, where
        versions[report["version"]] += 1
    return phases, versions, resets


def lane_config(config: Path, lane: int) -> Path:
    text = config.read_text()
    cfg = load_config(config, environ={})
    out = config.with_name(f"agent-lane{lane}.toml")
    out.write_text(text.replace(str(cfg.state_dir), f"{cfg.state_dir}-lane{lane}"))
    return out


def test_sigkill_at_100_random_points_of_an_update(setup: tuple[Path, CloudService, TcpProxy]) -> None:
    config, _, _ = setup
    state_dir = load_config(config, environ={}).state_dir

    # One undisturbed run measures the update window on this machine.
    calib = AgentProcess(config)
    try:
        wait_for(lambda: calib.event_time("update_confirmed") is not None or calib.proc.poll() is not None, 120,
                 "a whole update")
        t_ready, t_done = calib.event_time("agent_started"), calib.event_time("update_confirmed")
        assert t_ready is not None and t_done is not None, calib.log()
    finally:
        calib.kill()
    startup_s, window_s = t_ready - calib.started, (t_done - t_ready) * 1.2
    assert check_restart(config)["version"] == 2

    t0 = time.monotonic()
    results: list[tuple[Counter[str], Counter[int], int]] = []
    errors: list[BaseException] = []

    def lane(n: int) -> None:
        try:
            results.append(kill_lane(lane_config(config, n), KILLS // LANES, SEED + n, startup_s, window_s))
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread, which re-raises it
            errors.append(exc)

    threads = [threading.Thread(target=lane, args=(n,)) for n in range(LANES)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    phases = sum((r[0] for r in results), Counter())
    versions = sum((r[1] for r in results), Counter())
    elapsed = time.monotonic() - t0
    print(f"\n{sum(phases.values())} kills in {elapsed:.0f} s (update window {window_s:.2f} s); step interrupted: "
          f"{dict(phases)}; came back on: {dict(versions)}; state reset {sum(r[2] for r in results)} times")
    assert sum(phases.values()) == KILLS
    # the kills did land across the update, not only at its start or its end
    assert {"download", "first frames"} <= set(phases) and len(phases) >= 4, phases
    assert versions[1] > 0 and versions[2] > 0

    # Finally, left alone, the agent finishes the update from wherever the last kill left it.
    final = AgentProcess(config)
    try:
        wait_for(lambda: (final.event_time("agent_started") is not None and steady(state_dir))
                 or final.proc.poll() is not None, 120, "the update to complete")
        assert final.proc.poll() is None, final.log()
        final.proc.send_signal(signal.SIGTERM)
        assert final.proc.wait(30) == 0, final.log()
    finally:
        if final.proc.poll() is None:
            final.kill()
    report = check_restart(config)
    assert report["fallbacks"] == [] and report["top1"] == "Egyptian cat"
    state = StateStore(state_dir).load()
    assert report["version"] == 2 or 2 in state.bad_versions
    assert not state.running  # the SIGTERM stop was clean
