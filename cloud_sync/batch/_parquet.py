"""Rows into Parquet: a directory of parts, or one ``.parquet`` file.

Directory: every ``write`` adds one part file (``part-<time>-<id>.parquet``), written under a
temporary name and renamed into place, so a part is either whole or absent. Resuming re-reads the
key columns of the parts already there (cheap: Parquet is columnar) and skips those keys; no
manifest can disagree with the parts because the parts are the manifest.

One file (``out.parquet`` that is not a directory): the parts go to ``out.parquet.parts/`` while
the run goes on and are merged into ``out.parquet`` (with the rows it already had, each key once)
when the run ends. A killed run leaves its parts there, and the next run counts them as done and
merges them too. The merge rewrites the whole file: use a directory for large outputs.

Lists (``detections``, ``values``) and the whole ``record`` are JSON text columns; ``ts`` is a
UTC timestamp.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from ._errors import BatchError
from ._predictor import ROW_COLUMNS, Row

__all__ = ["ParquetOutput"]

log = logging.getLogger(__name__)
_KEY = ("source_key", "model_name", "model_version")


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema([
        ("source_key", pa.string()), ("model_name", pa.string()), ("model_version", pa.int64()),
        ("ts", pa.timestamp("ms", tz="UTC")), ("backend", pa.string()), ("top_label", pa.string()),
        ("top_score", pa.float64()), ("detections", pa.string()), ("values", pa.string()),
        ("latency_ms", pa.float64()), ("error", pa.string()), ("record", pa.string()),
    ])


class ParquetOutput:
    def __init__(self, target: Path) -> None:
        try:
            import pyarrow  # noqa: F401
        except ImportError as exc:
            raise BatchError("Parquet output needs pyarrow: pip install 'edge-runtime[batch]'") from exc
        self.target = target
        self.single = not target.is_dir() and not str(target).endswith("/") and target.suffix == ".parquet"
        self.parts_dir = target.with_name(target.name + ".parts") if self.single else target
        self.description = str(target)
        try:
            self.parts_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BatchError(f"{self.parts_dir}: cannot create the output directory ({exc.strerror})") from exc
        #: keys (source, name, version) this output holds: read once, then kept up to date by write()
        self._known: set[tuple[str, str, int]] | None = None
        self._wrote_parts = False

    # -- reading what is there -----------------------------------------------------------------
    def _files(self) -> list[Path]:
        files = sorted(self.parts_dir.glob("part-*.parquet"))
        if self.single and self.target.is_file():
            files.insert(0, self.target)
        return files

    def _load_known(self) -> set[tuple[str, str, int]]:
        import pyarrow.parquet as pq

        if self._known is None:
            known: set[tuple[str, str, int]] = set()
            for f in self._files():
                try:
                    t = pq.read_table(f, columns=list(_KEY))
                except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError
                    raise BatchError(f"{f}: not a readable Parquet file of batch rows ({exc})") from exc
                known.update(zip(*(t.column(c).to_pylist() for c in _KEY), strict=True))
            self._known = known
        return self._known

    def done_keys(self, model_name: str, model_version: int) -> set[str]:
        return {k for k, n, v in self._load_known() if n == model_name and v == model_version}

    # -- writing -------------------------------------------------------------------------------
    def write(self, rows: Sequence[Row]) -> int:
        import pyarrow as pa
        import pyarrow.parquet as pq

        known = self._load_known()
        fresh: list[Row] = []
        for r in rows:
            key = (r["source_key"], r["model_name"], int(r["model_version"]))
            if key not in known:
                known.add(key)
                fresh.append(r)
        if not fresh:
            return 0
        cols: dict[str, list[Any]] = {c: [r[c] for r in fresh] for c in ROW_COLUMNS}  # type: ignore[literal-required]
        cols["ts"] = [datetime.fromisoformat(t.replace("Z", "+00:00")) for t in cols["ts"]]
        table = pa.table(cols, schema=_schema())
        name = f"part-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}.parquet"
        tmp = self.parts_dir / f".{name}.tmp"
        try:
            pq.write_table(table, tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, self.parts_dir / name)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise BatchError(f"{self.parts_dir}: cannot write a Parquet part ({exc.strerror or exc})") from exc
        self._wrote_parts = True
        return len(fresh)

    def close(self) -> None:
        if self.single:
            self._merge()

    def _merge(self) -> None:
        """Fold the parts into the one file, each key once, and remove them."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        parts = sorted(self.parts_dir.glob("part-*.parquet"))
        if not parts:
            shutil.rmtree(self.parts_dir, ignore_errors=True)
            return
        tables = [pq.read_table(f) for f in self._files()]
        merged = pa.concat_tables([t.cast(_schema()) for t in tables])
        seen: set[tuple[str, str, int]] = set()
        keep = []
        for i, key in enumerate(zip(*(merged.column(c).to_pylist() for c in _KEY), strict=True)):
            if key not in seen:
                seen.add(key)
                keep.append(i)
        if len(keep) != merged.num_rows:
            merged = merged.take(pa.array(keep, type=pa.int64()))
        tmp = self.target.with_name(f".{self.target.name}.tmp")
        try:
            pq.write_table(merged, tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, self.target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise BatchError(f"{self.target}: cannot write ({exc.strerror or exc}); the rows stay in "
                             f"{self.parts_dir}") from exc
        shutil.rmtree(self.parts_dir, ignore_errors=True)
        log.info("%s: %d row(s) (%d part(s) merged)", self.target, merged.num_rows, len(parts))
