"""`edge outbox stats|peek|purge` and `edge cloud ingest` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from edge_device.telemetry import Outbox

ROOT = Path(__file__).resolve().parents[2]


def edge(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_cli", *args], cwd=ROOT, capture_output=True, text=True,
                          input=stdin, timeout=120)


def filled(path: Path) -> Path:
    with Outbox(path, device_id="pi-1") as ob:
        ob.append_many([{"frame": i} for i in range(5)])
        ob.append_many([{"cpu": i} for i in range(3)], "metrics")
        ob.append({"event": "boot"}, "events")
    return path


def test_stats_and_peek(tmp_path: Path) -> None:
    p = filled(tmp_path / "o.db")
    r = edge("outbox", "stats", "--outbox", str(p))
    assert r.returncode == 0, r.stderr
    assert "(device pi-1)" in r.stdout and "rows        9" in r.stdout and "dropped     none" in r.stdout
    js = json.loads(edge("outbox", "stats", "--outbox", str(p), "--json").stdout)
    assert js["pending"] == {"metrics": 3, "telemetry": 5, "events": 1} and js["dropped_total"] == 0
    lines = edge("outbox", "peek", "--outbox", str(p), "--kind", "telemetry", "-n", "2").stdout.splitlines()
    assert [json.loads(line)["record"] for line in lines] == [{"frame": 0}, {"frame": 1}]
    env = {**os.environ, "EDGE_OUTBOX": str(p)}
    r = subprocess.run([sys.executable, "-m", "edge_cli", "outbox", "peek", "-n", "1"], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    assert json.loads(r.stdout)["record"] == {"frame": 0}


def test_purge_asks_refuses_while_in_use_and_counts(tmp_path: Path) -> None:
    p = filled(tmp_path / "o.db")
    r = edge("outbox", "purge", "--outbox", str(p), stdin="n\n")
    assert r.returncode != 0
    running = Outbox(p, device_id="pi-1")  # as if `edge run` had it open
    r = edge("outbox", "purge", "--outbox", str(p), "--yes")
    assert r.returncode == 1
    assert r.stderr.startswith("error: ") and f"(pid {os.getpid()})" in r.stderr and "Traceback" not in r.stderr
    running.close()
    r = edge("outbox", "purge", "--outbox", str(p), "--kind", "metrics", "--yes")
    assert r.returncode == 0 and "purged 3 record(s)" in r.stdout
    js = json.loads(edge("outbox", "stats", "--outbox", str(p), "--json").stdout)
    assert js["pending"]["metrics"] == 0 and js["dropped"] == {"metrics": {"purged": 3}}


def test_errors_are_one_line(tmp_path: Path) -> None:
    r = edge("outbox", "stats", "--outbox", str(tmp_path / "missing.db"))
    assert r.returncode == 1 and r.stderr == f"error: {tmp_path / 'missing.db'}: no outbox here\n"
    (tmp_path / "junk.db").write_bytes(b"x" * 4096)
    r = edge("outbox", "stats", "--outbox", str(tmp_path / "junk.db"))
    assert r.returncode == 1 and "junk.db" in r.stderr and "Traceback" not in r.stderr
    r = edge("cloud", "ingest", "--mqtt", "mqtt://127.0.0.1:1", "--db", "mysql://u@h/db")
    assert r.returncode == 1 and "only SQLite and PostgreSQL" in r.stderr and "Traceback" not in r.stderr
    r = edge("cloud", "ingest", "--mqtt", "ftp://h", "--db", f"sqlite:///{tmp_path / 'c.db'}")
    assert r.returncode == 1 and "scheme must be mqtt://" in r.stderr
    r = edge("cloud", "ingest", "--mqtt", "mqtt://h", "--db", "not a url")
    assert r.returncode == 1 and "is not a database URL" in r.stderr
