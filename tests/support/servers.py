"""Real servers for the telemetry tests and the benchmark: Mosquitto, PostgreSQL, and two TCP
stand-ins for a broken network (a black hole that accepts and never answers; a broker that says
CONNACK and then never acknowledges anything).

Every wait here polls a condition with a bounded timeout; nothing relies on a fixed sleep.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(cond: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(interval)
    if cond():
        return
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Mosquitto:
    """A Mosquitto process on a free port, restartable on the same port and state directory."""

    def __init__(self, workdir: Path, *, port: int | None = None, extra: str = "", persistence: bool = True,
                 conf_file: Path | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.log_path = self.workdir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        if conf_file is not None:
            self.conf = conf_file
            return
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true"]
        if persistence:
            (self.workdir / "data").mkdir(exist_ok=True)
            lines += ["persistence true", f"persistence_location {self.workdir / 'data'}/"]
        if os.geteuid() == 0:
            lines.append("user root")  # stay root: the state directory belongs to the test's user
        lines.append(extra)
        self.conf = self.workdir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> Mosquitto:
        assert self.proc is None or self.proc.poll() is not None
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for(lambda: port_open(self.port) or self.proc is None or self.proc.poll() is not None, 15,
                 f"mosquitto on port {self.port}")
        if self.proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {self.log_text()[-2000:]}")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Postgres:
    """A throwaway PostgreSQL cluster (initdb in a temp dir, free port), run as a non-root user."""

    def __init__(self) -> None:
        self.bindir = self._bindir()
        self.port = free_port()
        self.tmp = Path(tempfile.mkdtemp(prefix="edge-pg-"))
        self.data = self.tmp / "data"
        self.sock = self.tmp / "sock"
        self.user: str | None = None
        if os.geteuid() == 0:
            # postgres refuses to run as root
            self.user = "postgres" if _user_exists("postgres") else "nobody"
            uid = pwd.getpwnam(self.user).pw_uid
            gid = pwd.getpwnam(self.user).pw_gid
            os.chmod(self.tmp, 0o755)
            self.sock.mkdir()
            os.chown(self.tmp, uid, gid)
            os.chown(self.sock, uid, gid)
        else:
            self.sock.mkdir()

    @staticmethod
    def _bindir() -> Path:
        for cand in (shutil.which("pg_ctl"), *sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))):
            if cand and Path(cand).exists():
                return Path(os.path.realpath(cand)).parent
        raise RuntimeError("PostgreSQL server binaries (pg_ctl, initdb) not found: apt-get install postgresql")

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120, cwd=self.tmp)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> Postgres:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                  "--no-sync", "-E", "UTF8")
        opts = (f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=on "
                "-c max_connections=50 -c shared_buffers=32MB")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l",
                  str(self.tmp / "pg.log"), "-w", "-t", "60", "start")
        return self

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.tmp, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


class SilentServer:
    """A TCP server that misbehaves like a broken uplink.

    ``mode="blackhole"``: accepts connections and never says a word (a connect attempt then waits
    for CONNACK until its timeout). ``mode="no-puback"``: answers CONNECT with CONNACK and then reads
    and counts PUBLISH packets without ever acknowledging them.
    """

    def __init__(self, mode: str = "blackhole", port: int | None = None) -> None:
        self.mode = mode
        self.port = port or free_port()
        self.publishes = 0
        self.connections = 0
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.listen(16)
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        self._sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            self._conns.append(conn)
            if self.mode == "no-puback":
                threading.Thread(target=self._no_puback, args=(conn,), daemon=True).start()

    def _no_puback(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        buf = b""
        while not self._stop.is_set():
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while True:  # parse fixed header + remaining length
                if len(buf) < 2:
                    break
                mult, length, i = 1, 0, 1
                while i < len(buf):
                    b = buf[i]
                    length += (b & 0x7F) * mult
                    mult *= 128
                    i += 1
                    if not b & 0x80:
                        break
                else:
                    break
                if len(buf) < i + length:
                    break
                ptype = buf[0] >> 4
                buf = buf[i + length:]
                try:
                    if ptype == 1:  # CONNECT
                        conn.sendall(b"\x20\x02\x00\x00")
                    elif ptype == 3:  # PUBLISH: swallowed, never acknowledged
                        self.publishes += 1
                    elif ptype == 8:  # SUBSCRIBE: grant nothing, keep it simple
                        pass
                    elif ptype == 12:  # PINGREQ
                        conn.sendall(b"\xd0\x00")
                except OSError:
                    return

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._sock.close()
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.close()
        self._thread.join(2)


class Proxy:
    """A TCP forwarder that can lose the uplink the way a greenhouse does: ``freeze()`` keeps every
    socket open but forwards nothing (no FIN, no RST: only a keepalive can tell), and new
    connections go nowhere; ``thaw()`` drops the frozen connections and forwards again."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.frozen = False
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.listen(64)
        self._sock.settimeout(0.1)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._conns.append(client)
                if self.frozen:
                    continue  # held open, never answered
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.append(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(0.1)
        while not self._stop.is_set():
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            if self.frozen:
                continue  # the link is down: bytes vanish
            try:
                dst.sendall(data)
            except OSError:
                break
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def freeze(self) -> None:
        self.frozen = True

    def thaw(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
            self.frozen = False
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                c.close()

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._sock.close()
        self.thaw()
