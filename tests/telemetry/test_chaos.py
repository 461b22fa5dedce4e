"""The proof: 20,000 records through a broker killed and restarted 5 times, a producer SIGKILLed
twice and restarted on the same outbox, an uplink that goes silent for a stretch, and an ingester
SIGKILLed once. Afterwards the cloud database holds every record exactly once.

Every step waits on a condition (producer progress, a detected disconnect, rows in the database),
with a bounded timeout; none waits on the clock.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from cloud_sync.db import make_engine, telemetry_records
from edge_device.telemetry import Outbox
from tests.support.net import wait_for
from tests.support.servers import Mosquitto
from tests.support.servers import MqttProxy as Proxy

ROOT = Path(__file__).resolve().parents[2]
TOTAL = 20_000
CHUNK = 25


class Proc:
    """A child process whose output lines are read by a thread (so pipes never fill)."""

    def __init__(self, args: list[str], *, stream: str) -> None:
        self.args = args
        self.stream = stream
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []

    def start(self) -> None:
        self.lines = []
        kw: dict[str, Any] = {"stdout": subprocess.PIPE} if self.stream == "stdout" else {"stderr": subprocess.PIPE}
        self.proc = subprocess.Popen([sys.executable, *self.args], cwd=ROOT, text=True, **kw)
        pipe = self.proc.stdout if self.stream == "stdout" else self.proc.stderr
        threading.Thread(target=self._read, args=(pipe,), daemon=True).start()

    def _read(self, pipe: Any) -> None:
        for line in pipe:
            self.lines.append(line.rstrip("\n"))

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill(signal.SIGTERM)


class Producer(Proc):
    def __init__(self, mqtt_url: str, outbox: Path) -> None:
        super().__init__(["-m", "tests.support.telemetry_producer", "--mqtt", mqtt_url, "--device", "greenhouse-1",
                          "--outbox", str(outbox), "--total", str(TOTAL), "--chunk", str(CHUNK)], stream="stdout")

    def state(self) -> dict[str, Any]:
        for line in reversed(self.lines):
            if line.startswith("{"):
                return dict(json.loads(line))
        return {"state": "none", "appended": -1, "disconnects": 0, "connect_failures": 0, "connected": False}

    def appended(self) -> int:
        return int(self.state()["appended"])

    def start_and_wait(self) -> dict[str, Any]:
        self.start()
        wait_for(lambda: self.state()["state"] != "none", 60, "the producer to start")
        return self.state()


class IngestCli(Proc):
    def __init__(self, mqtt_url: str, db_url: str) -> None:
        super().__init__(["-m", "edge_cli", "cloud", "ingest", "--mqtt", mqtt_url, "--db", db_url,
                          "--stats-interval", "0"], stream="stderr")

    def start_and_wait(self) -> None:
        self.start()
        wait_for(lambda: any("subscribed" in line for line in self.lines), 60,
                 "the ingester to subscribe: " + "\n".join(self.lines[-5:]))


def test_every_record_arrives_exactly_once_through_kills_restarts_and_an_outage(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    proxy = Proxy(broker.port)
    db_url = f"sqlite:///{tmp_path / 'cloud.db'}"
    outbox = tmp_path / "greenhouse-1.outbox.db"
    ingest = IngestCli(broker.url, db_url)
    producer = Producer(proxy.url, outbox)
    log: list[str] = []
    try:
        ingest.start_and_wait()
        producer.start_and_wait()

        def at(n: int) -> int:
            wait_for(lambda: producer.appended() >= n, 120, f"the producer to reach {n} records")
            return producer.appended()

        def broker_down_while(sig: int, more: int) -> None:
            (broker.kill if sig == signal.SIGKILL else broker.stop)()
            at(producer.appended() + more)  # the device keeps producing into its outbox
            broker.start()
            log.append(f"broker {signal.Signals(sig).name} at {producer.appended()}")

        def kill_producer() -> None:
            last = producer.appended()
            producer.kill()
            resumed = producer.start_and_wait()["started_at"]
            # every committed chunk is there; at most the one chunk committed after the last report
            assert last <= resumed <= last + CHUNK, (last, resumed)
            log.append(f"producer SIGKILL at {last}, resumed at {resumed}")

        at(1500)
        broker_down_while(signal.SIGKILL, 800)
        at(3500)
        kill_producer()
        at(5000)
        broker_down_while(signal.SIGTERM, 800)
        at(6500)
        # The uplink goes silent (no FIN): only the MQTT keepalive notices.
        wait_for(lambda: producer.state()["connected"], 60, "the device to be connected")
        before = producer.state()

        def noticed() -> bool:
            now = producer.state()
            return bool(now["disconnects"] > before["disconnects"]
                        or now["connect_failures"] > before["connect_failures"])
        proxy.freeze()
        wait_for(noticed, 60, "the device to notice the outage")
        at(producer.appended() + 500)
        proxy.thaw()
        log.append(f"uplink silent until {producer.appended()}")
        at(9000)
        ingest.kill()
        ingest.start_and_wait()
        log.append("ingester SIGKILL")
        at(11_000)
        broker_down_while(signal.SIGKILL, 800)
        at(13_000)
        kill_producer()
        at(15_500)
        broker_down_while(signal.SIGTERM, 800)
        at(17_500)
        broker_down_while(signal.SIGKILL, 800)
        wait_for(lambda: producer.state()["state"] in ("produced", "waiting"), 120, "all records produced")

        engine = make_engine(db_url)

        def distinct() -> int:
            with engine.connect() as c:
                return int(c.execute(select(func.count(func.distinct(telemetry_records.c.frame)))).scalar_one())

        wait_for(lambda: distinct() >= TOTAL, 180, f"{TOTAL} distinct frames in the cloud")

        def drained() -> bool:
            with Outbox(outbox, readonly=True) as ob:
                st = ob.stats()
            return st.pending["telemetry"] == 0 and st.sealed_rows == 0
        wait_for(drained, 120, "the device's outbox to be confirmed empty")

        with engine.connect() as c:
            frames = [r[0] for r in c.execute(select(telemetry_records.c.frame)
                                              .where(telemetry_records.c.device_id == "greenhouse-1"))]
        assert len(frames) == TOTAL, f"{len(frames) - len(set(frames))} duplicate(s)"
        assert sorted(frames) == list(range(TOTAL))
        with Outbox(outbox, readonly=True) as ob:
            st = ob.stats()
        assert st.appended["telemetry"] == TOTAL and st.dropped == {}
        assert len(log) == 9, log
    finally:
        producer.stop()
        ingest.stop()
        proxy.close()
        broker.stop()
