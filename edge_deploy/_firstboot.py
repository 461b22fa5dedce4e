"""The files that make a Raspberry Pi OS image set itself up on first boot.

Two mechanisms exist, and the image's boot partition tells which one it uses:

- ``cloud-init`` (Raspberry Pi OS from late 2025, Trixie-based): the NoCloud files ``user-data``,
  ``network-config`` and ``meta-data`` on the boot partition.
- ``firstrun`` (Bookworm images): ``cmdline.txt`` ends with ``systemd.run=.../firstrun.sh`` so
  systemd runs that script once instead of the normal boot, and reboots; the script removes itself
  and the cmdline.txt entry (the mechanism Raspberry Pi Imager uses).

Either way the system settings (host name, user, SSH key, WiFi) are applied by the OS's own first-boot
tooling, and the edge software is installed later by ``edge-firstboot.service``, a one-shot unit
that waits for the network (pip needs it), runs ``install-on-pi.sh`` from the boot partition with the
wheel, bundle and config written next to it, retries on failure, and disables itself when done.

Every generator here is a pure function of its inputs, so preparing the same image twice with the
same inputs writes the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from dataclasses import dataclass
from typing import Literal

from ._settings import DeviceSettings

__all__ = [
    "BOOT_MOUNT",
    "CLOUD_INIT_FILES",
    "EDGE_DIR",
    "FIRSTBOOT_UNIT_NAME",
    "FIRSTRUN_ARGS",
    "InstallFile",
    "Mechanism",
    "Payload",
    "cloud_init_files",
    "cmdline_with_firstrun",
    "cmdline_without_firstrun",
    "firstboot_script",
    "firstboot_unit",
    "firstrun_script",
]

Mechanism = Literal["cloud-init", "firstrun"]

#: Where Raspberry Pi OS (Bookworm and later) mounts the FAT boot partition.
BOOT_MOUNT = "/boot/firmware"
#: Folder on the boot partition that holds everything edge-specific.
EDGE_DIR = "edge"
FIRSTBOOT_UNIT_NAME = "edge-firstboot.service"
CLOUD_INIT_FILES = ("user-data", "network-config", "meta-data")
FIRSTRUN_ARGS = (
    f"systemd.run={BOOT_MOUNT}/firstrun.sh systemd.run_success_action=reboot systemd.unit=kernel-command-line.target"
)
_HEADER = "Written by `edge pi prepare-image`."
# The groups Raspberry Pi OS gives its first user (as Raspberry Pi Imager does).
_USER_GROUPS = "users,adm,dialout,audio,netdev,video,plugdev,cdrom,games,input,gpio,spi,i2c,render,sudo"


@dataclass(frozen=True)
class InstallFile:
    """A file the config names (a trusted key, the device token...) and where the install step puts it."""

    card: str
    """Its path inside the boot partition's ``edge/`` folder, e.g. ``keys/release.pub``."""
    device: str
    """Its absolute path on the device, as agent.toml names it, e.g. ``/etc/edge/keys/release.pub``."""
    mode: str
    owner: str
    group: str
    secret: bool = False
    """Removed from the boot partition (readable by every user) once installed."""


@dataclass(frozen=True)
class Payload:
    """File names, inside the boot partition's ``edge/`` folder, of what the install step uses."""

    wheel: str
    bundle: str
    config: str = "agent.toml"
    installer: str = "install-on-pi.sh"
    script: str = "firstboot.sh"
    unit: str = FIRSTBOOT_UNIT_NAME
    files: tuple[InstallFile, ...] = ()


def _q(value: str) -> str:
    return shlex.quote(value)


def _y(value: str) -> str:
    # A JSON string is a valid YAML double-quoted scalar: nothing in it can break out of the value.
    return json.dumps(value, ensure_ascii=False)


# -- the edge install step (both mechanisms) ---------------------------------------------------------


def firstboot_script(payload: Payload) -> str:
    edge = '"$HERE"'
    lines = [
        "#!/bin/sh",
        f"# {_HEADER}",
        f"# Run by {FIRSTBOOT_UNIT_NAME} once the network is up: installs the edge runtime, the model bundle,",
        "# the agent config and edge-agent.service with install-on-pi.sh, puts the files the config names",
        "# (trusted keys, the device token) where it names them, starts the agent, then disables itself.",
        "set -eu",
        'HERE=$(dirname "$(readlink -f "$0")")',
        # --no-start: the agent must not start before the keys and the token it reads are in place.
        f"/bin/bash {edge}/{_q(payload.installer)} --no-start \\",
        f"    --wheel {edge}/{_q(payload.wheel)} \\",
        f"    --bundle {edge}/{_q(payload.bundle)} \\",
        f"    --config {edge}/{_q(payload.config)}",
    ]
    if payload.files:
        # After the installer, which creates the user edge and /etc/edge. umask 077: a secret is never
        # readable by others, not even between its creation and the chmod.
        lines.append("umask 077")
        parents = sorted({f.device.rsplit("/", 1)[0] for f in payload.files} - {"/etc/edge"})
        lines += [f"install -d -m 0755 -o root -g root {_q(d)}" for d in parents]
        lines += [
            f"install -m {f.mode} -o {_q(f.owner)} -g {_q(f.group)} {edge}/{_q(f.card)} {_q(f.device)}"
            for f in payload.files
        ]
    lines += [
        "systemctl restart --no-block edge-agent.service",
        f"systemctl disable {FIRSTBOOT_UNIT_NAME}",
    ]
    # The config and the secrets may hold credentials and every user can read the boot partition:
    # only /etc/edge keeps them. Last, so that a run that failed before here can be retried whole.
    gone = [payload.config, *(f.card for f in payload.files if f.secret)]
    lines.append("rm -f " + " ".join(f"{edge}/{_q(name)}" for name in gone))
    return "\n".join(lines) + "\n"


