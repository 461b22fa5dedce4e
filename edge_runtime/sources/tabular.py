"""Tabular rows for scikit-learn-style models: CSV, JSON lines, or a 2-D .npy array."""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import DecodeError, SourceError
from ._base import Frame, Source

__all__ = ["TABULAR_SUFFIXES", "TabularSource"]

TABULAR_SUFFIXES = frozenset({".csv", ".jsonl", ".ndjson", ".npy"})

#: CSV lines parsed at once when they are plain rows of numbers
_CSV_BLOCK = 512


class TabularSource(Source):
    """One frame per row. A CSV header (a first row that is not all numbers) is skipped; a JSON
    line is an array of numbers or an object whose values are taken in order."""

    live = False

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        if not self.path.is_file():
            raise SourceError(f"{self.path}: no such file")
        suffix = self.path.suffix.lower()
        if suffix not in TABULAR_SUFFIXES:
            raise SourceError(f"{self.path}: tabular sources are .csv, .jsonl or .npy files")
        self._suffix = suffix

    def __iter__(self) -> Iterator[Frame]:
        if self._suffix == ".npy":
            yield from self._npy()
        elif self._suffix == ".csv":
            yield from self._csv()
        else:
            yield from self._jsonl()

    def _npy(self) -> Iterator[Frame]:
        try:
            arr = np.load(self.path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise SourceError(f"{self.path}: not a readable .npy array ({exc})") from exc
        if arr.ndim == 1:
            arr = arr[None, :]
        for i, row in enumerate(arr):
            yield Frame(index=i, source=self.name, data=row)

    def _csv(self) -> Iterator[Frame]:
        with self.path.open(newline="", encoding="utf-8") as f:
            lines = iter(f)
            i = 0
            first = list(itertools.islice(lines, 1))  # a header is only ever on line 1
            for frame in self._csv_slow(first, 1, 0):
                yield frame
                i += 1
            lineno = len(first)
            while True:
                block = list(itertools.islice(lines, _CSV_BLOCK))
                if not block:
                    return
                rows = _numeric_block(block)
                if rows is None:
                    # a quoted field may span lines: from a quote on, the csv module reads the rest
                    quoted = any('"' in line for line in block)
                    rest: Iterable[str] = itertools.chain(block, lines) if quoted else block
                    for frame in self._csv_slow(rest, lineno + 1, i):
                        yield frame
                        i += 1
                    if quoted:
                        return
                    lineno += len(block)
                    continue
                name = self.name
                for j in range(len(block)):
                    yield Frame(index=i, source=f"{name}:{lineno + j + 1}", data=rows[j])
                    i += 1
                lineno += len(block)

    def _csv_slow(self, lines: Iterable[str], first_lineno: int, first_index: int) -> Iterator[Frame]:
        """Rows one by one through the csv module: quoting, blank rows, the header, and a row that is
        not all numbers (an error frame naming its line)."""
        i = first_index
        for lineno, row in enumerate(csv.reader(lines), start=first_lineno):
            if not row or all(not c.strip() for c in row):
                continue
            try:
                values = [float(c) for c in row]
            except ValueError:
                if lineno == 1:
                    continue  # header
                yield Frame(index=i, source=f"{self.name}:{lineno}",
                            error=f"{self.name}:{lineno}: not all values are numbers: {row[:6]}")
                i += 1
                continue
            yield Frame(index=i, source=f"{self.name}:{lineno}", data=np.asarray(values))
            i += 1

    def _jsonl(self) -> Iterator[Frame]:
        with self.path.open(encoding="utf-8") as f:
            i = 0
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                where = f"{self.name}:{lineno}"
                try:
                    yield Frame(index=i, source=where, data=np.asarray(_row(json.loads(line), where), dtype=float))
                except (json.JSONDecodeError, DecodeError, ValueError, TypeError) as exc:
                    yield Frame(index=i, source=where, error=f"{where}: {exc}")
                i += 1


def _numeric_block(block: list[str]) -> np.ndarray | None:
    """The rows of ``block`` (lines of one CSV file) as one float64 array when every line is a
    plain row of numbers of the same length (NumPy's C parser: ~4x cheaper per row than the csv
    module and float() per cell, the same values), else None: the caller reads the block one row at
    a time, which names the bad row. Quotes, blank lines, comments and ragged rows take that path."""
    if any('"' in line or not line.strip() for line in block):
        return None
    try:
        rows = np.loadtxt(block, delimiter=",", dtype=np.float64, ndmin=2, comments=None)
    except ValueError:
        return None
    return rows if rows.shape[0] == len(block) else None


def _row(obj: Any, where: str) -> list[Any]:
    if isinstance(obj, dict):
        obj = obj.get("features", list(obj.values()))
    if not isinstance(obj, list):
        raise DecodeError(f"{where}: a row must be a JSON array or object of numbers")
    return obj
