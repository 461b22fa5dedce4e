"""The output interface: where rows go, and which keys are done already.

``open_output`` picks one from the target: ``sqlite:///path.db`` or ``postgresql://...``
(``_sql.py``, the ``batch_predictions`` table of ``cloud_sync.db``), or ``path.parquet`` / a
directory (``_parquet.py``). Every output is keyed by ``(source_key, model_name, model_version)``:
``done_keys`` lets the driver skip finished inputs before scheduling anything, and ``write``
never stores a key twice, so a re-run or a resumed run adds only the missing rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from ._errors import BatchError
from ._predictor import Row

__all__ = ["Output", "open_output"]


class Output(Protocol):
    #: what the summary names the output as (no password)
    description: str

    def done_keys(self, model_name: str, model_version: int) -> set[str]:
        """Source keys already written for this model version."""
        ...

    def write(self, rows: Sequence[Row]) -> int:
        """Store ``rows`` durably (one transaction, one file); returns how many were new."""
        ...

    def close(self) -> None: ...


def open_output(target: str) -> Output:
    if target.startswith(("sqlite:", "postgresql:", "postgresql+", "postgres:")):
        from ._sql import SqlOutput

        return SqlOutput(target)
    p = Path(target)
    if target.endswith(".parquet") or p.is_dir() or target.endswith("/"):
        from ._parquet import ParquetOutput

        return ParquetOutput(p)
    raise BatchError(f"{target!r}: not an output (sqlite:///path.db, postgresql://user@host/db, "
                     "path.parquet or a directory of Parquet parts)")
