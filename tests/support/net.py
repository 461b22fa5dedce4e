"""Ports, polling, accept loops and stopping subprocesses. Every wait in the tests polls a condition
with a bounded timeout, so nothing relies on a fixed sleep to be correct."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(cond: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(interval)
    if cond():
        return
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def accept_until(sock: socket.socket, stop: threading.Event) -> Iterator[socket.socket]:
    """The connections ``sock`` (a listening socket with a short timeout) accepts until ``stop`` is
    set or the socket is closed."""
    while not stop.is_set():
        try:
            conn, _ = sock.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        yield conn


def stop_process(proc: subprocess.Popen[Any] | None, *, grace: float = 15, sig: int = signal.SIGTERM,
                 group: bool = False) -> None:
    """Sends ``sig`` to ``proc`` (to its process group with ``group``) if it runs, waits ``grace``
    seconds for it to exit, then SIGKILLs it."""
    if proc is None or proc.poll() is not None:
        return
    send = (lambda s: os.killpg(proc.pid, s)) if group else proc.send_signal
    send(sig)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait(10)
