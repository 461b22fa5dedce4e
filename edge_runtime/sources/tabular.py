"""Tabular rows for scikit-learn-style models: CSV, JSON lines, or a 2-D .npy array."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import DecodeError, SourceError
from ._base import Frame, Source

__all__ = ["TABULAR_SUFFIXES", "TabularSource"]

TABULAR_SUFFIXES = frozenset({".csv", ".jsonl", ".ndjson", ".npy"})


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
            reader = csv.reader(f)
            i = 0
            for lineno, row in enumerate(reader, start=1):
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


def _row(obj: Any, where: str) -> list[Any]:
    if isinstance(obj, dict):
        obj = obj.get("features", list(obj.values()))
    if not isinstance(obj, list):
        raise DecodeError(f"{where}: a row must be a JSON array or object of numbers")
    return obj
