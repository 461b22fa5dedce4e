"""Alembic's environment: runs migrations on the connection ``cloud_sync.db.upgrade`` hands over.

``upgrade`` holds the migration lock (a PostgreSQL advisory lock, a file lock for SQLite) on that
connection, so this file never opens its own unless Alembic's own command line runs it with a
``sqlalchemy.url``.
"""

from __future__ import annotations

from alembic import context
from alembic.config import Config
from sqlalchemy import Connection

from cloud_sync.db import make_engine, metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things: later migrations rebuild tables in batch mode there.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _main(config: Config) -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection and no sqlalchemy.url: run migrations with cloud_sync.db.upgrade")
    engine = make_engine(url, create_tables=False)
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


# Alembic executes this file with its context set up; imported any other way, it does nothing.
_config: Config | None = getattr(context, "config", None)
if _config is not None:
    _main(_config)
