"""Rows into SQLite or PostgreSQL: the ``batch_predictions`` table of ``cloud_sync.db``.

The database is brought to the newest schema revision on open (``make_engine``, Alembic), like
the service and the ingester do, so a batch can write into the cloud's own database. Each
``write`` is one transaction of ``INSERT ... ON CONFLICT DO NOTHING`` on the primary key: a row
that is there already (a re-run, a resumed run, two jobs racing) is kept as it is.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from ..db import batch_predictions, make_engine
from ._errors import BatchError
from ._predictor import Row

__all__ = ["SqlOutput"]

log = logging.getLogger(__name__)
_JSON_COLUMNS = ("detections", "values", "record")


class SqlOutput:
    def __init__(self, url: str) -> None:
        self.engine: Engine = make_engine(url)
        self.description = self.engine.url.render_as_string(hide_password=True)
        insert = postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        self._insert = (insert(batch_predictions).on_conflict_do_nothing()
                        .returning(batch_predictions.c.source_key))

    def done_keys(self, model_name: str, model_version: int) -> set[str]:
        t = batch_predictions
        query = select(t.c.source_key).where(t.c.model_name == model_name, t.c.model_version == model_version)
        try:
            with self.engine.connect() as conn:
                return set(conn.execute(query).scalars())
        except SQLAlchemyError as exc:
            raise BatchError(f"{self.description}: cannot read the rows already written: {_first(exc)}") from exc

    def write(self, rows: Sequence[Row]) -> int:
        if not rows:
            return 0
        values = [_to_sql(r) for r in rows]
        try:
            with self.engine.begin() as conn:
                # One statement, compiled once and cached, run as an executemany: SQLAlchemy's
                # "insertmanyvalues" batches it into multi-row INSERTs (a .values(list) statement
                # would be compiled anew for every write, which cost more than the database).
                # RETURNING gives the rows really inserted (psycopg's rowcount is -1 here).
                added = len(conn.execute(self._insert, values).all())
        except SQLAlchemyError as exc:
            raise BatchError(f"{self.description}: cannot write {len(rows)} row(s): {_first(exc)}") from exc
        return added

    def close(self) -> None:
        self.engine.dispose()


def _to_sql(row: Row) -> dict[str, Any]:
    out: dict[str, Any] = dict(row)
    out["ts"] = datetime.fromisoformat(row["ts"].replace("Z", "+00:00"))
    for col in _JSON_COLUMNS:
        text = out[col]
        out[col] = json.loads(text) if text is not None else None
    return out


def _first(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"
