"""scripts/install-on-pi.sh and the generated firstrun.sh, run for real inside a Debian 12 root.

Raspberry Pi OS is Debian 12 plus Raspberry Pi packages, so a ``debootstrap`` root (built once and
cached, see _roots.py) is where the script meets real apt, dpkg, useradd, python3 -m venv and pip.
systemd cannot run in a chroot: ``systemctl`` is replaced by a recording stand-in that keeps the
enabled/active state the way systemd reports it, and the tests assert the calls. apt-get reaches
Debian's mirror; pip installs from a wheelhouse downloaded once from PyPI (PIP_NO_INDEX).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.support.debian_roots import debian_root_amd64, project_requirements, wheelhouse

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts/install-on-pi.sh"

SYSTEMCTL_SHIM = r"""#!/bin/sh
# Test stand-in for systemctl: records every call, keeps enabled/active state like systemd reports it.
echo "$*" >>/var/log/systemctl.calls
state=/var/lib/systemctl-shim
mkdir -p "$state"
verb=""; unit=""
for a in "$@"; do
    case "$a" in -*) ;; *) if [ -z "$verb" ]; then verb=$a; else unit=$a; fi ;; esac
done
case "$verb" in
    enable) touch "$state/$unit.enabled" ;;
    disable) rm -f "$state/$unit.enabled" ;;
    is-enabled) [ -e "$state/$unit.enabled" ]; exit $? ;;
    start|restart) touch "$state/$unit.active" ;;
    stop) rm -f "$state/$unit.active" ;;
    is-active) [ -e "$state/$unit.active" ]; exit $? ;;
    daemon-reload) ;;
    *) echo "systemctl stand-in: unsupported call: $*" >&2; exit 1 ;;
esac
"""


def _copy_root(dest: Path) -> Path:
    base = debian_root_amd64()
    subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(dest)], check=True)
    shutil.copy2("/etc/resolv.conf", dest / "etc/resolv.conf", follow_symlinks=True)
    shim = dest / "usr/local/sbin/systemctl"
    shim.write_text(SYSTEMCTL_SHIM)
    shim.chmod(0o755)
    return dest


def _chroot(root: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 900
            ) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
            "LANG": "C.UTF-8"}
    return subprocess.run(["chroot", str(root), *args], env={**base, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _calls(root: Path) -> list[str]:
    log = root / "var/log/systemctl.calls"
    calls = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return calls


def _snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Type, mode, owner, size, mtime (and link target) of everything the script may touch."""
    out: dict[str, tuple[object, ...]] = {}
    for top in ("etc", "opt", "var/lib/edge", "var/lib/dpkg", "usr/bin", "usr/lib/python3"):
        for dirpath, dirnames, filenames in os.walk(root / top):
            for name in [*dirnames, *filenames]:
                p = Path(dirpath) / name
                st = p.lstat()
                link = os.readlink(p) if p.is_symlink() else None
                out[str(p.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, link)
    return out


def _ids(root: Path) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    users = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
    groups = {line.split(":")[0]: line.split(":") for line in (root / "etc/group").read_text().splitlines()}
    return users, groups


@pytest.fixture(scope="module")
def installed(tmp_path_factory, edge_wheel, bundle_archive, agent_config, reference_images):
    """A Debian root after a refused run, a first run and a second run of install-on-pi.sh."""
    root = _copy_root(tmp_path_factory.mktemp("chroot") / "root")
    inbox = root / "root/in"
    inbox.mkdir()
    for src in (SCRIPT, edge_wheel, bundle_archive, agent_config, reference_images["cat.png"]):
        shutil.copy2(src, inbox / src.name)
    wheels = wheelhouse(project_requirements("tflite", "onnx", "camera", "device"))
    subprocess.run(["cp", "-al", str(wheels), str(root / "wheelhouse")], check=True)
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "/wheelhouse"}
    args = ["/bin/bash", "/root/in/install-on-pi.sh", "--wheel", f"/root/in/{edge_wheel.name}",
            "--bundle", f"/root/in/{bundle_archive.name}", "--config", f"/root/in/{agent_config.name}"]

    pristine = _snapshot(root)
    refused = _chroot(root, *[a if a != f"/root/in/{bundle_archive.name}" else "/root/in/nope.tar.gz" for a in args],
                      env=env)
    after_refused = _snapshot(root)

    # As if booted: systemd is running, so the script may start the service.
    (root / "run/systemd/system").mkdir(parents=True)
    first = _chroot(root, *args, env=env)
    first_calls = _calls(root)
    before_second = _snapshot(root)
    second = _chroot(root, *args, env=env)
    second_calls = _calls(root)
    after_second = _snapshot(root)
    return {
        "root": root, "refused": refused, "pristine": pristine, "after_refused": after_refused,
        "first": first, "first_calls": first_calls, "second": second, "second_calls": second_calls,
        "before_second": before_second, "after_second": after_second,
    }


