"""Where records go: stdout, a JSON-lines file, a CSV file, a SQLite database (and, in telemetry,
the outbox). ``open_sink`` picks one from a spec; the format follows the file's extension."""

from __future__ import annotations

import csv
import json
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO, runtime_checkable

from ._errors import SinkError
from ._record import Detection, Record, ScoredLabel

if TYPE_CHECKING:
    import sqlite3

__all__ = ["OUTPUT_FORMATS", "CsvSink", "JsonlSink", "Sink", "SqliteSink", "StreamSink", "open_sink"]

#: extension -> format name, for ``open_sink`` and its error message
OUTPUT_FORMATS: dict[str, str] = {
    ".jsonl": "JSON lines",
    ".ndjson": "JSON lines",
    ".csv": "CSV",
    ".db": "SQLite",
    ".sqlite": "SQLite",
    ".sqlite3": "SQLite",
}

@runtime_checkable
class Sink(Protocol):
    """Receives one record per frame. ``write`` must not block for long: it runs on the
    pipeline's sink thread, never on the inference thread, but a slow sink still backs up the
    bounded queue."""

    def write(self, record: Record) -> None: ...

    def close(self) -> None: ...


class StreamSink:
    kind = "JSON lines"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout

    def write(self, record: Record) -> None:
        self._stream.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._stream.flush()

    def close(self) -> None:
        self._stream.flush()


class JsonlSink:
    kind = "JSON lines"

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
    """One row per record: the indexed fields plus the whole record as JSON; a detector's objects
    also go one row each into ``detections`` (queryable by label), and its best object is the
    record's ``top_label``/``top_score``."""

    kind = "SQLite"

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
    _DETECTIONS = """
    CREATE TABLE IF NOT EXISTS detections (
        record_id INTEGER NOT NULL REFERENCES records(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        label TEXT,
        score REAL,
        x1 REAL, y1 REAL, x2 REAL, y2 REAL,
        PRIMARY KEY (record_id, idx)
    )"""

    def __init__(self, path: str | Path, *, commit_every: int = 50) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._pending = 0
        self._commit_every = commit_every
        import sqlite3  # only when a database is written: `edge run` to stdout needs none

        self._errors: type[Exception] = sqlite3.Error
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db: sqlite3.Connection = sqlite3.connect(self.path, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(self._SCHEMA)
            self._db.execute(self._DETECTIONS)
            self._db.commit()
        except sqlite3.Error as exc:
            raise SinkError(f"{self.path}: cannot open SQLite database ({exc})") from exc

    def write(self, record: Record) -> None:
        top_k = record.get("top_k")
        detections = record.get("detections") or []
        best: ScoredLabel | Detection | None = top_k[0] if top_k else (detections[0] if detections else None)
        model = record.get("model")
        with self._lock:
            try:
                cur = self._db.execute(
                    "INSERT INTO records (ts, source, frame, model, version, top_label, top_score, error, record)"
                    " VALUES (?,?,?,?,?,?,?,?,?)",
                    (record["ts"], record["source"], record["frame"], model["name"] if model else None,
                     model["version"] if model else None, best["label"] if best else None,
                     best["score"] if best else None, record.get("error"),
                     json.dumps(record, separators=(",", ":"))),
                )
                if detections:
                    rid = cur.lastrowid
                    self._db.executemany(
                        "INSERT INTO detections (record_id, idx, label, score, x1, y1, x2, y2)"
                        " VALUES (?,?,?,?,?,?,?,?)",
                        [(rid, i, d["label"], d["score"], *(list(d["box"]) + [None] * 4)[:4])
                         for i, d in enumerate(detections)])
                self._pending += 1
                if self._pending >= self._commit_every:
                    self._db.commit()
                    self._pending = 0
            except self._errors as exc:
                raise SinkError(f"{self.path}: cannot write record ({exc})") from exc

    def close(self) -> None:
        with self._lock:
            self._db.commit()
            self._db.close()


class CsvSink:
    """One row per record in flat columns a spreadsheet reads; what does not flatten (every
    detection, the values, the whole top-k list) goes into the ``results_json`` column as JSON.

    Appends to an existing file only when its header is this sink's header, so that columns never
    shift under an old file."""

    kind = "CSV"
    COLUMNS: tuple[str, ...] = (
        "ts", "source", "frame", "model", "version", "backend", "path",
        "top_label", "top_score", "detections", "results_json", "latency_total_ms", "error",
    )

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            header = ""
            if self.path.is_file() and self.path.stat().st_size > 0:
                with self.path.open(encoding="utf-8", newline="") as f:
                    header = f.readline().strip()
                if header != ",".join(self.COLUMNS):
                    raise SinkError(f"{self.path}: exists with other columns ({header[:80]!r}); "
                                    "choose a new file name")
            self._f = self.path.open("a", encoding="utf-8", newline="")
        except OSError as exc:
            raise SinkError(f"{self.path}: cannot open for writing ({exc.strerror})") from exc
        self._w = csv.writer(self._f)
        if not header:
            self._w.writerow(self.COLUMNS)

    @classmethod
    def row(cls, record: Record) -> list[Any]:
        top_k = record.get("top_k")
        top = top_k[0] if top_k else None
        detections = record.get("detections")
        model = record.get("model")
        results: Any = None
        if detections is not None:
            results = detections
        elif record.get("values") is not None:
            results = record.get("values")
        elif top_k:
            results = top_k
        return [
            record["ts"], record["source"], record["frame"],
            model["name"] if model else "", model["version"] if model else "",
            record.get("backend", ""), record.get("path", ""),
            top["label"] if top else "", top["score"] if top else "",
            len(detections) if detections is not None else "",
            json.dumps(results, separators=(",", ":")) if results is not None else "",
            record.get("latency_ms", {}).get("total", ""),
            record.get("error", ""),
        ]

    def write(self, record: Record) -> None:
        self._w.writerow(self.row(record))

    def close(self) -> None:
        self._f.flush()
        self._f.close()


def open_sink(spec: str) -> Sink:
    """``-`` for stdout, ``sqlite:///path.db`` for SQLite, else a file whose extension names the
    format (see ``OUTPUT_FORMATS``). An unknown extension is refused rather than guessed: a
    ``results.json`` silently written as JSON lines would break whoever reads it."""
    if spec in ("-", ""):
        return StreamSink()
    if spec.startswith("sqlite:///"):
        return SqliteSink(spec[len("sqlite:///"):])
    if spec.startswith("sqlite:"):
        raise SinkError(f"{spec!r}: write SQLite outputs as sqlite:///relative/path.db or sqlite:////abs/path.db")
    suffix = Path(spec).suffix.lower()
    kind = OUTPUT_FORMATS.get(suffix)
    if kind == "CSV":
        return CsvSink(spec)
    if kind == "SQLite":
        return SqliteSink(spec)
    if kind == "JSON lines":
        return JsonlSink(spec)
    known = ", ".join(OUTPUT_FORMATS)
    what = f"extension {suffix!r}" if suffix else "no extension"
    raise SinkError(f"{spec}: unknown output format ({what}); known: - (stdout), {known}, sqlite:///FILE.db")
