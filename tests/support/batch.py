"""Helpers of the `edge batch` tests: copies of the reference images whose label is known, and the
rows of an output (SQLite, PostgreSQL or Parquet) read back as dicts."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from tests.support.data import IMAGES_DIR, MOBILENET_TOP1

COLUMNS = ("source_key", "model_name", "model_version", "top_label", "top_score", "error", "record")


def make_images(directory: Path, n: int, *, link: bool = False) -> list[Path]:
    """``n`` copies of the reference images, named ``<image>-<i>.png`` so the label is known;
    hard links with ``link`` (many inputs, little disk)."""
    directory.mkdir(parents=True, exist_ok=True)
    names = sorted(MOBILENET_TOP1)
    out = []
    for i in range(n):
        name = names[i % len(names)]
        dst = directory / f"{Path(name).stem}-{i:04d}.png"
        if link:
            try:
                os.link(IMAGES_DIR / name, dst)
            except OSError:  # another filesystem
                shutil.copyfile(IMAGES_DIR / name, dst)
        else:
            shutil.copyfile(IMAGES_DIR / name, dst)
        out.append(dst)
    return out


def expected_label(key: str) -> str:
    """The reference top-1 label of a copy made by ``make_images``."""
    stem = key.rsplit("/", 1)[-1].rsplit("-", 1)[0]
    return MOBILENET_TOP1[f"{stem}.png"]


def read_rows(output: str) -> list[dict[str, Any]]:
    """Every row of an output, as dicts of ``COLUMNS`` (``record`` parsed), sorted by key."""
    if "://" in output:
        from sqlalchemy import create_engine, text

        url = output.replace("postgresql://", "postgresql+psycopg://", 1)
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                result = conn.execute(text(f"SELECT {', '.join(COLUMNS)} FROM batch_predictions"))
                rows = [dict(r._mapping) for r in result]
        finally:
            engine.dispose()
        for r in rows:
            if isinstance(r["record"], str):  # SQLite returns JSON as text through text()
                r["record"] = json.loads(r["record"])
    else:
        import pyarrow.parquet as pq

        path = Path(output)
        files = sorted(path.glob("part-*.parquet")) if path.is_dir() else [path]
        rows = []
        for f in files:
            rows.extend(pq.read_table(f, columns=list(COLUMNS)).to_pylist())
        for r in rows:
            r["record"] = json.loads(r["record"])
    return sorted(rows, key=lambda r: (r["source_key"], r["model_name"], r["model_version"]))


def row_count(output: str) -> int:
    """How many rows an output holds."""
    return len(read_rows(output))


# Credentials moto accepts, for the S3 sources of the batch tests.
S3_TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}
