"""systemd's notify protocol, without libsystemd: datagrams to ``$NOTIFY_SOCKET``.

``READY=1`` once the model is loaded and the pipeline runs, ``STATUS=...`` for ``systemctl status``,
``WATCHDOG=1`` every half ``$WATCHDOG_USEC`` while the pipeline makes progress, ``STOPPING=1`` on the
way out. Without ``NOTIFY_SOCKET`` (not under systemd) every call is a no-op. A socket path starting
with ``@`` is in the abstract namespace.

The watchdog only pets systemd while frames come out of the pipeline: a pipeline hung on a stuck
camera or a full disk then stops the pings, and systemd restarts the service (``Restart=always``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping

__all__ = ["SdNotifier", "Watchdog"]

log = logging.getLogger(__name__)


class SdNotifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address: str | None = env.get("NOTIFY_SOCKET") or None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        self.watchdog_usec: int | None = int(usec) if usec.isdigit() and int(usec) > 0 else None
        if pid.isdigit() and int(pid) != os.getpid():
            self.watchdog_usec = None  # the watchdog is meant for another process of the unit
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self.sent = 0
        self.errors = 0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to send WATCHDOG=1: half the timeout systemd gave."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` (e.g. ``"READY=1"``, ``"STATUS=serving"``) as one datagram; False if not sent."""
        if self.address is None:
            return False
        addr = self.address
        if addr.startswith("@"):
            addr = "\0" + addr[1:]
        msg = "\n".join(f.replace("\n", " ") if not f.startswith("STATUS=") else f.split("\n")[0] for f in fields)
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                    # Never block a frame on systemd: a full socket buffer drops the message instead.
                    self._sock.setblocking(False)
                self._sock.sendto(msg.encode(), addr)
            except OSError as exc:
                # systemd gone or the socket replaced: not a reason to stop serving.
                self.errors += 1
                log.debug("sd_notify to %s failed: %s", self.address, exc)
                return False
            self.sent += 1
            return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *( [f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


class Watchdog:
    """Sends WATCHDOG=1 every ``interval`` while ``healthy()`` says the process makes progress."""

    def __init__(self, notifier: SdNotifier, healthy: Callable[[], bool], *, interval: float | None = None) -> None:
        self.notifier = notifier
        self.healthy = healthy
        self.interval = interval or notifier.watchdog_interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pings = 0
        self.withheld = 0

    def start(self) -> None:
        if self.interval is None or not self.notifier.enabled:
            return
        self._thread = threading.Thread(target=self._loop, name="sd-watchdog", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        assert self.interval is not None
        while not self._stop.wait(self.interval):
            if self.healthy():
                self.notifier.notify("WATCHDOG=1")
                self.pings += 1
            else:
                self.withheld += 1
                log.warning("watchdog: no progress in the pipeline; not petting systemd's watchdog")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
