"""Where records go: stdout, a JSON-lines file, a SQLite database (and, in telemetry, the outbox)."""

from __future__ import annotations

import json
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Protocol, TextIO, runtime_checkable

from ._errors import SinkError
from ._record import Record

__all__ = ["JsonlSink", "Sink", "SqliteSink", "StreamSink", "open_sink"]



@runtime_checkable
class Sink(Protocol):
    """Receives one record per frame. ``write`` must not block for long: it runs on the
    pipeline's sink thread, never on the inference thread, but a slow sink still backs up the
    bounded queue."""

    def write(self, record: Record) -> None: ...

    def close(self) -> None: ...


class StreamSink:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout

    def write(self, record: Record) -> None:
        self._stream.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._stream.flush()

    def close(self) -> None:
        self._stream.flush()


class JsonlSink:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise SinkError(f"{self.path}: cannot open for writing ({exc.strerror})") from exc

    def write(self, record: Record) -> None:
        self._f.write(json.dumps(record, separators=(",", ":")) + "\n")

    def close(self) -> None:
        self._f.flush()
        self._f.close()


class SqliteSink:
    """One row per record: the indexed fields plus the whole record as JSON."""

    _SCHEMA = """
    CREATE TABLE IF NOT EXISTS records (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts TEXT NOT NULL,
        source TEXT,
        frame INTEGER,
        model TEXT,
        version INTEGER,
        top_label TEXT,
        top_score REAL,
        error TEXT,
        record TEXT NOT NULL
    )"""

    def __init__(self, path: str | Path, *, commit_every: int = 50) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._pending = 0
        self._commit_every = commit_every
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(self._SCHEMA)
            self._db.commit()
        except sqlite3.Error as exc:
            raise SinkError(f"{self.path}: cannot open SQLite database ({exc})") from exc

    def write(self, record: Record) -> None:
        top_k = record.get("top_k")
        top = top_k[0] if top_k else None
        model = record.get("model")
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO records (ts, source, frame, model, version, top_label, top_score, error, record)"
                    " VALUES (?,?,?,?,?,?,?,?,?)",
                    (record["ts"], record["source"], record["frame"], model["name"] if model else None,
                     model["version"] if model else None, top["label"] if top else None,
                     top["score"] if top else None, record.get("error"),
                     json.dumps(record, separators=(",", ":"))),
                )
                self._pending += 1
                if self._pending >= self._commit_every:
                    self._db.commit()
                    self._pending = 0
            except sqlite3.Error as exc:
                raise SinkError(f"{self.path}: cannot write record ({exc})") from exc

    def close(self) -> None:
        with self._lock:
            self._db.commit()
            self._db.close()


def open_sink(spec: str) -> Sink:
    """``-`` for stdout, ``sqlite:///path.db`` for SQLite, anything else a JSON-lines file."""
    if spec in ("-", ""):
        return StreamSink()
    if spec.startswith("sqlite:///"):
        return SqliteSink(spec[len("sqlite:///"):])
    if spec.startswith("sqlite:"):
        raise SinkError(f"{spec!r}: write SQLite outputs as sqlite:///relative/path.db or sqlite:////abs/path.db")
    return JsonlSink(spec)
