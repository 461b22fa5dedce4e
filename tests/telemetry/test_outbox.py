"""The SQLite outbox on its own: durability settings, sealing, bounds, TTL, locking, bad input."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edge_device.telemetry import MessageEnvelope, Outbox, OutboxError, OutboxLockedError, RecordError


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def seal_all(ob: Outbox, **kw: int) -> list:
    out = []
    while (m := ob.seal(max_records=kw.get("max_records", 1000), max_bytes=kw.get("max_bytes", 1 << 20),
                        linger_s=0, force=True)) is not None:
        out.append(m)
    return out


def test_committed_rows_survive_power_loss_settings(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", device_id="dev1")
    ob.append({"frame": 1})
    db = sqlite3.connect(tmp_path / "o.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # synchronous is per connection: check the outbox's own connection (2 = FULL)
    assert ob._db.execute("PRAGMA synchronous").fetchone()[0] == 2
    ob.close()


def test_seal_builds_a_schema_valid_message_and_resend_is_byte_identical(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", device_id="dev1")
    ob.append_many([{"frame": i, "score": 0.5} for i in range(10)])
    msg = ob.seal(max_records=4, max_bytes=1 << 20, linger_s=0, force=True)
    assert msg is not None and msg.n_records == 4 and msg.kind == "telemetry"
    env = MessageEnvelope.model_validate_json(msg.payload)
    assert env.device_id == "dev1" and env.seq == msg.seq and [r["frame"] for r in env.records] == [0, 1, 2, 3]
    ob.close()
    # After a crash the same message (same seq, uuid, records) is rebuilt for the resend.
    ob = Outbox(tmp_path / "o.db", device_id="dev1")
    assert ob.sealed_seqs() == [msg.seq]
    again = ob.load_message(msg.seq)
    assert again is not None and again.payload == msg.payload
    nxt = ob.seal(max_records=100, max_bytes=1 << 20, linger_s=0, force=True)
    assert nxt is not None and nxt.seq == msg.seq + 1 and nxt.n_records == 6
    assert ob.confirm([msg.seq, nxt.seq]) == 10
    st = ob.stats()
    assert st.rows == 0 and st.confirmed_total == 10 and st.appended_total == 10
    ob.close()


def test_seq_keeps_increasing_across_purge_and_restart(tmp_path: Path) -> None:
    clock = Clock()
    ob = Outbox(tmp_path / "o.db", device_id="dev1", clock=clock)
    first = ob.stats().next_seq
    assert first == int(clock.t * 1_000_000)  # a recreated outbox starts above any earlier one
    ob.append({"a": 1})
    s1 = seal_all(ob)[0].seq
    ob.purge()
    ob.close()
    ob = Outbox(tmp_path / "o.db", device_id="dev1", clock=clock)
    ob.append({"a": 2})
    assert seal_all(ob)[0].seq == s1 + 1
    ob.close()


def test_batches_respect_record_and_byte_bounds_and_linger(tmp_path: Path) -> None:
    clock = Clock()
    ob = Outbox(tmp_path / "o.db", device_id="dev1", clock=clock)
    ob.append_many([{"pad": "x" * 1000, "i": i} for i in range(50)])
    # not full, not old enough: nothing is due yet
    assert ob.seal(max_records=100, max_bytes=1 << 20, linger_s=1.0) is None
    clock.t += 1.5
    msgs = []
    while (m := ob.seal(max_records=100, max_bytes=8192, linger_s=1.0)) is not None:
        msgs.append(m)
    assert all(len(m.payload) <= 8192 for m in msgs)
    assert sum(m.n_records for m in msgs) == 50 and len(msgs) > 5
    ob.close()


def test_full_outbox_drops_oldest_of_lowest_priority_first(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", device_id="dev1", max_rows=10)
    ob.append_many([{"m": i} for i in range(3)], "metrics")
    ob.append_many([{"t": i} for i in range(6)], "telemetry")
    ob.append_many([{"e": i} for i in range(3)], "events")  # 12 rows: 2 too many
    peek = ob.peek(100)
    assert [r.record for r in peek if r.kind == "metrics"] == [{"m": 2}]
    # 3 more: the newest metrics record stays (it carries the drop counts), so 3 oldest telemetry go
    ob.append_many([{"e": i} for i in range(3, 6)], "events")
    kinds = [(r.kind, r.record) for r in ob.peek(100)]
    assert [r for k, r in kinds if k == "metrics"] == [{"m": 2}]
    assert [r["t"] for k, r in kinds if k == "telemetry"] == [3, 4, 5]
    assert [r["e"] for k, r in kinds if k == "events"] == list(range(6))
    st = ob.stats()
    assert st.rows == 10
    assert st.dropped == {"metrics": {"capacity": 2}, "telemetry": {"capacity": 3}}
    assert st.dropped_total == 5


def test_a_report_appended_to_a_full_outbox_counts_its_own_drop(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", device_id="dev1", max_rows=10)
    ob.append_many([{"t": i} for i in range(10)])
    ob.append_report(lambda: {"dropped": ob.stats().dropped_total})
    ob.append_report(lambda: {"dropped": ob.stats().dropped_total})  # replaces the previous report
    reports = [r.record for r in ob.peek(100) if r.kind == "metrics"]
    assert reports == [{"dropped": 2}]
    assert ob.stats().dropped == {"telemetry": {"capacity": 1}, "metrics": {"capacity": 1}}
    ob.close()


def test_byte_bound_priority_first_then_sealed_messages(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", device_id="dev1", max_rows=1000, max_bytes=64 * 1024)
    big = "x" * 10_000
    ob.append_many([{"i": i, "pad": big} for i in range(4)])
    sealed = seal_all(ob, max_records=2)
    assert [m.n_records for m in sealed] == [2, 2]
    ob.append_many([{"i": i, "pad": big} for i in range(4, 8)])  # ~80 KB > 64 KiB
    st = ob.stats()
    assert st.bytes <= 64 * 1024
    # pending rows went first (the oldest pending: i=4, 5); the sealed messages are untouched
    assert st.sealed_rows == 4 and st.dropped["telemetry"]["capacity"] == 2
    assert [r.record["i"] for r in ob.peek(100) if r.seq is None] == [6, 7]
    assert ob.take_dropped_seqs() == []
    # events outrank telemetry: pending telemetry goes, then the oldest sealed telemetry message
    ob.append_many([{"e": i, "pad": big} for i in range(3)], "events")
    assert ob.take_dropped_seqs() == [sealed[0].seq]
    assert ob.load_message(sealed[0].seq) is None and ob.load_message(sealed[1].seq) is not None
    st = ob.stats()
    assert st.bytes <= 64 * 1024 and st.pending["events"] == 3
    assert st.dropped == {"telemetry": {"capacity": 6}}
    ob.close()


def test_ttl_expires_pending_and_sealed_but_not_rows_from_an_unset_clock(tmp_path: Path) -> None:
    clock = Clock()
    ob = Outbox(tmp_path / "o.db", device_id="dev1", ttl_s=60, clock=clock)
    ob.append_many([{"i": i} for i in range(3)])
    sealed = seal_all(ob, max_records=2)
    ob.append({"i": 3}, "events")
    clock.t = 100.0  # reboot of a Pi without RTC: the clock says 1970 until NTP syncs
    ob.append({"early": True})
    clock.t = 1_800_000_030.0  # NTP sync
    ob.append({"i": 4})
    assert ob.expire() == 0
    clock.t += 45  # the first records are now 75 s old, the last one 45 s
    assert ob.expire() == 4
    left = [r.record for r in ob.peek(100)]
    assert left == [{"early": True}, {"i": 4}]
    assert set(ob.take_dropped_seqs()) == {m.seq for m in sealed}
    assert ob.stats().dropped == {"telemetry": {"ttl": 3}, "events": {"ttl": 1}}
    ob.close()


@pytest.mark.parametrize(("record", "kind", "problem"), [
    ([1, 2], "telemetry", "must be a JSON object"),
    ({"x": object()}, "telemetry", "not JSON-serializable"),
    ({"x": "y" * 300_000}, "telemetry", "bytes of JSON"),
    ({"x": 1}, "logs", "unknown record kind"),
])
def test_bad_records_get_a_clear_error_and_nothing_else_is_lost(tmp_path: Path, record, kind, problem) -> None:
    ob = Outbox(tmp_path / "o.db", device_id="dev1")
    ob.append({"ok": 1})
    with pytest.raises(RecordError, match=problem):
        ob.append(record, kind)
    ob.append({"ok": 2})
    assert [r.record for r in ob.peek()] == [{"ok": 1}, {"ok": 2}]
    ob.close()


def test_nan_becomes_null_and_numpy_values_are_plain(tmp_path: Path) -> None:
    import numpy as np

    ob = Outbox(tmp_path / "o.db", device_id="dev1")
    ob.append({"score": float("nan"), "inf": float("inf"), "np": np.float32(0.5), "arr": np.arange(3)})
    assert ob.peek()[0].record == {"score": None, "inf": None, "np": 0.5, "arr": [0, 1, 2]}
    ob.close()


def test_one_writer_per_outbox_readers_welcome(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", device_id="dev1")
    ob.append({"x": 1})
    with pytest.raises(OutboxLockedError, match="another process"):
        Outbox(tmp_path / "o.db", device_id="dev1")
    with Outbox(tmp_path / "o.db", readonly=True) as ro:
        assert ro.stats().rows == 1
    ob.close()
    Outbox(tmp_path / "o.db", device_id="dev1").close()  # the lock went with close()


def test_wrong_device_corrupt_file_and_missing_file_are_named(tmp_path: Path) -> None:
    Outbox(tmp_path / "o.db", device_id="dev1").close()
    with pytest.raises(OutboxError, match="belongs to device 'dev1'"):
        Outbox(tmp_path / "o.db", device_id="dev2")
    bad = tmp_path / "junk.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(OutboxError, match="junk.db"):
        Outbox(bad, device_id="dev1")
    with pytest.raises(OutboxError, match="no outbox here"):
        Outbox(tmp_path / "nope.db", readonly=True)


def test_committed_rows_survive_sigkill_and_the_lock_is_released(tmp_path: Path) -> None:
    """A producer SIGKILLed mid-stream: every append that returned is in the file afterwards."""
    script = textwrap.dedent(f"""
        import sys
        from edge_device.telemetry import Outbox
        ob = Outbox({str(tmp_path / 'o.db')!r}, device_id="dev1")
        i = 0
        while True:
            ob.append({{"i": i}})
            print(i, flush=True)
            i += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    assert proc.stdout is not None
    last = -1
    for line in proc.stdout:
        last = int(line)
        if last >= 300:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    with Outbox(tmp_path / "o.db", device_id="dev1") as ob:  # lock free again
        values = [r.record["i"] for r in ob.peek(100_000)]
        assert values[: last + 1] == list(range(last + 1))
        assert ob.stats().appended_total == len(values)
    json.dumps(values)  # plain ints
