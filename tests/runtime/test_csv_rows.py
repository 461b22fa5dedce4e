"""CSV rows: the block parser (NumPy's, for plain rows of numbers) gives exactly the frames the
csv module with float() per cell gives, line numbers and error frames included."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime.sources import TabularSource


def reference(path: Path) -> list[tuple[int, str, list[float] | None, str | None]]:
    """What a CSV reader written the obvious way gives: one row at a time through the csv module."""
    out: list[tuple[int, str, list[float] | None, str | None]] = []
    with path.open(newline="", encoding="utf-8") as f:
        i = 0
        for lineno, row in enumerate(csv.reader(f), start=1):
            if not row or all(not c.strip() for c in row):
                continue
            where = f"{path}:{lineno}"
            try:
                values = [float(c) for c in row]
            except ValueError:
                if lineno == 1:
                    continue
                out.append((i, where, None, f"{where}: not all values are numbers: {row[:6]}"))
            else:
                out.append((i, where, values, None))
            i += 1
    return out


def frames(path: Path) -> list[tuple[int, str, Any, str | None]]:
    return [(f.index, f.source, None if f.data is None else f.data.tolist(), f.error) for f in TabularSource(path)]


def rows(n: int, fmt: str = "{i},{h},{m}\n", **special: str) -> str:
    return "".join(special.get(f"l{i}", fmt.format(i=i, h=i * 0.5, m=-i)) for i in range(n))


CASES = {
    "plain": rows(1200),
    "header": "a,b,c\n" + rows(1100),
    "crlf": "a,b\r\n" + rows(700, "{i},{h}\r\n"),
    "blank lines and blank cells": rows(1000, l5="\n", l600="\n", l900=" , \n"),
    "a word in block 2": rows(1000, l777="x,1,2\n"),
    "ragged": rows(1000, l600="1,2\n"),
    "quoted, a field spanning lines": rows(1000, l700='"7","8\n9",3\n'),
    "what float() takes and NumPy may not": rows(1000, l520="1_0,2,3\n", l521="nan,inf,-inf\n",
                                                   l522=" 1.5 ,  -2e3 ,4\n", l523="#3,4,5\n"),
    "trailing comma": rows(800, l550="1,2,3,\n"),
    "one column": rows(900, "{i}\n"),
    "no final newline": "1,2\n3,4",
    "only a header": "a,b\n",
    "empty": "",
}


@pytest.mark.parametrize("name", list(CASES))
def test_block_parser_equals_row_by_row(name: str, tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_bytes(CASES[name].encode())
    want, got = reference(path), frames(path)
    assert len(got) == len(want)
    for w, g in zip(want, got, strict=True):
        assert g[:2] == w[:2] and g[3] == w[3]
        if w[2] is None:
            assert g[2] is None
        else:
            assert np.array_equal(np.asarray(g[2]), np.asarray(w[2]), equal_nan=True)


def test_values_keep_every_digit(tmp_path: Path) -> None:
    """The block parser rounds each decimal string to the same float64 as float() does."""
    rng = np.random.default_rng(0)
    vals = rng.standard_normal((700, 5)) * 10.0 ** rng.integers(-12, 12, (700, 5))
    path = tmp_path / "rows.csv"
    path.write_text("".join(",".join(repr(float(v)) for v in row) + "\n" for row in vals))
    got = np.stack([f.data for f in TabularSource(path)])
    assert got.dtype == np.float64 and np.array_equal(got, vals)