def firstboot_unit(payload: Payload) -> str:
    return f"""# {_HEADER}
[Unit]
Description=Install the edge runtime and agent from the boot partition (first boot)
Wants=network-online.target
After=network-online.target
ConditionPathExists={BOOT_MOUNT}/{EDGE_DIR}/{payload.script}

[Service]
Type=oneshot
ExecStart=/bin/sh {BOOT_MOUNT}/{EDGE_DIR}/{payload.script}
# pip downloads wheels on first boot: retry while the network or the index is not there yet.
Restart=on-failure
RestartSec=60
TimeoutStartSec=1h

[Install]
WantedBy=multi-user.target
"""


def _enable_firstboot_commands(payload: Payload) -> list[str]:
    unit_src = f"{BOOT_MOUNT}/{EDGE_DIR}/{payload.unit}"
    return [
        f"install -m 0644 {unit_src} /etc/systemd/system/{FIRSTBOOT_UNIT_NAME}",
        f"systemctl enable {FIRSTBOOT_UNIT_NAME}",
    ]


# -- cloud-init (current images) ---------------------------------------------------------------------


def cloud_init_files(settings: DeviceSettings, payload: Payload) -> dict[str, bytes]:
    """``user-data``, ``meta-data`` and, with WiFi, ``network-config`` for cloud-init's NoCloud source."""
    lines = ["#cloud-config", f"# {_HEADER}"]
    if settings.hostname:
        lines += [f"hostname: {_y(settings.hostname)}", "manage_etc_hosts: true"]
    lines += [
        "users:",
        f"- name: {_y(settings.user)}",
        f"  groups: {_y(_USER_GROUPS)}",
        '  shell: "/bin/bash"',
        # Key-only login; sudo without password as Raspberry Pi OS gives its first user.
        "  lock_passwd: true",
        '  sudo: "ALL=(ALL) NOPASSWD:ALL"',
    ]
    if settings.ssh_keys:
        lines.append("  ssh_authorized_keys:")
        lines += [f"  - {_y(key)}" for key in settings.ssh_keys]
        lines += ["enable_ssh: true", "ssh_pwauth: false"]
    # runcmd runs late in the first boot; the unit it starts waits for the network by itself.
    lines.append("runcmd:")
    commands = [*_enable_firstboot_commands(payload), f"systemctl start --no-block {FIRSTBOOT_UNIT_NAME}"]
    lines += [f"- [sh, -c, {_y(cmd)}]" for cmd in commands]
    user_data = "\n".join(lines) + "\n"

    files: dict[str, bytes] = {"user-data": user_data.encode()}
    network = ""
    if settings.wifi is not None:
        w = settings.wifi
        network = "\n".join([
            f"# {_HEADER}",
            "network:",
            "  version: 2",
            "  wifis:",
            "    wlan0:",
            "      dhcp4: true",
            "      optional: true",
            f"      regulatory-domain: {_y(w.country)}",
            "      access-points:",
            f"        {_y(w.ssid)}:",
            f"          password: {_y(w.psk)}",
        ]) + "\n"
        files["network-config"] = network.encode()
    # cloud-init runs its once-per-instance modules again when the instance id changes, so the id
    # follows the content: the same settings give the same id, new settings are applied.
    digest = hashlib.sha256((user_data + network).encode()).hexdigest()[:16]
    files["meta-data"] = f"# {_HEADER}\ninstance-id: edge-{digest}\n".encode()
    return files


# -- firstrun.sh (Bookworm images) -------------------------------------------------------------------


def cmdline_without_firstrun(cmdline: str) -> str:
    """cmdline.txt's single line without a ``systemd.run=`` first-boot hook (ours or Imager's)."""
    first = cmdline.splitlines()[0] if cmdline.strip() else ""
    # Imager's own clean-up removes everything from " systemd.run" on, so the hook is always last.
    return re.sub(r"\s+systemd\.run=.*$", "", first.rstrip())


