#!/usr/bin/env python3
"""Telemetry throughput: records per second delivered into the cloud database through a real
Mosquitto on loopback, with the durable outbox, against raw paho QoS 1 (one record per message, no
outbox), in the same run, through the same ingester (`edge cloud ingest`, its own process).

Also: the outbox's append latency (it sits on the inference path) and the sink's write rate with
the broker up and with the broker a black hole (the uplink is gone but TCP still accepts).

Prints a table, then one JSON object. Example:

    python scripts/bench_telemetry.py --records 20000
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from cloud_sync.db import make_engine, telemetry_records  # noqa: E402
from edge_device.telemetry import Outbox, open_telemetry  # noqa: E402
from tests.support.net import wait_for  # noqa: E402
from tests.support.servers import Mosquitto, SilentServer  # noqa: E402
from tests.support.telemetry import frame  # noqa: E402

CHUNK = 5000


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s)) - 1))]


class Ingest:
    def __init__(self, url: str, db: Path) -> None:
        self.db_url = f"sqlite:///{db}"
        self.proc = subprocess.Popen([sys.executable, "-m", "edge_cli", "cloud", "ingest", "--mqtt", url,
                                      "--db", self.db_url, "--stats-interval", "0"], cwd=ROOT,
                                     stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if "subscribed" in line:
                break
        threading.Thread(target=lambda: [None for _ in self.proc.stderr or []], daemon=True).start()
        self.engine = make_engine(self.db_url)

    def count(self, device: str) -> tuple[int, int]:
        with self.engine.connect() as c:
            n, d = c.execute(select(func.count(), func.count(func.distinct(telemetry_records.c.frame)))
                             .where(telemetry_records.c.device_id == device)).one()
        return int(n), int(d)

    def wait(self, device: str, n: int, timeout: float = 600) -> None:
        wait_for(lambda: self.count(device)[1] >= n, timeout, f"{n} records of {device}", interval=0.02)

    def settle(self, device: str, n: int, quiet_s: float = 3.0, timeout: float = 300) -> int:
        """For a path that may lose: wait for all n, or for the count to stop moving."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            got = self.count(device)[1]
            if got >= n:
                return got
            if got != last:
                last, since = got, time.monotonic()
            elif time.monotonic() - since > quiet_s:
                return got
            time.sleep(0.05)
        return last

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def run_outbox(broker: Mosquitto, ingest: Ingest, tmp: Path, n: int, window: int | None,
               device: str = "bench-outbox") -> dict[str, Any]:
    settings: dict[str, Any] = {"delivery": {"window": window}} if window else {}
    tel = open_telemetry(broker.url, device, tmp / f"{device}.db", **settings)
    assert tel.publisher  # started
    wait_for(lambda: tel.publisher.stats.connected, 30, "the device to connect")
    lat: list[float] = []
    t0 = time.perf_counter()
    for start in range(0, n, CHUNK):
        for i in range(start, min(n, start + CHUNK)):
            a = time.perf_counter()
            tel.write(frame(i))
            lat.append(time.perf_counter() - a)
        # A producer as fast as this loop would outrun any disk for good and the sink would shed
        # (counted) rather than block; a camera does not, so the loop lets each chunk commit.
        tel.commit(120)
    tel.publisher.request_flush()
    ingest.wait(device, n)
    elapsed = time.perf_counter() - t0
    total, distinct = ingest.count(device)
    tel.close()
    return {"records": n, "seconds": round(elapsed, 3), "records_per_s": round(n / elapsed),
            "in_db": total, "distinct": distinct, "lost": n - distinct, "duplicates": total - distinct,
            "write_p50_us": round(pct(lat, 50) * 1e6, 1), "write_p99_us": round(pct(lat, 99) * 1e6, 1),
            "messages": tel.publisher.stats.published}


def run_raw(broker: Mosquitto, ingest: Ingest, n: int, device: str = "bench-raw",
            lossy: bool = False) -> dict[str, Any]:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device)
    acked = threading.Semaphore(0)
    client.on_publish = lambda *a: acked.release()
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    seq0 = int(time.time() * 1e6)
    payloads = [json.dumps({"schema": 1, "device_id": device, "seq": seq0 + i, "uuid": str(uuid.uuid4()),
                            "kind": "telemetry", "created": None, "records": [frame(i)]}).encode()
                for i in range(n)]
    t0 = time.perf_counter()
    for p in payloads:
        client.publish(f"edge/{device}/telemetry", p, qos=1)
    for _ in range(n):
        acked.acquire(timeout=300)
    published = time.perf_counter() - t0
    if lossy:
        ingest.settle(device, n)
    else:
        ingest.wait(device, n)
    elapsed = time.perf_counter() - t0
    total, distinct = ingest.count(device)
    client.disconnect()
    client.loop_stop()
    return {"records": n, "seconds": round(elapsed, 3), "records_per_s": round(n / elapsed),
            "publish_only_records_per_s": round(n / published), "in_db": total, "distinct": distinct,
            "lost": n - distinct, "duplicates": total - distinct, "messages": n}


def run_append(tmp: Path, n: int) -> dict[str, Any]:
    ob = Outbox(tmp / "append.db", device_id="bench-append")
    lat = []
    for i in range(n):
        a = time.perf_counter()
        ob.append(frame(i))  # one transaction, fsync'd (synchronous=FULL) before it returns
        lat.append(time.perf_counter() - a)
    ob.close()
    return {"appends": n, "p50_ms": round(pct(lat, 50) * 1e3, 3), "p99_ms": round(pct(lat, 99) * 1e3, 3),
            "max_ms": round(max(lat) * 1e3, 3), "mean_ms": round(statistics.fmean(lat) * 1e3, 3)}


