"""The durable outbox: a SQLite file that holds every record until the cloud has it.

Life of a record::

    append ──▶ pending row ──seal──▶ row of a sealed message (seq, uuid) ──confirm──▶ deleted
                    │                          │
                    └── dropped (capacity, ttl, overflow, purged): counted per kind and reason

* WAL journal with ``synchronous=FULL``: in WAL mode ``NORMAL`` may roll back the last commits on
  power loss; ``FULL`` syncs the WAL at every commit, so a row that was committed survives a pulled plug.
* A message always takes the oldest pending rows of one kind, so the sealed rows of a kind are
  exactly those up to a per-kind watermark, and a message is an id range: sealing writes one small
  row (and moves the watermark) instead of rewriting every record, and confirming deletes a range.
* Sealing assigns the message's ``seq`` and ``uuid`` and is committed before the message is sent:
  a resend after a crash carries the same ``seq`` and the same records, which is what lets the cloud
  drop duplicates on ``(device_id, seq)``. ``seq`` starts at the creation time in microseconds, so an
  outbox that is deleted and recreated does not reuse the numbers of the old one.
* Bounds: rows, bytes of record JSON, and age. Over a bound the lowest priority goes first
  (metrics, then telemetry, then events), oldest first; within a priority, rows not yet sealed go
  before whole sealed messages (those are already on their way).
* One writer per file, enforced by an ``flock`` on ``PATH.lock`` (released by the kernel if the
  process dies); readers (``edge outbox stats``) need no lock thanks to WAL.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
import uuid as uuidlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ._config import KINDS, TelemetryConfig, validate_device_id
from ._errors import OutboxError, OutboxLockedError, RecordError
from ._schema import encode_record, envelope_bytes, envelope_overhead

__all__ = ["DROP_REASONS", "EncodedRecord", "Outbox", "OutboxStats", "PeekRow", "SealedMessage"]

log = logging.getLogger(__name__)

_FORMAT_VERSION = 1
DROP_REASONS: tuple[str, ...] = ("capacity", "ttl", "overflow", "purged")
_PRIORITY = {kind: i for i, kind in enumerate(KINDS)}
# A clock before 2001 means the device has not synced its time yet (a Pi has no RTC): ages computed
# from such timestamps are meaningless, so those rows are never expired by TTL.
_PLAUSIBLE_EPOCH = 1_000_000_000.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    priority INTEGER NOT NULL,
    created REAL NOT NULL,
    nbytes INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_kind ON records(priority, id);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY,
    uuid TEXT NOT NULL,
    priority INTEGER NOT NULL,
    first_id INTEGER NOT NULL,
    last_id INTEGER NOT NULL,
    created TEXT NOT NULL,
    oldest REAL NOT NULL,
    n_records INTEGER NOT NULL,
    nbytes INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class EncodedRecord:
    """A record already turned into JSON, ready for :meth:`Outbox.append_encoded`."""

    kind: str
    body: str
    nbytes: int
    created: float


@dataclass(frozen=True, slots=True)
class SealedMessage:
    seq: int
    uuid: str
    kind: str
    created: str
    n_records: int
    nbytes: int
    oldest: float
    payload: bytes


@dataclass(frozen=True, slots=True)
class PeekRow:
    id: int
    kind: str
    created: float
    nbytes: int
    seq: int | None
    record: dict[str, Any]


@dataclass(slots=True)
class OutboxStats:
    path: str
    device_id: str | None
    rows: int
    bytes: int
    pending: dict[str, int]
    sealed_messages: int
    sealed_rows: int
    oldest_age_s: float | None
    next_seq: int
    appended_total: int
    confirmed_total: int
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)
    appended: dict[str, int] = field(default_factory=dict)  # per kind, since the outbox was created

    @property
    def dropped_total(self) -> int:
        return sum(sum(r.values()) for r in self.dropped.values())

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["dropped_total"] = self.dropped_total
        return d


class Outbox:
    """A device's durable queue of records. Thread-safe; one writer process per file.

    ``readonly=True`` opens an existing outbox for inspection while another process writes it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        device_id: str | None = None,
        max_rows: int = 200_000,
        max_bytes: int = 128 * 1024 * 1024,
        ttl_s: float = 7 * 24 * 3600.0,
        max_record_bytes: int = 256 * 1024,
        readonly: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.readonly = readonly
        self._clock = clock
        self._lock = threading.RLock()
        self._lockfile: int | None = None
        self._closed = False
        if device_id is not None:
            validate_device_id(device_id)
        # The per-record limit leaves room for the message envelope around a single record.
        self.max_record_bytes = max_record_bytes - envelope_overhead(device_id or "x" * 64, 1)
        if readonly:
            if not self.path.is_file():
                raise OutboxError(f"{self.path}: no outbox here")
            self._db = self._connect(f"file:{self.path}?mode=ro", uri=True)
        else:
            if device_id is None and not self.path.is_file():
                raise OutboxError(f"{self.path}: no outbox here")
            self._take_writer_lock()
            try:
                self._db = self._connect(str(self.path), uri=False)
                self._init_schema(device_id)
            except BaseException:
                self._release_writer_lock()
                raise
        self.device_id: str | None = self._meta_get("device_id")
        if device_id is not None and self.device_id not in (None, device_id):
            self.close()
            raise OutboxError(
                f"{self.path}: this outbox belongs to device {self.device_id!r}, not {device_id!r}; "
                "use another --outbox path for another device"
            )
        self._rows = 0
        self._bytes = 0
        self._pending = [[0, 0] for _ in KINDS]  # per priority: rows, bytes
        # per priority: the highest record id that belongs to a sealed message
        self._wm = [int(self._meta_get(f"sealed_upto.{k}") or 0) for k in KINDS]
        self._dropped_sealed: list[int] = []
        self._load_counters()

    @classmethod
    def from_config(cls, config: TelemetryConfig, *, clock: Callable[[], float] = time.time) -> Outbox:
        return cls(config.outbox.path, device_id=config.device_id, max_rows=config.outbox.max_rows,
                   max_bytes=config.outbox.max_bytes, ttl_s=config.outbox.ttl_s,
                   max_record_bytes=config.batch.max_bytes, clock=clock)

    # ------------------------------------------------------------------ opening

    def _take_writer_lock(self) -> None:
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutboxError(f"{self.path}: cannot create the outbox ({exc.strerror})") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            try:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            finally:
                os.close(fd)
            who = f" (pid {holder})" if holder else ""
            raise OutboxLockedError(
                f"{self.path}: another process{who} is using this outbox; stop it first "
                "(`edge outbox stats` and `peek` work while it runs)"
            ) from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lockfile = fd

    def _release_writer_lock(self) -> None:
        if self._lockfile is not None:
            os.close(self._lockfile)  # closing the descriptor releases the flock
            self._lockfile = None

    def _connect(self, target: str, *, uri: bool) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(target, uri=uri, isolation_level=None, check_same_thread=False, timeout=10.0)
            db.execute("PRAGMA busy_timeout=10000")
            if not self.readonly:
                mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if mode != "wal":
                    raise OutboxError(f"{self.path}: SQLite refused WAL mode (got {mode!r}); "
                                      "put the outbox on a local file system")
                db.execute("PRAGMA synchronous=FULL")
            return db
        except sqlite3.DatabaseError as exc:
            raise OutboxError(f"{self.path}: cannot open as an outbox ({exc})") from exc

    def _init_schema(self, device_id: str | None) -> None:
        try:
            with self._tx():
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        self._db.execute(stmt)
                version = self._meta_get("format")
                if version is None:
                    if device_id is None:
                        raise OutboxError(f"{self.path}: no outbox here (a new one needs a device id)")
                    now = self._clock()
                    start_seq = max(1, int(now * 1_000_000)) if now >= _PLAUSIBLE_EPOCH else 1
                    self._meta_set("format", _FORMAT_VERSION)
                    self._meta_set("device_id", device_id)
                    self._meta_set("next_seq", start_seq)
                    self._meta_set("appended_total", 0)
                    self._meta_set("confirmed_total", 0)
                elif version != _FORMAT_VERSION:
                    raise OutboxError(f"{self.path}: outbox format {version} is not supported "
                                      f"(this runtime reads format {_FORMAT_VERSION})")
        except sqlite3.DatabaseError as exc:
            raise OutboxError(f"{self.path}: not an outbox database ({exc})") from exc

    def _load_counters(self) -> None:
        with self._lock:
            try:
                for prio, sealed, n, nb, _first in self._counts():
                    self._rows += n
                    self._bytes += nb
                    if not sealed:
                        self._pending[prio] = [n, nb]
            except sqlite3.DatabaseError as exc:
                raise OutboxError(f"{self.path}: cannot read the outbox ({exc})") from exc

    def _counts(self) -> list[tuple[int, bool, int, int, float | None]]:
        """(priority, sealed, rows, bytes, oldest created) for each kind, from the file."""
        out = []
        for prio in range(len(KINDS)):
            wm = int(self._meta_get(f"sealed_upto.{KINDS[prio]}") or 0)
            for sealed, cond in ((True, "id <= ?"), (False, "id > ?")):
                n, nb, first = self._db.execute(
                    f"SELECT COUNT(*), COALESCE(SUM(nbytes), 0), MIN(created) FROM records "
                    f"WHERE priority = ? AND {cond}", (prio, wm)).fetchone()
                out.append((prio, sealed, n, nb, first))
        return out

    # ------------------------------------------------------------------ helpers

    @contextmanager
    def _tx(self, *, durable: bool = True) -> Iterator[None]:
        """One IMMEDIATE transaction; sqlite3 errors become OutboxError and the transaction is undone.

        ``durable=False`` commits without syncing the WAL (``synchronous=NORMAL``), for changes a
        power cut may undo harmlessly; the next durable commit syncs them along with itself.
        """
        if self.readonly:
            raise OutboxError(f"{self.path}: opened read-only")
        if self._closed:
            raise OutboxError(f"{self.path}: the outbox is closed")
        with self._lock:
            try:
                if not durable:
                    self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as exc:
                raise OutboxError(f"{self.path}: cannot write ({exc})") from exc
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException as exc:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.DatabaseError:
                    log.debug("rollback failed after %r", exc)
                if isinstance(exc, sqlite3.DatabaseError):
                    raise OutboxError(f"{self.path}: cannot write ({exc})") from exc
                raise
            finally:
                if not durable:
                    try:
                        self._db.execute("PRAGMA synchronous=FULL")
                    except sqlite3.DatabaseError as exc:
                        log.error("%s: cannot restore synchronous=FULL: %s", self.path, exc)

    def _meta_get(self, key: str) -> Any:
        try:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.DatabaseError as exc:
            raise OutboxError(f"{self.path}: not an outbox database ({exc})") from exc
        return row[0] if row else None

    def _meta_set(self, key: str, value: Any) -> None:
        self._db.execute("INSERT INTO meta(key, value) VALUES(?, ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def _meta_add(self, key: str, n: int) -> None:
        if n:
            self._db.execute("INSERT INTO meta(key, value) VALUES(?, ?) "
                             "ON CONFLICT(key) DO UPDATE SET value = value + excluded.value", (key, n))

    def _count_drops(self, drops: Counter[tuple[int, str]]) -> None:
        for (prio, reason), n in drops.items():
            self._meta_add(f"dropped.{KINDS[prio]}.{reason}", n)

    # ------------------------------------------------------------------ writing

    def encode(self, record: Any, kind: str = "telemetry") -> EncodedRecord:
        """Check and encode one record (on the caller's thread, so a bad record fails right there)."""
        if kind not in _PRIORITY:
            raise RecordError(f"unknown record kind {kind!r}; use one of {', '.join(KINDS)}")
        body = encode_record(record)
        nbytes = len(body.encode("utf-8"))
        if nbytes > self.max_record_bytes:
            raise RecordError(f"record is {nbytes} bytes of JSON; one message holds at most "
                              f"{self.max_record_bytes} (raise batch max_bytes to send larger records)")
        return EncodedRecord(kind, body, nbytes, self._clock())

    def append(self, record: Any, kind: str = "telemetry") -> None:
        """Append one record; it is on disk (fsync'd) when this returns."""
        self.append_encoded([self.encode(record, kind)])

    def append_many(self, records: Iterable[Any], kind: str = "telemetry") -> None:
        """Append several records of one kind in one transaction (one fsync)."""
        self.append_encoded([self.encode(r, kind) for r in records])

    def append_encoded(self, items: Sequence[EncodedRecord]) -> Counter[str]:
        """Append pre-encoded records in one transaction; returns the rows dropped per kind to make room."""
        if not items:
            return Counter()
        with self._tx():
            self._db.executemany(
                "INSERT INTO records(priority, created, nbytes, body) VALUES (?, ?, ?, ?)",
                [(_PRIORITY[it.kind], it.created, it.nbytes, it.body) for it in items],
            )
            self._meta_add("appended_total", len(items))
            for kind, n in Counter(it.kind for it in items).items():
                self._meta_add(f"appended.{kind}", n)
            added = Counter[int]()
            for it in items:
                p = _PRIORITY[it.kind]
                self._pending[p][0] += 1
                self._pending[p][1] += it.nbytes
                added[p] += it.nbytes
            self._rows += len(items)
            self._bytes += sum(added.values())
            drops = self._trim()
            self._count_drops(drops)
        return Counter({KINDS[p]: n for (p, _), n in drops.items()})

    def append_report(self, build: Callable[[], dict[str, Any]], kind: str = "metrics",
                      reserve_bytes: int = 4096) -> None:
        """Append a record built inside the transaction, after room was made for it.

        For metrics: ``build`` reads :meth:`stats` and so counts the drops its own arrival caused;
        a report appended to a full outbox is therefore never one drop behind.
        """
        with self._tx():
            drops = self._trim(extra_rows=1, extra_bytes=reserve_bytes, protect_report=False)
            self._count_drops(drops)
            item = self.encode(build(), kind)
            p = _PRIORITY[kind]
            self._db.execute("INSERT INTO records(priority, created, nbytes, body) VALUES (?, ?, ?, ?)",
                             (p, item.created, item.nbytes, item.body))
            self._meta_add("appended_total", 1)
            self._meta_add(f"appended.{kind}", 1)
            self._pending[p][0] += 1
            self._pending[p][1] += item.nbytes
            self._rows += 1
            self._bytes += item.nbytes
            self._count_drops(self._trim())  # only if the report outgrew its reservation

    def add_dropped(self, kind: str, reason: str, n: int) -> None:
        """Count records dropped before they reached the outbox (e.g. the in-memory buffer overflowed)."""
        if n <= 0:
            return
        with self._tx():
            self._count_drops(Counter({(_PRIORITY[kind], reason): n}))

    def _trim(self, *, extra_rows: int = 0, extra_bytes: int = 0,
              protect_report: bool = True) -> Counter[tuple[int, str]]:
        """Inside a transaction: drop until the row and byte bounds hold again (with room for
        ``extra_rows``/``extra_bytes`` more).

        Strictly by priority (metrics, then telemetry, then events). Within one priority, pending
        rows go first, oldest first, then whole sealed messages, oldest first: a sealed message is
        already on its way and usually about to be confirmed, so dropping it wastes what was sent.
        The newest pending metrics record is kept (``protect_report``): it carries the cumulative
        drop counts, so the report of what was lost must not be lost itself.
        """
        drops: Counter[tuple[int, str]] = Counter()
        over_rows = self._rows + extra_rows - self.max_rows
        over_bytes = self._bytes + extra_bytes - self.max_bytes
        for prio in range(len(KINDS)):
            if over_rows <= 0 and over_bytes <= 0:
                break
            last: int | None = None
            below = 2**63 - 1
            if prio == _PRIORITY["metrics"] and protect_report:
                newest = self._db.execute("SELECT MAX(id) FROM records WHERE priority = ? AND id > ?",
                                          (prio, self._wm[prio])).fetchone()[0]
                below = newest if newest is not None else below
            cur = self._db.execute("SELECT id, nbytes FROM records WHERE priority = ? AND id > ? AND id < ? "
                                   "ORDER BY id", (prio, self._wm[prio], below))
            for id_, nb in cur:
                if over_rows <= 0 and over_bytes <= 0:
                    break
                over_rows -= 1
                over_bytes -= nb
                drops[(prio, "capacity")] += 1
                self._pending[prio][0] -= 1
                self._pending[prio][1] -= nb
                self._rows -= 1
                self._bytes -= nb
                last = id_
            cur.close()
            if last is not None:
                self._db.execute("DELETE FROM records WHERE priority = ? AND id > ? AND id <= ?",
                                 (prio, self._wm[prio], last))
            victims: list[int] = []
            if over_rows > 0 or over_bytes > 0:
                for seq, n, nb in self._db.execute(
                    "SELECT seq, n_records, nbytes FROM messages WHERE priority = ? ORDER BY seq", (prio,)
                ).fetchall():
                    if over_rows <= 0 and over_bytes <= 0:
                        break
                    victims.append(seq)
                    drops[(prio, "capacity")] += n
                    over_rows -= n
                    over_bytes -= nb
                    self._rows -= n
                    self._bytes -= nb
            self._delete_messages(victims)
            self._dropped_sealed.extend(victims)
        return drops

    def _delete_messages(self, seqs: Sequence[int]) -> list[tuple[int, int, int]]:
        """Delete messages and their records; returns (priority, n_records, nbytes) of those that existed."""
        found: list[tuple[int, int, int]] = []
        for i in range(0, len(seqs), 500):
            chunk = list(seqs[i:i + 500])
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT priority, first_id, last_id, n_records, nbytes FROM messages "
                                    f"WHERE seq IN ({marks})", chunk).fetchall()
            self._db.executemany("DELETE FROM records WHERE priority = ? AND id BETWEEN ? AND ?",
                                 [(r[0], r[1], r[2]) for r in rows])
            self._db.execute(f"DELETE FROM messages WHERE seq IN ({marks})", chunk)
            found.extend((r[0], r[3], r[4]) for r in rows)
        return found

    # ------------------------------------------------------------------ sealing and confirming

    def seal(self, *, max_records: int, max_bytes: int, linger_s: float, force: bool = False) -> SealedMessage | None:
        """Turn the oldest pending records of one kind into a message, if a batch is due.

        A batch is due when it is full (records or bytes), when its oldest record has waited
        ``linger_s``, or when ``force`` is set. Events go first; otherwise the kind whose oldest
        pending record is oldest, so a busy kind cannot starve the others.
        """
        sealed = self.seal_many(1, max_records=max_records, max_bytes=max_bytes, linger_s=linger_s, force=force)
        return sealed[0] if sealed else None

    def seal_many(self, limit: int, *, max_records: int, max_bytes: int, linger_s: float,
                  force: bool = False) -> list[SealedMessage]:
        """Up to ``limit`` messages as :meth:`seal` would make them, in one transaction (one fsync)."""
        if limit <= 0:
            return []
        with self._lock:
            if self._closed:
                raise OutboxError(f"{self.path}: the outbox is closed")
            pending_before = [list(p) for p in self._pending]
            wm_before = list(self._wm)
            out: list[SealedMessage] = []
            try:
                with self._tx():
                    while len(out) < limit:
                        msg = self._seal_one(max_records, max_bytes, linger_s, force)
                        if msg is None:
                            break
                        out.append(msg)
            except BaseException:
                # the transaction was undone; so are the counters and watermarks
                self._pending, self._wm = pending_before, wm_before
                raise
            return out

    def _seal_one(self, max_records: int, max_bytes: int, linger_s: float, force: bool) -> SealedMessage | None:
        assert self.device_id is not None
        now = self._clock()
        budget = max_bytes - envelope_overhead(self.device_id, max_records)
        chosen: tuple[int, float] | None = None
        for prio in range(len(KINDS) - 1, -1, -1):
            n, nb = self._pending[prio]
            if n <= 0:
                continue
            row = self._db.execute("SELECT created FROM records WHERE priority = ? AND id > ? ORDER BY id LIMIT 1",
                                   (prio, self._wm[prio])).fetchone()
            if row is None:
                continue
            oldest = float(row[0])
            if force or n >= max_records or nb >= budget or now - oldest >= linger_s:
                if prio == len(KINDS) - 1:
                    chosen = (prio, oldest)
                    break
                if chosen is None or oldest < chosen[1]:
                    chosen = (prio, oldest)
        if chosen is None:
            return None
        prio = chosen[0]
        ids: list[int] = []
        bodies: list[str] = []
        total = 0
        oldest_created = now
        for id_, nb, body, created in self._db.execute(
            "SELECT id, nbytes, body, created FROM records WHERE priority = ? AND id > ? ORDER BY id LIMIT ?",
            (prio, self._wm[prio], max_records)
        ):
            if ids and total + nb + 1 > budget:
                break
            ids.append(id_)
            bodies.append(body)
            total += nb + 1
            oldest_created = min(oldest_created, float(created))
        if not ids:
            return None
        seq = int(self._meta_get("next_seq"))
        msg_uuid = str(uuidlib.uuid4())
        created_iso = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        nbytes = total - len(ids)
        self._db.execute("INSERT INTO messages(seq, uuid, priority, first_id, last_id, created, oldest, n_records, "
                         "nbytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (seq, msg_uuid, prio, ids[0], ids[-1], created_iso, oldest_created, len(ids), nbytes))
        self._meta_set("next_seq", seq + 1)
        self._meta_set(f"sealed_upto.{KINDS[prio]}", ids[-1])
        self._wm[prio] = ids[-1]
        self._pending[prio][0] -= len(ids)
        self._pending[prio][1] -= nbytes
        return SealedMessage(seq=seq, uuid=msg_uuid, kind=KINDS[prio], created=created_iso,
                             n_records=len(ids), nbytes=nbytes, oldest=oldest_created,
                             payload=envelope_bytes(device_id=self.device_id, seq=seq, uuid=msg_uuid,
                                                    kind=KINDS[prio], created=created_iso, bodies=bodies))

    def setting(self, key: str) -> Any:
        """A small value the device keeps with its outbox (e.g. which ingester serves it), or None."""
        with self._lock:
            return self._meta_get(f"setting.{key}")

    def set_setting(self, key: str, value: str | int | float | None) -> None:
        """Keep (durably) or, with None, forget a value read back by :meth:`setting`."""
        with self._tx():
            if value is None:
                self._db.execute("DELETE FROM meta WHERE key = ?", (f"setting.{key}",))
            else:
                self._meta_set(f"setting.{key}", value)

    def sealed_seqs(self) -> list[int]:
        """Messages sealed but not confirmed, oldest first (to resend after a restart)."""
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT seq FROM messages ORDER BY seq")]

    def load_message(self, seq: int) -> SealedMessage | None:
        """A sealed message, rebuilt byte for byte; None if it was confirmed or dropped meanwhile."""
        assert self.device_id is not None
        with self._lock:
            row = self._db.execute("SELECT uuid, priority, created, oldest, n_records, nbytes, first_id, last_id "
                                   "FROM messages WHERE seq = ?", (seq,)).fetchone()
            if row is None:
                return None
            bodies = [r[0] for r in self._db.execute("SELECT body FROM records WHERE priority = ? AND id BETWEEN ? "
                                                     "AND ? ORDER BY id", (row[1], row[6], row[7]))]
        msg_uuid, prio, created, oldest, n, nbytes = row[:6]
        return SealedMessage(seq=seq, uuid=msg_uuid, kind=KINDS[prio], created=created, n_records=n,
                             nbytes=nbytes, oldest=oldest,
                             payload=envelope_bytes(device_id=self.device_id, seq=seq, uuid=msg_uuid,
                                                    kind=KINDS[prio], created=created, bodies=bodies))

    def confirm(self, seqs: Iterable[int]) -> int:
        """Delete the records of these messages (the cloud or broker has them); returns records removed."""
        seqs = sorted(set(seqs))
        if not seqs:
            return 0
        removed = 0
        # Not synced: if a power cut undoes this delete, the messages go out again and the cloud
        # drops them as duplicates; nothing is lost either way.
        with self._tx(durable=False):
            for _prio, n, nb in self._delete_messages(seqs):
                removed += n
                self._rows -= n
                self._bytes -= nb
            self._meta_add("confirmed_total", removed)
        return removed

    def take_dropped_seqs(self) -> list[int]:
        """Sealed messages dropped since the last call (for the publisher to forget)."""
        with self._lock:
            out, self._dropped_sealed = self._dropped_sealed, []
            return out

    def expire(self) -> int:
        """Drop records older than the TTL (pending rows, and whole sealed messages); returns rows dropped."""
        cutoff = self._clock() - self.ttl_s
        drops: Counter[tuple[int, str]] = Counter()
        with self._tx():
            for prio in range(len(KINDS)):
                where = "priority = ? AND id > ? AND created < ? AND created >= ?"
                args = (prio, self._wm[prio], cutoff, _PLAUSIBLE_EPOCH)
                n, nb = self._db.execute(f"SELECT COUNT(*), COALESCE(SUM(nbytes), 0) FROM records WHERE {where}",
                                         args).fetchone()
                if n:
                    self._db.execute(f"DELETE FROM records WHERE {where}", args)
                    drops[(prio, "ttl")] += n
                    self._pending[prio][0] -= n
                    self._pending[prio][1] -= nb
                    self._rows -= n
                    self._bytes -= nb
            old = self._db.execute("SELECT seq, priority, n_records, nbytes FROM messages "
                                   "WHERE oldest < ? AND oldest >= ?", (cutoff, _PLAUSIBLE_EPOCH)).fetchall()
            for _seq, prio, n, nb in old:
                drops[(prio, "ttl")] += n
                self._rows -= n
                self._bytes -= nb
            self._delete_messages([r[0] for r in old])
            self._dropped_sealed.extend(r[0] for r in old)
            self._count_drops(drops)
        return sum(drops.values())

    def purge(self, kind: str | None = None) -> int:
        """Delete every record (of one kind); they are counted as dropped, reason ``purged``."""
        if kind is not None and kind not in _PRIORITY:
            raise OutboxError(f"unknown record kind {kind!r}; use one of {', '.join(KINDS)}")
        prios = [_PRIORITY[kind]] if kind else list(range(len(KINDS)))
        drops: Counter[tuple[int, str]] = Counter()
        with self._tx():
            marks = ",".join("?" * len(prios))
            for prio, n, nb in self._db.execute(
                f"SELECT priority, COUNT(*), COALESCE(SUM(nbytes), 0) FROM records WHERE priority IN ({marks}) "
                "GROUP BY priority", prios
            ).fetchall():
                drops[(prio, "purged")] += n
                self._rows -= n
                self._bytes -= nb
            seqs = [r[0] for r in self._db.execute(f"SELECT seq FROM messages WHERE priority IN ({marks})", prios)]
            self._db.execute(f"DELETE FROM records WHERE priority IN ({marks})", prios)
            self._db.execute(f"DELETE FROM messages WHERE priority IN ({marks})", prios)
            self._dropped_sealed.extend(seqs)
            for p in prios:
                self._pending[p] = [0, 0]
            self._count_drops(drops)
        return sum(drops.values())

    # ------------------------------------------------------------------ reading

    def depth(self) -> tuple[int, int]:
        """(rows, bytes) held now, from the in-memory counters (cheap; for metrics)."""
        return self._rows, self._bytes

    def pending_rows(self) -> int:
        return sum(p[0] for p in self._pending)

    def stats(self) -> OutboxStats:
        """Counts read from the file itself, so they are right even while another process writes."""
        with self._lock:
            try:
                pending = dict.fromkeys(KINDS, 0)
                rows = nbytes = sealed_rows = 0
                oldest: float | None = None
                for prio, sealed, n, nb, first in self._counts():
                    rows += n
                    nbytes += nb
                    if sealed:
                        sealed_rows += n
                    else:
                        pending[KINDS[prio]] = n
                    if first is not None and (oldest is None or first < oldest):
                        oldest = float(first)
                sealed_messages = self._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
                meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            except sqlite3.DatabaseError as exc:
                raise OutboxError(f"{self.path}: cannot read the outbox ({exc})") from exc
        dropped: dict[str, dict[str, int]] = {}
        for key, value in meta.items():
            if key.startswith("dropped."):
                _, kind, reason = key.split(".", 2)
                dropped.setdefault(kind, {})[reason] = int(value)
        return OutboxStats(
            path=str(self.path), device_id=meta.get("device_id"), rows=rows, bytes=nbytes, pending=pending,
            sealed_messages=sealed_messages, sealed_rows=sealed_rows,
            oldest_age_s=None if oldest is None else round(max(0.0, self._clock() - oldest), 3),
            next_seq=int(meta.get("next_seq", 0)), appended_total=int(meta.get("appended_total", 0)),
            confirmed_total=int(meta.get("confirmed_total", 0)), dropped=dropped,
            appended={k: int(meta.get(f"appended.{k}", 0)) for k in KINDS},
        )

    def peek(self, limit: int = 10, kind: str | None = None) -> list[PeekRow]:
        """The oldest records (sealed ones first, as they leave first), with their message seq if sealed."""
        if kind is not None and kind not in _PRIORITY:
            raise OutboxError(f"unknown record kind {kind!r}; use one of {', '.join(KINDS)}")
        where, args = ("WHERE r.priority = ?", [_PRIORITY[kind]]) if kind else ("", [])
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT r.id, r.priority, r.created, r.nbytes, m.seq, r.body FROM records r "
                    "LEFT JOIN messages m ON m.priority = r.priority AND r.id BETWEEN m.first_id AND m.last_id "
                    f"{where} ORDER BY m.seq IS NULL, r.id LIMIT ?", [*args, limit]
                ).fetchall()
            except sqlite3.DatabaseError as exc:
                raise OutboxError(f"{self.path}: cannot read the outbox ({exc})") from exc
        return [PeekRow(id=r[0], kind=KINDS[r[1]], created=r[2], nbytes=r[3], seq=r[4], record=json.loads(r[5]))
                for r in rows]

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._db.close()
            except sqlite3.DatabaseError as exc:
                log.warning("%s: error while closing the outbox: %s", self.path, exc)
            finally:
                self._release_writer_lock()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
