"""A detector's records in the SQLite sink: one row per object, queryable by label, and the best
object as the record's top label."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from edge_runtime import Record, SqliteSink


def _record(frame: int, detections: list[dict]) -> Record:
    return {"ts": "2026-12-01T00:00:00.000Z", "source": f"f{frame}.jpg", "frame": frame,
            "detections": detections, "model": {"name": "yolo", "version": 2}}  # type: ignore[typeddict-item]


def test_objects_are_rows_and_the_best_is_the_top_label(tmp_path: Path) -> None:
    sink = SqliteSink(tmp_path / "out.db", commit_every=1)
    sink.write(_record(0, [{"label": "kite", "score": 0.9, "box": [1.0, 2.0, 3.0, 4.0]},
                           {"label": "person", "score": 0.8, "box": [5.0, 6.0, 7.0, 8.0]}]))
    sink.write(_record(1, []))
    sink.write({"ts": "2026-12-01T00:00:01.000Z", "source": "c.png", "frame": 2,
                "top_k": [{"label": "cat", "score": 0.7}]})
    sink.close()
    db = sqlite3.connect(tmp_path / "out.db")
    assert db.execute("SELECT frame, top_label, top_score FROM records ORDER BY id").fetchall() == [
        (0, "kite", 0.9), (1, None, None), (2, "cat", 0.7)]
    rows = db.execute("SELECT r.frame, d.idx, d.label, d.score, d.x1, d.y1, d.x2, d.y2 FROM detections d "
                      "JOIN records r ON r.id = d.record_id ORDER BY r.id, d.idx").fetchall()
    assert rows == [(0, 0, "kite", 0.9, 1.0, 2.0, 3.0, 4.0), (0, 1, "person", 0.8, 5.0, 6.0, 7.0, 8.0)]
    assert db.execute("SELECT count(*) FROM detections WHERE label = 'person'").fetchone() == (1,)