def test_bad_input_changes_nothing(installed):
    proc = installed["refused"]
    assert proc.returncode == 1
    assert proc.stderr.strip() == "install-on-pi: error: /root/in/nope.tar.gz: no such bundle"
    assert installed["after_refused"] == installed["pristine"]


def test_first_run_installs_everything(installed, edge_wheel, bundle_archive, agent_config):
    root, proc = installed["root"], installed["first"]
    assert proc.returncode == 0, proc.stderr
    # apt: python3-venv (and no picamera2: this machine's profile has a USB camera).
    status = (root / "var/lib/dpkg/status").read_text()
    assert "Package: python3-venv\nStatus: install ok installed" in status
    assert "python3-picamera2" not in status
    # the user: a system account without login, in group video.
    users, groups = _ids(root)
    edge = users["edge"]
    assert int(edge[2]) < 1000 and edge[5] == "/var/lib/edge" and edge[6] == "/usr/sbin/nologin"
    assert groups["edge"][2] == edge[3]
    assert "edge" in groups["video"][3].split(",")
    uid, gid = int(edge[2]), int(groups["edge"][2])
    # the venv sees the system site-packages (picamera2 from apt on a Pi).
    cfg = (root / "opt/edge/venv/pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in cfg
    # config and bundle, byte for byte, with their owners and modes.
    conf = root / "etc/edge/agent.toml"
    assert conf.read_bytes() == agent_config.read_bytes()
    assert (conf.stat().st_mode & 0o777, conf.stat().st_uid, conf.stat().st_gid) == (0o640, 0, gid)
    bundle = root / "var/lib/edge/bundles" / bundle_archive.name
    assert bundle.read_bytes() == bundle_archive.read_bytes()
    assert (bundle.stat().st_uid, bundle.stat().st_gid) == (uid, gid)
    state = (root / "var/lib/edge").stat()
    assert (state.st_mode & 0o777, state.st_uid) == (0o750, uid)
    # the unit is the project's, installed from the wheel.
    assert (root / "etc/systemd/system/edge-agent.service").read_bytes() == (
        ROOT / "scripts/edge-agent.service").read_bytes()
    assert installed["first_calls"] == [
        "daemon-reload",
        "is-enabled --quiet edge-agent.service",
        "enable edge-agent.service",
        "restart --no-block edge-agent.service",
    ]
    # The extras follow the profile's backend preference (generic-x86_64: onnxruntime first).
    said = re.search(r"device profile generic-x86_64: extras \[([a-z0-9,_-]+)\]", proc.stderr)
    assert said is not None, proc.stderr
    assert said.group(1).split(",") == ["onnx", "tflite", "camera", "device"]


def test_the_profile_extras_are_importable(installed):
    proc = _chroot(installed["root"], "/opt/edge/venv/bin/python", "-c",
                   "import ai_edge_litert, onnxruntime, cv2, paho.mqtt.client, psutil, edge_runtime; "
                   "print(edge_runtime.__file__)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("/opt/edge/venv/lib/python3.11/site-packages/edge_runtime/")


def test_the_installed_runtime_classifies_with_the_installed_bundle(installed, bundle_archive):
    proc = _chroot(installed["root"], "/opt/edge/venv/bin/edge", "run",
                   f"/var/lib/edge/bundles/{bundle_archive.name}", "--source", "/root/in/cat.png")
    assert proc.returncode == 0, proc.stderr
    assert '"top_k":[{"label":"Egyptian cat"' in proc.stdout


def test_second_run_changes_nothing(installed):
    proc = installed["second"]
    assert proc.returncode == 0, proc.stderr
    assert "install-on-pi: nothing to change" in proc.stderr
    # Only read-only questions to systemd: no reload, no enable, no restart.
    assert installed["second_calls"] == ["is-enabled --quiet edge-agent.service",
                                         "is-active --quiet edge-agent.service"]
    before, after = installed["before_second"], installed["after_second"]
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    assert changed == []


def test_a_prepared_bookworm_image_sets_itself_up(tmp_path, pi_image, edge_wheel, mobilenet_bundle, agent_config,
                                                  ssh_keypair):
    """The first boot, replayed in a Debian root: firstrun.sh (the systemd.run= step), then the
    edge-firstboot.service step, each from the files prepare-image wrote to the boot partition."""
    from edge_deploy import DeviceSettings, prepare_image, read_ssh_keys, read_wifi
    from tests.support.pi_images import BOOKWORM_CMDLINE, extract_boot

    image = pi_image("bookworm")
    psk = tmp_path / "psk.txt"
    psk.write_text("correct horse battery staple\n")
    ssid = 'Greenhouse "North"'
    keys = read_ssh_keys(ssh_keypair[0])
    settings = DeviceSettings(hostname="greenhouse-1", user="grower", ssh_keys=keys,
                              wifi=read_wifi(ssid, psk, "DE"))
    prepare_image(image.path, bundle=mobilenet_bundle, config=agent_config, settings=settings, wheel=edge_wheel)

    root = _copy_root(tmp_path / "root")
    boot = root / "boot/firmware"
    extract_boot(image, boot)
    # What a stock Raspberry Pi OS has and minbase lacks: the first user (uid 1000), /etc/hosts, config dirs.
    assert _chroot(root, "useradd", "-m", "-u", "1000", "-s", "/bin/bash", "pi").returncode == 0
    (root / "etc/hostname").write_text("raspberrypi\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\traspberrypi\n")
    (root / "etc/ssh").mkdir()
    (root / "etc/wpa_supplicant").mkdir()
    (root / "run/systemd/system").mkdir(parents=True)

    proc = _chroot(root, "/bin/bash", "/boot/firmware/firstrun.sh")
    assert proc.returncode == 0, proc.stderr
    assert (root / "etc/hostname").read_text() == "greenhouse-1\n"
    assert "127.0.1.1\tgreenhouse-1" in (root / "etc/hosts").read_text()
    users, _groups = _ids(root)
    assert "pi" not in users and users["grower"][2] == "1000" and users["grower"][5] == "/home/grower"
    shadow = {line.split(":")[0]: line.split(":") for line in (root / "etc/shadow").read_text().splitlines()}
    assert shadow["grower"][1] == "*", "no password login: SSH key only"
    assert (root / "home/grower/.ssh/authorized_keys").read_text() == keys[0] + "\n"
    wpa = (root / "etc/wpa_supplicant/wpa_supplicant.conf").read_text()
    assert f"ssid={ssid.encode().hex()}\n" in wpa and f"psk={settings.wifi.psk}\n" in wpa and "country=DE" in wpa
    assert (root / "etc/systemd/system/edge-firstboot.service").read_bytes() == (
        boot / "edge/edge-firstboot.service").read_bytes()
    assert _calls(root) == ["enable ssh", "enable edge-firstboot.service"]
    assert not (boot / "firstrun.sh").exists()
    assert (boot / "cmdline.txt").read_text() == BOOKWORM_CMDLINE, "the one-shot hook removed itself"

    # Next boot: edge-firstboot.service runs its ExecStart once the network is up.
    wheels = wheelhouse(project_requirements("tflite", "onnx", "camera", "device"))
    subprocess.run(["cp", "-al", str(wheels), str(root / "wheelhouse")], check=True)
    unit = (root / "etc/systemd/system/edge-firstboot.service").read_text()
    exec_start = next(line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("ExecStart="))
    proc = _chroot(root, *exec_start.split(), env={"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "/wheelhouse"})
    assert proc.returncode == 0, proc.stderr
    installed_config = tomllib.loads((root / "etc/edge/agent.toml").read_text())
    assert installed_config == {**tomllib.loads(agent_config.read_text()),
                                "model": {"bundle": "/var/lib/edge/bundles/mobilenet_v2-v1.tar.gz"}}
    assert not (boot / "edge/agent.toml").exists(), "the config (it may hold a token) leaves the boot partition"
    assert (root / "var/lib/edge/bundles/mobilenet_v2-v1.tar.gz").is_file()
    assert _calls(root) == ["daemon-reload", "is-enabled --quiet edge-agent.service", "enable edge-agent.service",
                            "restart --no-block edge-agent.service", "disable edge-firstboot.service"]
