"""A device for the chaos test: writes frames 0..N-1 through Telemetry, resuming after a SIGKILL
from the outbox's own count of committed telemetry records, and reports progress on stdout."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from types import FrameType

from edge_device.telemetry import open_telemetry
from tests.support.telemetry import fast_settings, frame


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mqtt", required=True)
    ap.add_argument("--device", required=True)
    ap.add_argument("--outbox", required=True)
    ap.add_argument("--total", type=int, required=True)
    ap.add_argument("--chunk", type=int, default=25)
    ap.add_argument("--pause", type=float, default=0.015)
    args = ap.parse_args()
    tel = open_telemetry(args.mqtt, args.device, args.outbox, **fast_settings(
        outbox_limits={"max_rows": 100_000}, batch={"max_records": 200}))
    stopping = False

    def on_term(signum: int, frame_: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    start = tel.outbox.stats().appended["telemetry"]
    i = start

    def report(state: str) -> None:
        pub = tel.publisher.stats
        print(json.dumps({"state": state, "appended": i, "started_at": start, "connected": pub.connected,
                          "disconnects": pub.disconnects, "connects": pub.connects,
                          "connect_failures": pub.connect_failures}), flush=True)

    report("started")
    while i < args.total and not stopping:
        n = min(args.chunk, args.total - i)
        for k in range(i, i + n):
            tel.write(frame(k))
        tel.commit(60)
        i += n
        report("producing")
        time.sleep(args.pause)
    report("produced")
    while not stopping:
        time.sleep(0.1)
        report("waiting")
    tel.close(drain_s=0)
    sys.exit(0)


if __name__ == "__main__":
    main()
