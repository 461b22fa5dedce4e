"""Schema migrations with Alembic: ``upgrade`` brings any database (empty, made by a release that
still used ``create_all``, or migrated) to the newest revision; every process that opens the
database runs it, so the first one to start migrates and the others find nothing to do.

Two replicas starting together must not both create a table: each migration runs in one
transaction that first takes a lock the other waits on (PostgreSQL: a transaction-level advisory
lock; SQLite: ``BEGIN IMMEDIATE``, the database's write lock, waited on through ``busy_timeout``).
The revision is read after the lock is held, so the second replica sees the first one's work.
"""

from __future__ import annotations

import logging
import time

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from .._errors import DatabaseError

__all__ = ["MIGRATIONS", "alembic_config", "current_revision", "head_revision", "upgrade"]

log = logging.getLogger(__name__)

#: Where Alembic finds env.py and versions/: a package resource, so an installed wheel works
#: from wherever it was installed (not a path into a source checkout).
MIGRATIONS = "cloud_sync.db:migrations"
# Any fixed 64-bit number every process agrees on; nothing else in the database should take it.
_PG_LOCK_KEY = 0x6564676500C10D00


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for the package's migrations, running on ``connection`` when given."""
    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The newest revision this code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # only when versions/ is missing from the installation
        raise DatabaseError(f"no migrations found in {MIGRATIONS}: the installation is incomplete")
    return head


def current_revision(engine: Engine) -> str | None:
    """The database's revision; None for an empty database or one made before migrations."""
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as exc:
        raise DatabaseError(_describe(engine, "cannot read the schema revision of", exc)) from exc


#: how long a replica keeps trying when another holds SQLite's write lock longer than busy_timeout
SQLITE_LOCK_PATIENCE_S = 180.0


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate to ``revision`` under the migration lock; returns (revision before, revision after).
    Running it again is a no-op."""
    deadline = time.monotonic() + SQLITE_LOCK_PATIENCE_S
    delay = 0.1
    while True:
        try:
            return _upgrade_once(engine, revision)
        except DatabaseError as exc:
            # SQLite gives up after busy_timeout while another replica migrates (seen under heavy load,
            # and when switching to WAL needs the lock): wait and try again; the work is idempotent.
            if engine.dialect.name != "sqlite" or "database is locked" not in str(exc) \
                    or time.monotonic() > deadline:
                raise
            log.info("database %s is locked by another migration; retrying", _safe_url(engine))
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def _upgrade_once(engine: Engine, revision: str) -> tuple[str | None, str | None]:
    try:
        with engine.connect() as conn:
            _lock(conn)
            before = MigrationContext.configure(conn).get_current_revision()
            # The connection is in a transaction already, so Alembic runs inside it and the
            # commit below makes the whole migration (and the lock's release) atomic.
            command.upgrade(alembic_config(conn), revision)
            after = MigrationContext.configure(conn).get_current_revision()
            conn.commit()
    except CommandError as exc:
        raise DatabaseError(f"cannot migrate {_safe_url(engine)} to {revision}: {exc}") from exc
    except SQLAlchemyError as exc:
        raise DatabaseError(_describe(engine, "cannot migrate", exc)) from exc
    if before != after:
        log.info("database %s migrated from %s to %s", _safe_url(engine), before or "nothing", after)
    return before, after


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    elif conn.dialect.name == "sqlite":
        # pysqlite opens no transaction before DDL on its own; this one also takes the write lock.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _safe_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _describe(engine: Engine, what: str, exc: SQLAlchemyError) -> str:
    return f"{what} {_safe_url(engine)}: {exc.__class__.__name__}: {str(exc).splitlines()[0]}"