def run_write_rate(url: str, tmp: Path, name: str, n: int) -> dict[str, Any]:
    tel = open_telemetry(url, name, tmp / f"{name}.db", mqtt_options={"connect_timeout_s": 60.0})
    t0 = time.perf_counter()
    for start in range(0, n, CHUNK):
        for i in range(start, min(n, start + CHUNK)):
            tel.write(frame(i))
        tel.commit(120)
    elapsed = time.perf_counter() - t0
    dropped = tel.outbox.stats().dropped_total
    tel.close(drain_s=0)
    return {"records": n, "committed_per_s": round(n / elapsed), "dropped": dropped}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--appends", type=int, default=2_000)
    ap.add_argument("--window", type=int, help="Device window of unconfirmed messages (default: the library's).")
    ap.add_argument("--repeat", type=int, default=5,
                    help="Alternate the two paths this many times; best and median are reported (the machine may "
                         "be shared: the best run is the least disturbed one).")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as d:
        tmp = Path(d)
        # Throughput: a broker whose queue for the ingester is unbounded, so that raw paho (which
        # has no flow control) loses nothing and the two paths are compared on speed alone.
        broker = Mosquitto(tmp / "broker", persistence=False, extra="max_queued_messages 0").start()
        ingest = Ingest(broker.url, tmp / "cloud.db")
        try:
            raws, outboxes = [], []
            for k in range(args.repeat):
                raws.append(run_raw(broker, ingest, args.records, f"bench-raw-{k}"))
                outboxes.append(run_outbox(broker, ingest, tmp, args.records, args.window, f"bench-outbox-{k}"))
            raw = max(raws, key=lambda r: r["records_per_s"])
            outbox = max(outboxes, key=lambda r: r["records_per_s"])
            raw_median = statistics.median(r["records_per_s"] for r in raws)
            outbox_median = statistics.median(r["records_per_s"] for r in outboxes)
            append = run_append(tmp, args.appends)
            up = run_write_rate(broker.url, tmp, "rate-up", args.records)
            hole = SilentServer("blackhole")
            down = run_write_rate(hole.url, tmp, "rate-down", args.records)
            hole.close()
        finally:
            ingest.close()
            broker.stop()
        # Loss: the same raw publisher against Mosquitto's default max_queued_messages (1000).
        broker = Mosquitto(tmp / "broker-default", persistence=False).start()
        ingest = Ingest(broker.url, tmp / "cloud-default.db")
        try:
            raw_default = run_raw(broker, ingest, args.records, "bench-raw-default", lossy=True)
        finally:
            ingest.close()
            broker.stop()
    ratio = outbox["records_per_s"] / raw["records_per_s"]
    ratio_median = outbox_median / raw_median
    lost = {"outbox": sum(r["lost"] for r in outboxes), "raw": sum(r["lost"] for r in raws)}
    dup = {"outbox": sum(r["duplicates"] for r in outboxes), "raw": sum(r["duplicates"] for r in raws)}
    rows = [
        ("outbox (durable, batched, confirmed)", outbox["records_per_s"], round(outbox_median), outbox["messages"],
         lost["outbox"], dup["outbox"]),
        ("raw paho QoS 1, 1 record/message", raw["records_per_s"], round(raw_median), raw["messages"], lost["raw"],
         dup["raw"]),
    ]
    print(f"{args.records:,d} records per run, {args.repeat} run(s) per path, alternating; records/s into the DB")
    print(f"{'path':40s} {'best':>8s} {'median':>8s} {'messages':>9s} {'lost':>5s} {'dup':>4s}")
    for name, best, med, msgs, lost_n, dup_n in rows:
        print(f"{name:40s} {best:>8,d} {med:>8,d} {msgs:>9,d} {lost_n:>5d} {dup_n:>4d}")
    print(f"ratio outbox / raw paho: best {ratio:.1f}x, median {ratio_median:.1f}x  (raw paho publish-only: "
          f"{raw['publish_only_records_per_s']:,d} records/s)")
    print(f"Outbox.append (one durable commit): p50 {append['p50_ms']} ms, p99 {append['p99_ms']} ms")
    print(f"sink write(): p50 {outbox['write_p50_us']} us, p99 {outbox['write_p99_us']} us")
    print(f"sink write+commit rate: broker up {up['committed_per_s']:,d}/s, broker a black hole "
          f"{down['committed_per_s']:,d}/s")
    print(f"raw paho against Mosquitto's default queue limit: {raw_default['lost']:,d} of {args.records:,d} "
          "records lost, every one PUBACKed (the chaos tests show the outbox losing none)")
    print(json.dumps({"bench": "telemetry", "machine": platform.machine(), "python": platform.python_version(),
                      "outbox": outbox, "raw_paho": raw, "ratio": round(ratio, 2),
                      "ratio_median": round(ratio_median, 2), "runs": {"outbox": outboxes, "raw_paho": raws},
                      "append": append,
                      "write_rate_broker_up": up, "write_rate_broker_down": down,
                      "raw_paho_default_queue": raw_default}))


if __name__ == "__main__":
    main()
