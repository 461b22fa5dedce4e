"""The real servers every test folder and the benchmarks start: Mosquitto, PostgreSQL, moto's S3,
a TCP proxy that breaks the network on demand, and a TCP stand-in for a broken broker (a black hole
that accepts and never answers; a broker that says CONNACK and then never acknowledges anything).
One implementation of each: the fixtures in :mod:`tests.support.plugin` wrap these.

Every wait here polls a condition with a bounded timeout; nothing relies on a fixed sleep.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.net import accept_until, free_port, port_open, stop_process, wait_for

__all__ = ["Mosquitto", "MqttProxy", "Postgres", "SilentServer", "TcpProxy", "free_port", "port_open",
           "start_moto_s3", "wait_for"]

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


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

    host = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def __iter__(self) -> Iterator[object]:
        # Unpacks as a socket address, ``host, port = mosquitto``: what the cloud service tests take.
        return iter((self.host, self.port))

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
        stop_process(self.proc, sig=sig)
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
    """A throwaway PostgreSQL cluster (initdb in a temp dir, free port), run as a non-root user.

    ``url`` is its ``postgres`` database; calling it, ``postgres()``, creates a fresh database and
    returns its SQLAlchemy URL, so that tests sharing the cluster never see each other's tables."""

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
                "-c max_connections=100 -c shared_buffers=32MB")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l",
                  str(self.tmp / "pg.log"), "-w", "-t", "60", "start")
        self._made = 0
        return self

    def new_database(self) -> str:
        import psycopg

        self._made += 1
        name = f"edge{self._made}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    __call__ = new_database

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
        for conn in accept_until(self._sock, self._stop):
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




class TcpProxy:
    """Forwards 127.0.0.1:<port> to 127.0.0.1:<upstream_port>, misbehaving as told.

    ``set(mode)`` applies to each new connection: ``pass``, ``delay`` (hold the connection
    ``delay_s`` before forwarding), ``reset`` (answer with a TCP RST), ``blackhole`` (accept, read,
    never answer). ``rate`` (bytes/s) limits the answers' bandwidth. ``freeze()`` loses the uplink
    the way a greenhouse does: every socket stays open but nothing is forwarded (no FIN, no RST:
    only a keepalive can tell) and new connections go nowhere; ``thaw()`` drops every connection
    and forwards again.
    """

    scheme = "http"

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.mode = "pass"
        self.delay_s = 0.0
        self.rate: float | None = None
        self.frozen = False
        self.connections = 0
        self.bytes_down = 0  # bytes sent from the upstream server to the client
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        # Short timeouts everywhere: closing a socket does not wake a thread blocked on it.
        self._sock.settimeout(0.1)
        self.port = int(self._sock.getsockname()[1])
        self._closing = threading.Event()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def set(self, mode: str, *, delay_s: float = 0.0) -> None:
        self.mode, self.delay_s = mode, delay_s

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

    def _track(self, s: socket.socket) -> None:
        with self._lock:
            self._conns.append(s)

    def _accept(self) -> None:
        for conn in accept_until(self._sock, self._closing):
            self.connections += 1
            self._track(conn)
            threading.Thread(target=self._handle, args=(conn, self.mode, self.delay_s), daemon=True).start()

    def _handle(self, conn: socket.socket, mode: str, delay_s: float) -> None:
        try:
            if self.frozen:
                return  # held open, never answered, until thaw() drops it
            if mode == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                return
            if mode == "blackhole":
                with contextlib.suppress(OSError):
                    while conn.recv(65536):
                        pass
                conn.close()
                return
            if mode == "delay" and self._closing.wait(delay_s):
                conn.close()
                return
            try:
                up = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                conn.close()  # the upstream is down: the client sees the connection closed
                return
            self._track(up)
            threading.Thread(target=self._pump, args=(conn, up, None), daemon=True).start()
            self._pump(up, conn, self.rate, count=True)
        except OSError:
            conn.close()

    def _pump(self, src: socket.socket, dst: socket.socket, rate: float | None, count: bool = False) -> None:
        try:
            while not self._closing.is_set():
                # select, not a socket timeout: a timeout would also cut sendall to a slow reader
                if not select.select([src], [], [], 0.1)[0]:
                    continue
                data = src.recv(16384)
                if not data:
                    break
                if self.frozen:
                    continue  # the link is down: bytes vanish
                if rate:
                    time.sleep(len(data) / rate)
                dst.sendall(data)
                if count:
                    self.bytes_down += len(data)
        except (OSError, ValueError):  # ValueError: select() on a socket thaw() or close() closed
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._closing.set()
        with contextlib.suppress(OSError):
            self._sock.close()
        self.thaw()


class MqttProxy(TcpProxy):
    """The same proxy in front of a broker: its ``url`` is what a device's MQTT client takes."""

    scheme = "mqtt"


@contextlib.contextmanager
def start_moto_s3() -> Iterator[str]:
    """moto's S3 server as a real HTTP endpoint on loopback (MinIO binaries cannot be fetched here)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: port_open(port) or proc.poll() is not None, 60, f"moto's S3 server on port {port}",
                 interval=0.1)
        if proc.poll() is not None:
            raise RuntimeError("moto server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
