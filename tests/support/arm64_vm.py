"""An arm64 machine for a card image: qemu-system-aarch64 (``virt``, Cortex-A72, TCG), reached over SSH.

The Raspberry Pi firmware reads ``cmdline.txt`` from the FAT partition and hands it to the kernel; so
does :meth:`Arm64Vm.boot`, which reads it from the card with mtools at every power-on (a first-boot
hook added to it, or removed from it by the system itself, takes effect exactly as on a Pi). Two
translations only: ``console=serial0`` is the Pi firmware's alias for its UART, which on ``virt`` is
``ttyAMA0``, and ``console=tty1`` is dropped (the VM has no display). qemu runs with ``-no-reboot``:
a reboot of the guest ends the qemu process, and the next :meth:`boot` is the next power-on.

The serial console of every boot is appended to ``console_log``; SSH goes through qemu's user
networking (``hostfwd``), where the guest reaches the host's loopback as 10.0.2.2.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tests.support.net import free_port

__all__ = ["Arm64Vm", "BootRecord", "firmware_cmdline"]

_T = TypeVar("_T")


def firmware_cmdline(cmdline_txt: str) -> str:
    """The kernel command line the Pi firmware would pass for this cmdline.txt, for the ``virt`` machine."""
    words = []
    for word in cmdline_txt.split("\n", 1)[0].split():
        if word.startswith("console=serial0"):
            word = "console=ttyAMA0" + word[len("console=serial0"):]
        elif word.startswith("console=tty") and not word.startswith("console=ttyAMA"):
            continue
        words.append(word)
    return " ".join(words)


@dataclass
class BootRecord:
    cmdline: str
    started: float
    """time.monotonic() at power-on."""
    wall: float = field(default_factory=time.time)
    """time.time() at power-on (the guest's clock comes from the host's through the emulated RTC)."""
    ended: float | None = None


@dataclass
class Arm64Vm:
    image: Path
    kernel: Path
    initrd: Path
    boot_start: int
    ssh_key: Path
    console_log: Path
    user: str = "pi"
    memory_mib: int = 2048
    cpus: int = 2
    ssh_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    boots: list[BootRecord] = field(default_factory=list)

    # -- power ---------------------------------------------------------------------------------------

    def read_boot_file(self, name: str) -> str:
        env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
        out = subprocess.run(["mtype", "-i", f"{self.image}@@{self.boot_start}", f"::/{name}"], check=True,
                             env=env, capture_output=True)
        return out.stdout.decode("utf-8", errors="replace")

    def boot(self) -> BootRecord:
        """Power on: read cmdline.txt from the card as the firmware does, start qemu."""
        assert self.proc is None or self.proc.poll() is not None, "the machine is already running"
        cmdline = firmware_cmdline(self.read_boot_file("cmdline.txt"))
        qemu = shutil.which("qemu-system-aarch64")
        if qemu is None:
            raise RuntimeError("qemu-system-aarch64 not found: apt-get install qemu-system-arm")
        cmd = [
            qemu, "-M", "virt", "-cpu", "cortex-a72", "-smp", str(self.cpus), "-m", str(self.memory_mib),
            "-accel", "tcg,thread=multi", "-no-reboot", "-display", "none", "-monitor", "none",
            "-serial", "stdio",
            "-kernel", str(self.kernel), "-initrd", str(self.initrd), "-append", cmdline,
            "-drive", f"if=none,id=card,file={self.image},format=raw,cache=writeback",
            "-device", "virtio-blk-pci,drive=card",
            "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22",
            "-device", "virtio-net-pci,netdev=net0,romfile=",
            "-device", "virtio-rng-pci",
        ]
        self.console_log.parent.mkdir(parents=True, exist_ok=True)
        with self.console_log.open("ab") as log:
            log.write(f"\n===== power on {time.strftime('%H:%M:%S')}: {cmdline}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        record = BootRecord(cmdline, time.monotonic())
        self.boots.append(record)
        self._close_master()
        return record

    def wait_off(self, timeout: float) -> None:
        """Wait for the guest to reboot or power off (qemu exits: -no-reboot)."""
        assert self.proc is not None
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the machine did not reboot within {timeout:.0f} s; console:\n"
                                 + self.console_tail()) from None
        self.boots[-1].ended = time.monotonic()
        self._close_master()

    def kill(self) -> None:
        """Pull the plug: SIGKILL to qemu, nothing flushed by the guest."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        if self.boots and self.boots[-1].ended is None:
            self.boots[-1].ended = time.monotonic()
        self._close_master()

    def reboot(self, timeout: float = 600) -> BootRecord:
        self.ssh("sudo systemctl reboot --no-block", check=False, timeout=120)
        self.wait_off(timeout)
        return self.boot()

    def console_tail(self, chars: int = 6000) -> str:
        try:
            return self.console_log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # -- SSH -----------------------------------------------------------------------------------------

    @property
    def _control(self) -> Path:
        return self.console_log.parent / f".ssh-{self.ssh_port}"

    def _ssh_args(self, connect_timeout: int = 30) -> list[str]:
        return [
            "ssh", "-i", str(self.ssh_key), "-p", str(self.ssh_port), "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", f"ConnectTimeout={connect_timeout}", "-o", "ServerAliveInterval=15",
            "-o", "ServerAliveCountMax=8", "-o", "ControlMaster=auto", "-o", f"ControlPath={self._control}",
            "-o", "ControlPersist=600", f"{self.user}@127.0.0.1",
        ]

    def _close_master(self) -> None:
        if self._control.exists():
            subprocess.run(["ssh", "-o", f"ControlPath={self._control}", "-O", "exit", "x"], capture_output=True,
                           timeout=30)
            self._control.unlink(missing_ok=True)

    def ssh(self, command: str, *, check: bool = True, timeout: float = 300,
            input: bytes | None = None) -> subprocess.CompletedProcess[str]:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"the machine is off (running {command!r}); console:\n{self.console_tail()}")
        proc = subprocess.run([*self._ssh_args(), command], capture_output=True, timeout=timeout,
                              input=input.decode() if input is not None else None, text=True)
        if check and proc.returncode != 0:
            raise AssertionError(f"on the device: {command!r} exited {proc.returncode}\n"
                                 f"stdout: {proc.stdout[-4000:]}\nstderr: {proc.stderr[-4000:]}")
        return proc

    def root(self, command: str, **kw: object) -> subprocess.CompletedProcess[str]:
        """``command`` as root on the device (sudo, as the card's user may)."""
        return self.ssh("sudo sh -c " + shlex.quote(command), **kw)  # type: ignore[arg-type]

    def wait_ssh(self, timeout: float) -> float:
        """Wait until the device accepts the SSH key; seconds since power-on."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise AssertionError(f"the machine stopped while waiting for SSH; console:\n{self.console_tail()}")
            proc = subprocess.run([*self._ssh_args(connect_timeout=20), "true"], capture_output=True, text=True,
                                  timeout=120)
            if proc.returncode == 0:
                return time.monotonic() - self.boots[-1].started
            last = proc.stderr
            self._close_master()
            time.sleep(3)
        raise AssertionError(f"no SSH within {timeout:.0f} s ({last.strip()}); console:\n{self.console_tail()}")

    def wait(self, probe: Callable[[], _T | None], timeout: float, what: str, interval: float = 3.0) -> _T:
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; console:\n"
                                     + self.console_tail())
            time.sleep(interval)

    def close(self) -> None:
        self.kill()
