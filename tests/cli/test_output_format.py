"""The terminal line of each kind of record, and the CSV row, from records as the runtime makes them."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from edge_cli._output import format_record, summary_lines
from edge_runtime import Record, SinkError, open_sink

BASE: Record = {"ts": "2026-01-01T00:00:00.000Z", "source": "/photos/street.jpg", "frame": 3,
                "latency_ms": {"preprocess": 1.0, "inference": 20.0, "postprocess": 0.5, "total": 21.54},
                "model": {"name": "ssd", "version": 2}, "backend": "litert", "path": "local"}


def plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_detections_show_count_and_best_few() -> None:
    dets = [{"label": f"obj{i}", "score": 0.9 - i / 10, "box": [0.0, 0.0, 1.0, 1.0]} for i in range(5)]
    line = plain(format_record({**BASE, "detections": dets}, Path("/photos")))  # type: ignore[typeddict-item]
    assert line.startswith("street.jpg ")
    assert "5 objects: obj0 0.90, obj1 0.80, obj2 0.70, +2 more" in line
    assert line.endswith("21.5 ms")
    assert "no objects" in plain(format_record({**BASE, "detections": []}))  # type: ignore[typeddict-item]


def test_values_rows_and_errors() -> None:
    row: Record = {**BASE, "source": "rows.csv", "values": [1.5, 2.25]}  # type: ignore[typeddict-item]
    line = plain(format_record(row))
    assert line.startswith("rows.csv #3") and "values 1.5, 2.25" in line
    bad: Record = {"ts": BASE["ts"], "source": "/photos/x.png", "frame": 0, "error": "x.png: cannot decode"}
    assert plain(format_record(bad, Path("/photos"))).split() == ["x.png", "error:", "x.png:", "cannot", "decode"]


def test_csv_rows_flatten_every_kind(tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    sink = open_sink(str(out))
    sink.write({**BASE, "top_k": [{"label": "cat", "score": 0.8}]})  # type: ignore[typeddict-item]
    sink.write({**BASE, "detections": [{"label": "car", "score": 0.7, "box": [1, 2, 3, 4]}]})  # type: ignore[typeddict-item]
    sink.write({**BASE, "values": [0.5]})  # type: ignore[typeddict-item]
    sink.write({"ts": BASE["ts"], "source": "x", "frame": 9, "error": "bad, \"quoted\"\nline"})
    sink.close()
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["top_label"] for r in rows] == ["cat", "", "", ""]
    assert [r["detections"] for r in rows] == ["", "1", "", ""]
    assert json.loads(rows[1]["results_json"])[0]["box"] == [1, 2, 3, 4]
    assert json.loads(rows[2]["results_json"]) == [0.5]
    assert rows[3]["error"] == "bad, \"quoted\"\nline" and rows[3]["model"] == ""
    # Another file under the same name with other columns is not appended to.
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(SinkError, match="other columns"):
        open_sink(str(other))


def test_summary_names_files_not_stdout(tmp_path: Path) -> None:
    from edge_cli._output import open_outputs

    outs = open_outputs(["-", str(tmp_path / "a.jsonl")], human=False)
    for o in outs:
        o.write({**BASE, "top_k": [{"label": "cat", "score": 0.8}]})  # type: ignore[typeddict-item]
        o.close()
    assert summary_lines(outs) == [f"wrote {tmp_path / 'a.jsonl'} (JSON lines): 1 record, 0 errors"]


def test_terminal_names_files_relative_to_the_folder_or_glob(tmp_path: Path) -> None:
    from edge_cli._run import _display_root

    assert _display_root(str(tmp_path)) == tmp_path
    assert _display_root("photos/2024/*.jpg") == Path("photos/2024")
    assert _display_root("*.png") is None and _display_root(str(tmp_path / "one.png")) is None
    rec: Record = {**BASE, "source": "photos/2024/a/b.jpg", "top_k": [{"label": "cat", "score": 0.5}]}  # type: ignore[typeddict-item]
    assert plain(format_record(rec, _display_root("photos/2024/**/*.jpg"))).startswith("a/b.jpg ")
