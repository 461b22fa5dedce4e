"""Engine creation with the settings the ingester's guarantees rest on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from .._errors import DatabaseError
from ._migrate import upgrade

__all__ = ["make_engine", "normalize_url"]


def normalize_url(url: str) -> URL:
    """Parse ``url``; ``postgresql://`` without a driver means psycopg 3 (what the [cloud] extra installs)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseError(f"{url!r} is not a database URL (e.g. sqlite:///telemetry.db or "
                            "postgresql://user@host/db): {exc}") from exc
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(url: str, *, create_tables: bool = True) -> Engine:
    """An engine for ``url``; with ``create_tables`` the schema (every cloud table) is migrated to
    the newest revision first (``upgrade``), as the service and the ingester do when they start.

    SQLite gets WAL with ``synchronous=FULL``: the ingester acknowledges a message to the broker
    after the commit, so the commit must survive a power cut (``NORMAL`` in WAL mode may not).
    """
    parsed = normalize_url(url)
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if backend == "sqlite":
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        if parsed.database and parsed.database != ":memory:":
            try:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseError(f"{parsed.database}: cannot create its directory ({exc.strerror})") from exc
    elif backend != "postgresql":
        raise DatabaseError(f"{parsed.render_as_string()}: only SQLite and PostgreSQL are supported")
    try:
        engine = create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ImportError) as exc:
        hint = " (pip install 'psycopg[binary]')" if backend == "postgresql" else ""
        raise DatabaseError(f"no database driver for {parsed.drivername}{hint}: {exc}") from exc
    except ArgumentError as exc:
        raise DatabaseError(f"cannot use {parsed.render_as_string()}: {exc}") from exc
    if backend == "sqlite":
        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
    if create_tables:
        try:
            upgrade(engine)
        except DatabaseError:
            engine.dispose()
            raise
    return engine
