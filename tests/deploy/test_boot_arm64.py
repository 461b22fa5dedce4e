"""Flash, boot, serve: the Raspberry Pi path proven on a booted arm64 system, not on files.

A card image is built the way a user's card looks (FAT ``bootfs`` + an ext4 arm64 Debian 12 root with
Python 3.11, systemd, OpenSSH and a wheelhouse of the runtime's aarch64 wheels; tests/support/arm64_card.py),
``edge pi prepare-image`` writes the device's setup onto it exactly as a user runs it (bundle, agent
config, trusted key, device token, hostname, SSH key), the shared photos are copied onto the card, and
the card boots under qemu-system-aarch64 (``virt``, Cortex-A72, Debian's arm64 kernel and initrd) with
real systemd, the kernel command line read from the card's cmdline.txt as the Pi firmware reads it.

The host plays the cloud: Mosquitto, ``edge cloud ingest`` and ``edge cloud serve`` on its loopback,
which the guest reaches as 10.0.2.2 through qemu's user networking. The tests then follow one device
through its life, in order (each needs the previous one):

1. the first power-on runs the card's ``firstrun.sh`` (kernel ``systemd.run=``) and reboots; the second
   runs ``edge-firstboot.service``, which installs everything once, with no network for pip, and starts
   ``edge-agent.service`` (Type=notify: ``active (running)`` only after READY=1);
2. the agent classifies the photos with the card's bundle, and its telemetry reaches the host's broker
   and the ingester's database;
3. SIGKILL: systemd restarts the agent; a source that hangs: the watchdog fires, systemd restarts it;
4. v2 published on the host is installed by the agent; power cut (qemu SIGKILLed) during the v3
   update: the next boot runs a verified model, v2 or v3;
5. another reboot: the first-boot work does not run again.

The console of every boot is kept in test-artifacts/boot-arm64/console.log, the timings in
test-artifacts/boot-arm64/timings.json. Everything expensive (the debootstrapped root, the wheels, the
card template) is cached in $EDGE_TEST_CACHE (default /var/cache/edge-tests); see arm64_card.py.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.arm64_card import make_card
from tests.support.arm64_vm import Arm64Vm, BootRecord
from tests.support.data import IMAGENET_LABELS, IMAGES_DIR, MOBILENET_MODEL, MOBILENET_TOP1, ROOT
from tests.support.mqtt import Subscriber
from tests.support.net import free_port, wait_for
from tests.support.servers import Mosquitto
from tests.support.service import ADMIN_TOKEN

# Emulated (TCG) boots are slow: the first test also builds the card when the cache is cold.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

ARTIFACTS = ROOT / "test-artifacts" / "boot-arm64"
DEVICE = "cam-1"
HOSTNAME = "cam-1"
NAME = "mobilenet_v2"
FRAMES = "/boot/firmware/frames"
LOCKS = [ROOT / "requirements/pi-tflite.txt", ROOT / "requirements/pi-onnx.txt"]
GUEST_HOST = "10.0.2.2"  # the host's loopback as qemu's user networking shows it to the guest
EDGE = "/opt/edge/venv/bin/edge"


def edge(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    full_env = {**{k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "edge_cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, f"edge {' '.join(args)}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@dataclass
class Host:
    work: Path
    key: Path
    pub: Path
    broker: Mosquitto
    cloud_url: str
    db: Path
    subscriber: Subscriber
    admin: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def release(self, version: int) -> Path:
        out = self.work / f"{NAME}-v{version}.tar.gz"
        if not out.exists():
            edge("bundle", str(MOBILENET_MODEL), "--labels", str(IMAGENET_LABELS), "--name", NAME,
                 "--version", str(version), "--sample", str(IMAGES_DIR / "cat.png"), "--expires", "90d",
                 "--sign-key", str(self.key), "-o", str(out))
        return out

    def publish(self, version: int) -> None:
        edge("publish", str(self.release(version)), env=self.admin)
        edge("registry", "promote", NAME, str(version), "--channel", "stable", env=self.admin)

    def records(self) -> list[dict[str, Any]]:
        return self.subscriber.records(f"edge/{DEVICE}/telemetry")  # type: ignore[return-value]

    def db_records(self) -> list[tuple[str, str, int]]:
        if not self.db.exists():
            return []
        with sqlite3.connect(self.db) as c:
            try:
                return list(c.execute("SELECT source, top_label, model_version FROM telemetry_records "
                                      "WHERE device_id = ?", (DEVICE,)))
            except sqlite3.OperationalError:
                return []


@dataclass
class Timings:
    values: dict[str, float] = field(default_factory=dict)

    def note(self, name: str, seconds: float) -> None:
        self.values[name] = round(seconds, 1)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "timings.json").write_text(json.dumps(self.values, indent=2) + "\n")


def _start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    with log.open("ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    """The operator's side: signing keys, Mosquitto, the ingester and the cloud service with v1 on stable."""
    work = tmp_path_factory.mktemp("host")
    edge("keys", "generate", "--out", str(work / "keys"))
    key, pub = work / "keys/edge_signing.key", work / "keys/edge_signing.pub"
    # The guest's connections arrive from qemu's user networking on the host's loopback.
    broker = Mosquitto(work / "mosquitto").start()
    db = work / "telemetry.db"
    procs = [_start([sys.executable, "-m", "edge_cli", "cloud", "ingest", "--mqtt", broker.url,
                     "--db", f"sqlite:///{db}"], work / "ingest.log")]
    port = free_port()
    cloud_toml = work / "cloud.toml"
    cloud_toml.write_text(f'admin_token = "{ADMIN_TOKEN}"\n')
    cloud_toml.chmod(0o600)
    procs.append(_start([sys.executable, "-m", "edge_cli", "cloud", "serve", "--config", str(cloud_toml),
                         "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(work / "cloud"),
                         "--trusted-key", str(pub), "--log-level", "warning"], work / "serve.log"))
    url = f"http://127.0.0.1:{port}"

    def live() -> bool:
        try:
            return httpx.get(url + "/v2/health/live", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(live, 120, "the cloud service")
    subscriber = Subscriber(broker.port, f"edge/{DEVICE}/#")
    h = Host(work, key, pub, broker, url, db, subscriber,
             {"EDGE_REGISTRY_URL": url, "EDGE_REGISTRY_TOKEN": ADMIN_TOKEN}, procs)
    h.publish(1)
    try:
        yield h
    finally:
        subscriber.close()
        for p in procs:
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        broker.stop()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for log in ("ingest.log", "serve.log"):
            if (work / log).exists():
                shutil.copy(work / log, ARTIFACTS / log)


@pytest.fixture(scope="module")
def timings() -> Timings:
    return Timings()


@pytest.fixture(scope="module")
def card(host: Host, tmp_path_factory: pytest.TempPathFactory, ssh_keypair: tuple[Path, Path]) -> Iterator[Arm64Vm]:
    """The card, prepared as a user prepares it, in a machine that is not yet powered on."""
    work = tmp_path_factory.mktemp("card")
    built = make_card(work / "card.img", LOCKS)
    added = json.loads(edge("devices", "add", DEVICE, "--channel", "stable", "--model", NAME, "--json",
                            env=host.admin).stdout)
    token = work / "cam-1.token"
    token.write_text(added["token"] + "\n")
    token.chmod(0o600)
    config = work / "agent.toml"
    config.write_text(f"""\
device_id = "{DEVICE}"
state_dir = "state"
outputs = ["records.jsonl"]

[model]
bundle = "{host.release(1)}"
threads = 2

[source]
spec = "{FRAMES}"
repeat = true

[cloud]
url = "http://{GUEST_HOST}:{host.cloud_url.rsplit(':', 1)[1]}"
timeout_s = 60

[telemetry]
mqtt_url = "mqtt://{GUEST_HOST}:{host.broker.port}"
metrics_interval_s = 20
linger_s = 1.0

[updates]
poll_interval_s = 5
first_poll_s = 5
probation_frames = 8
download_timeout_s = 600

[http]
enabled = true
port = 8780
""")
    pub_ssh, priv_ssh = ssh_keypair
    priv_ssh.chmod(0o600)
    edge("pi", "prepare-image", str(built.image), "--bundle", str(host.release(1)), "--config", str(config),
         "--hostname", HOSTNAME, "--trusted-key", str(host.pub), "--device-token-file", str(token),
         "--ssh-key", str(pub_ssh))
    # The user copies the photos to classify onto the card's boot partition, as any file.
    mt_env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    drive = f"{built.image}@@{built.boot_start}"
    subprocess.run(["mmd", "-i", drive, "::/frames"], check=True, env=mt_env, capture_output=True)
    for name in MOBILENET_TOP1:
        subprocess.run(["mcopy", "-i", drive, str(IMAGES_DIR / name), f"::/frames/{name}"], check=True,
                       env=mt_env, capture_output=True)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    console = ARTIFACTS / "console.log"
    console.unlink(missing_ok=True)
    vm = Arm64Vm(image=built.image, kernel=built.kernel, initrd=built.initrd, boot_start=built.boot_start,
                 ssh_key=priv_ssh, console_log=console)
    try:
        yield vm
    finally:
        vm.close()


def agent_state(vm: Arm64Vm) -> dict[str, str]:
    out = vm.ssh("systemctl show edge-agent.service -p ActiveState -p SubState -p Type -p NRestarts "
                 "-p MainPID -p WatchdogUSec -p Result", check=False).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def first_record_after(host: Host, since: int, pred: Callable[[dict[str, Any]], bool] = lambda r: True
                       ) -> dict[str, Any] | None:
    return next((r for r in host.records()[since:] if r.get("top_k") and pred(r)), None)


def made_after(boot: BootRecord) -> Callable[[dict[str, Any]], bool]:
    """A record classified during this boot (the outbox also delivers, after a restart, older ones)."""
    return lambda r: datetime.fromisoformat(str(r["ts"])).timestamp() >= boot.wall - 1


@pytest.fixture(scope="module")
def device(card: Arm64Vm, host: Host, timings: Timings) -> Arm64Vm:
    """The prepared card through its first boot: firstrun.sh, reboot, edge-firstboot.service, the agent."""
    vm = card
    assert "systemd.run=/boot/firmware/firstrun.sh" in vm.read_boot_file("cmdline.txt")
    first = vm.boot()
    vm.wait_off(900)  # firstrun.sh applies the settings, then systemd.run_success_action=reboot
    assert first.ended is not None
    timings.note("first_power_on_to_firstrun_reboot_s", first.ended - first.started)
    # The hook removed itself from cmdline.txt: the next power-on is a normal boot.
    cmdline = vm.read_boot_file("cmdline.txt")
    assert "systemd.run" not in cmdline and "root=PARTUUID=4e639091-02" in cmdline

    seen = len(host.records())
    second = vm.boot()
    timings.note("second_boot_power_on_to_ssh_s", vm.wait_ssh(600))

    def installed() -> bool:
        out = vm.ssh("systemctl is-enabled edge-firstboot.service; systemctl is-active edge-agent.service; "
                     "systemctl show -p NRestarts -p Result edge-firstboot.service", check=False).stdout.split()
        if "NRestarts=0" not in out or "Result=success" not in out:
            journal = vm.root("journalctl -b -o cat -u edge-firstboot.service", check=False).stdout
            raise AssertionError(f"edge-firstboot.service failed ({out}):\n{journal[-6000:]}")
        if int(agent_state(vm).get("NRestarts") or 0) > 1:
            journal = vm.root("journalctl -b -o cat -u edge-agent.service", check=False).stdout
            raise AssertionError(f"edge-agent.service keeps failing:\n{journal[-6000:]}")
        return out[:2] == ["disabled", "active"]

    vm.wait(installed, 1200, "edge-firstboot.service to install everything and start the agent", interval=10)
    timings.note("second_boot_power_on_to_agent_active_s", time.monotonic() - second.started)
    vm.wait(lambda: first_record_after(host, seen, made_after(second)), 600,
            "the first frame's record on the host's broker")
    timings.note("second_boot_power_on_to_first_frame_s", time.monotonic() - second.started)
    return vm


# -- 1-3: first boot, the agent classifies, telemetry reaches the host ----------------------------------


def test_first_boot_installs_everything_once_and_starts_the_agent(device: Arm64Vm) -> None:
    vm = device
    assert vm.ssh("uname -m").stdout.strip() == "aarch64"
    assert vm.ssh("hostname").stdout.strip() == HOSTNAME
    # Logged in with the SSH key from the card (BatchMode: no password could have been used).
    assert vm.ssh("systemctl is-system-running --wait || true", timeout=600).stdout.strip() in {"running", "degraded"}
    failed = vm.ssh("systemctl --failed --plain --no-legend").stdout
    assert "edge" not in failed, failed

    fb = vm.ssh("systemctl show edge-firstboot.service -p Result -p NRestarts -p UnitFileState").stdout
    assert "Result=success" in fb and "NRestarts=0" in fb and "UnitFileState=disabled" in fb, fb
    journal = vm.root("journalctl -b -o cat -u edge-firstboot.service").stdout
    assert journal.count("install-on-pi: creating /opt/edge/venv") == 1, journal
    assert journal.count("install-on-pi: done") == 1, journal
    # pip found everything in the card's wheelhouse: no network was asked for anything.
    assert "extras [tflite,onnx,camera,device]" in journal, journal

    # The secrets left the card; the token is the agent's alone.
    edge_dir = vm.ssh("ls /boot/firmware/edge").stdout.split()
    assert "agent.toml" not in edge_dir and not any(n.endswith(".token") for n in edge_dir), edge_dir
    assert vm.root("stat -c '%a %U' /etc/edge/device.token").stdout.split() == ["600", "edge"]
    assert vm.root("stat -c '%a %U' /etc/edge/keys/edge_signing.pub").stdout.split() == ["644", "root"]

    state = agent_state(vm)
    assert (state["Type"], state["ActiveState"], state["SubState"]) == ("notify", "active", "running"), state
    assert state["WatchdogUSec"] == "30s", state
    status = vm.ssh("systemctl status --no-pager edge-agent.service", check=False).stdout
    assert "active (running)" in status, status


def test_the_agent_classifies_the_photos_and_telemetry_reaches_the_host(device: Arm64Vm, host: Host,
                                                                         timings: Timings) -> None:
    def all_photos() -> dict[str, dict[str, Any]] | None:
        found: dict[str, dict[str, Any]] = {}
        for r in host.records():
            name = Path(str(r.get("source", ""))).name
            if name in MOBILENET_TOP1 and r.get("top_k"):
                found.setdefault(name, r)
        return found if len(found) == len(MOBILENET_TOP1) else None

    found = device.wait(all_photos, 300, "a record of every photo at the host")
    for name, record in found.items():
        assert record["top_k"][0]["label"] == MOBILENET_TOP1[name], (name, record)
        assert record["model"] == {"name": NAME, "version": 1}
        assert record["path"] == "local" and record["backend"] == "litert"
    cat = found["cat.png"]
    assert abs(cat["top_k"][0]["score"] - 0.79) <= 2 / 256

    # The ingester wrote them to its database (and announced itself, so the device waits for its commit).
    rows = device.wait(lambda: [r for r in host.db_records() if r[0].endswith("cat.png")], 120,
                       "the ingester's database row for cat.png")
    assert rows[0][1:] == ("Egyptian cat", 1)
    device.wait(lambda: any(p.get("state") == "online" for p in host.subscriber.payloads(f"edge/{DEVICE}/status")),
                60, "the device's online status")


# -- 4: systemd restarts a killed agent, and a hung one --------------------------------------------------


def test_systemd_restarts_a_killed_agent_and_a_hung_one(device: Arm64Vm, host: Host, timings: Timings) -> None:
    vm = device
    before = agent_state(vm)
    restarts = int(before["NRestarts"])
    vm.root(f"kill -KILL {before['MainPID']}")

    def restarted() -> dict[str, str] | None:
        s = agent_state(vm)
        return s if int(s["NRestarts"]) > restarts and s["SubState"] == "running" else None

    after = vm.wait(restarted, 600, "systemd to restart the SIGKILLed agent")
    assert after["MainPID"] != before["MainPID"]
    assert int(after["NRestarts"]) == restarts + 1

    # A source that hangs: the agent lists two photos when it starts; once it runs, one of them becomes
    # a FIFO nobody writes to, so reading it blocks for ever (as a dead network share or camera would).
    vm.root("install -d -o edge -g edge /var/lib/edge/hang && cp /boot/firmware/frames/cat.png "
            "/boot/firmware/frames/sunflower.png /var/lib/edge/hang/ && chown -R edge:edge /var/lib/edge/hang "
            "&& install -d /etc/systemd/system/edge-agent.service.d "
            "&& printf '[Service]\\nEnvironment=EDGE_SOURCE__SPEC=/var/lib/edge/hang\\n' "
            ">/etc/systemd/system/edge-agent.service.d/hang.conf && systemctl daemon-reload "
            "&& systemctl restart edge-agent.service")
    vm.wait(lambda: agent_state(vm)["SubState"] == "running", 600, "the agent on the hanging source to start")
    restarts = int(agent_state(vm)["NRestarts"])  # a restart by hand counts from 0 again
    vm.root("rm /var/lib/edge/hang/sunflower.png && mkfifo -m 644 /var/lib/edge/hang/sunflower.png "
            "&& chown edge:edge /var/lib/edge/hang/sunflower.png")
    hung_at = time.monotonic()
    vm.wait(lambda: int(agent_state(vm)["NRestarts"]) > restarts, 600, "the watchdog to restart the hung agent",
            interval=5)
    timings.note("hung_source_to_watchdog_restart_s", time.monotonic() - hung_at)
    journal = vm.root("journalctl -b -o cat -u edge-agent.service").stdout
    assert "Watchdog timeout" in journal, journal[-3000:]

    vm.root("rm -rf /etc/systemd/system/edge-agent.service.d/hang.conf /var/lib/edge/hang "
            "&& systemctl daemon-reload && systemctl restart edge-agent.service")
    seen = len(host.records())
    vm.wait(lambda: first_record_after(host, seen, lambda r: str(r.get("source", "")).startswith(FRAMES)), 600,
            "frames from the photos again")


# -- 5: updates, and a power cut in the middle of one ----------------------------------------------------


def agent_status(vm: Arm64Vm) -> dict[str, Any]:
    out = vm.root(f"runuser -u edge -- {EDGE} agent status --config /etc/edge/agent.toml --json").stdout
    return json.loads(out)  # type: ignore[no-any-return]


def test_an_update_and_a_power_cut_in_the_middle_of_the_next_one(device: Arm64Vm, host: Host,
                                                                  timings: Timings) -> None:
    vm = device
    seen = len(host.records())
    published = time.monotonic()
    host.publish(2)
    vm.wait(lambda: first_record_after(host, seen, lambda r: r["model"]["version"] == 2), 900,
            "the agent to classify with v2")
    timings.note("publish_v2_to_first_v2_frame_s", time.monotonic() - published)
    assert agent_status(vm)["startup"]["version"] == 2

    # v3: pull the plug as soon as the device says it started updating.
    events_before = len(host.subscriber.payloads(f"edge/{DEVICE}/events"))
    host.publish(3)

    def update_started() -> bool:
        return any('"update_started"' in text and '"version": 3' in text
                   for text in map(json.dumps, host.subscriber.payloads(f"edge/{DEVICE}/events")[events_before:]))

    vm.wait(update_started, 600, "the device to start updating to v3", interval=0.5)
    vm.kill()
    # What the device had said about v3 when the plug was pulled (the test artifact says how far it got).
    said = [e for e in host.subscriber.payloads(f"edge/{DEVICE}/events")[events_before:]]
    (ARTIFACTS / "power_cut_events.json").write_text(json.dumps(said, indent=2) + "\n")

    seen = len(host.records())
    boot = vm.boot()
    vm.wait_ssh(600)
    record = vm.wait(lambda: first_record_after(host, seen, made_after(boot)), 900, "a frame after the power cut")
    timings.note("later_boot_power_on_to_first_frame_s", time.monotonic() - boot.started)
    assert record["model"]["version"] in (2, 3), record
    # What a start runs is verified (signature against the pinned key, every hash) and loaded.
    startup = agent_status(vm)["startup"]
    assert startup["version"] in (2, 3) and startup["signed_by"], startup


# -- 6: later boots do not run the first-boot work again -------------------------------------------------


def test_a_reboot_does_not_run_the_first_boot_work_again(device: Arm64Vm, host: Host, timings: Timings) -> None:
    vm = device
    stamp = vm.root("stat -c %Y /opt/edge/venv/.edge-install").stdout.strip()
    seen = len(host.records())
    boot = vm.reboot()
    vm.wait_ssh(600)
    vm.wait(lambda: first_record_after(host, seen, made_after(boot)), 900, "a frame after the reboot")
    timings.note("reboot_power_on_to_first_frame_s", time.monotonic() - boot.started)

    fb = vm.ssh("systemctl show edge-firstboot.service -p UnitFileState -p ActiveEnterTimestampMonotonic "
                "-p ExecMainStartTimestampMonotonic").stdout
    assert "UnitFileState=disabled" in fb and "ExecMainStartTimestampMonotonic=0" in fb, fb
    assert vm.root("journalctl -b -o cat -u edge-firstboot.service").stdout.strip() in {"", "-- No entries --"}
    assert vm.root("stat -c %Y /opt/edge/venv/.edge-install").stdout.strip() == stamp
    # firstrun.sh is gone from the card and from cmdline.txt.
    assert vm.ssh("test ! -e /boot/firmware/firstrun.sh && ! grep -q systemd.run /boot/firmware/cmdline.txt",
                  check=False).returncode == 0
    state = agent_state(vm)
    assert (state["ActiveState"], state["SubState"]) == ("active", "running"), state