def cmdline_with_firstrun(cmdline: str) -> str:
    base = cmdline_without_firstrun(cmdline)
    return f"{base} {FIRSTRUN_ARGS}\n" if base else f"{FIRSTRUN_ARGS}\n"


def firstrun_script(settings: DeviceSettings, payload: Payload) -> str:
    """The script cmdline.txt runs once; its steps follow Raspberry Pi Imager's firstrun.sh."""
    custom = "/usr/lib/raspberrypi-sys-mods/imager_custom"
    out: list[str] = [
        "#!/bin/bash",
        f"# {_HEADER}",
        "# Run once by systemd.run= in cmdline.txt: applies the first-boot settings, removes itself and",
        "# the cmdline.txt hook, and the system reboots into the normal boot.",
        "set +e",
        "",
    ]
    if settings.hostname:
        # Validated to [a-z0-9-]: safe unquoted in the shell and in the sed expression.
        h = settings.hostname
        out += [
            "CURRENT_HOSTNAME=$(tr -d ' \\t\\n\\r' </etc/hostname)",
            f"if [ -f {custom} ]; then",
            f"   {custom} set_hostname {h}",
            "else",
            f"   echo {h} >/etc/hostname",
            f'   sed -i "s/127.0.1.1.*$CURRENT_HOSTNAME/127.0.1.1\\t{h}/g" /etc/hosts',
            "fi",
        ]
    out += [
        "FIRSTUSER=$(getent passwd 1000 | cut -d: -f1)",
        "FIRSTUSERHOME=$(getent passwd 1000 | cut -d: -f6)",
    ]
    if settings.ssh_keys:
        keys = " ".join(_q(k) for k in settings.ssh_keys)
        out += [
            f"if [ -f {custom} ]; then",
            f"   {custom} enable_ssh -k {keys}",
            "else",
            '   install -o "$FIRSTUSER" -m 700 -d "$FIRSTUSERHOME/.ssh"',
            f"   printf '%s\\n' {keys} >\"$FIRSTUSERHOME/.ssh/authorized_keys\"",
            '   chown "$FIRSTUSER:$FIRSTUSER" "$FIRSTUSERHOME/.ssh/authorized_keys"',
            '   chmod 600 "$FIRSTUSERHOME/.ssh/authorized_keys"',
            "   echo 'PasswordAuthentication no' >>/etc/ssh/sshd_config",
            "   systemctl enable ssh",
            "fi",
        ]
    u = _q(settings.user)
    # '*' matches no password: login is by SSH key only (sudo needs none on Raspberry Pi OS). Setting
    # the user also marks the system configured, so the interactive first-boot wizard does not run.
    out += [
        "if [ -f /usr/lib/userconf-pi/userconf ]; then",
        f"   /usr/lib/userconf-pi/userconf {u} '*'",
        "else",
        "   echo \"$FIRSTUSER:*\" | chpasswd -e",
        f'   if [ "$FIRSTUSER" != {u} ]; then',
        f'      usermod -l {u} "$FIRSTUSER"',
        f'      usermod -m -d /home/{settings.user} {u}',
        f'      groupmod -n {u} "$FIRSTUSER"',
        "      if [ -f /etc/sudoers.d/010_pi-nopasswd ]; then",
        f'         sed -i "s/^$FIRSTUSER /{settings.user} /" /etc/sudoers.d/010_pi-nopasswd',
        "      fi",
        "   fi",
        "fi",
    ]
    if settings.wifi is not None:
        w = settings.wifi
        # Hex is wpa_supplicant's exact form for any SSID: no quoting rules to get wrong.
        ssid_hex = w.ssid.encode("utf-8").hex()
        out += [
            f"if [ -f {custom} ]; then",
            f"   {custom} set_wlan {_q(w.ssid)} {_q(w.psk)} {_q(w.country)}",
            "else",
            "cat >/etc/wpa_supplicant/wpa_supplicant.conf <<'WPAEOF'",
            f"country={w.country}",
            "ctrl_interface=DIR=/var/run/wpa_supplicant GROUP=netdev",
            "ap_scan=1",
            "update_config=1",
            "network={",
            f"\tssid={ssid_hex}",
            f"\tpsk={w.psk}",
            "}",
            "WPAEOF",
            "   chmod 600 /etc/wpa_supplicant/wpa_supplicant.conf",
            "   rfkill unblock wifi",
            "   for filename in /var/lib/systemd/rfkill/*:wlan ; do",
            '       echo 0 > "$filename"',
            "   done",
            "fi",
        ]
    out += [
        "# The edge software is installed on the next (normal) boot, once the network is up.",
        *_enable_firstboot_commands(payload),
        f"rm -f {BOOT_MOUNT}/firstrun.sh",
        f"sed -i 's| systemd.run.*||g' {BOOT_MOUNT}/cmdline.txt",
        "exit 0",
    ]
    return "\n".join(out) + "\n"
