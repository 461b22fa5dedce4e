"""`edge run` as a person and as a script see it: terminal lines, JSON in a pipe, files by extension,
directory recursion, a reader that stops early, and no library chatter on stderr."""

from __future__ import annotations

import csv
import json
import os
import pty
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EDGE = [sys.executable, "-m", "edge_cli"]
REFERENCE_TOP1 = {"cat.png": "Egyptian cat", "grace_hopper.png": "military uniform", "sunflower.png": "daisy",
                  "potato_chips.png": "packet"}


def edge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGE, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture()
def images(shared_data: Path) -> Path:
    return shared_data / "images"


def test_terminal_gets_readable_lines_and_a_summary_naming_the_outputs(mobilenet_bundle: Path, images: Path,
                                                                       tmp_path: Path) -> None:
    out_csv = tmp_path / "results.csv"
    master, slave = pty.openpty()
    proc = subprocess.Popen([*EDGE, "run", str(mobilenet_bundle), "--source", str(images), "-o", str(out_csv)],
                            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    text = re.sub(r"\x1b\[[0-9;]*m", "", b"".join(chunks).decode())
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert not any(ln.lstrip().startswith("{") for ln in lines), "no JSON on a terminal"
    # One line per frame: the file (relative to the directory), its top label and score, milliseconds.
    for name, label in REFERENCE_TOP1.items():
        (line,) = [ln for ln in lines if ln.startswith(name)]
        assert re.search(rf"{re.escape(label)} 0\.\d\d\b.* \d+\.\d ms$", line), line
    stderr = err.decode()
    assert "4 frame(s), 0 error(s)" in stderr
    assert f"wrote {out_csv} (CSV): 4 records, 0 errors" in stderr
    # The directory also holds the leaves/ and detection/ folders: said once, not silently dropped.
    assert re.search(r"warning: .*: \d+ subfolder\(s\) skipped; --recursive", stderr)


def test_piped_stdout_is_json_lines(mobilenet_bundle: Path, images: Path) -> None:
    proc = edge("run", str(mobilenet_bundle), "--source", str(images), "--top-k", "1")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert {Path(r["source"]).name: r["top_k"][0]["label"] for r in records} == REFERENCE_TOP1


def test_csv_output_has_one_row_per_frame(mobilenet_bundle: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    proc = edge("run", str(mobilenet_bundle), "--source", str(images), "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "", "with --output FILE only, stdout in a pipe stays empty"
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert {Path(r["source"]).name: r["top_label"] for r in rows} == REFERENCE_TOP1
    for r in rows:
        assert r["model"] == "mobilenet_v2" and r["backend"] == "litert" and r["error"] == ""
        assert float(r["latency_total_ms"]) > 0
        assert json.loads(r["results_json"])[0]["label"] == r["top_label"]
    # A second run appends under the same header.
    assert edge("run", str(mobilenet_bundle), "--source", str(images / "cat.png"), "-o", str(out)).returncode == 0
    with out.open(newline="") as f:
        assert len(list(csv.DictReader(f))) == 5


@pytest.mark.parametrize("name", ["results.txt", "results"])
def test_unknown_output_format_is_refused(mobilenet_bundle: Path, images: Path, tmp_path: Path, name: str) -> None:
    proc = edge("run", str(mobilenet_bundle), "--source", str(images / "cat.png"), "-o", str(tmp_path / name))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert ("'.txt'" if name.endswith(".txt") else "no extension") in line
    assert ".jsonl" in line and ".csv" in line and "sqlite:///" in line
    assert not (tmp_path / name).exists()


def test_recursive_finds_nested_images(mobilenet_bundle: Path, images: Path, tmp_path: Path) -> None:
    tree = tmp_path / "photos"
    (tree / "garden" / "more").mkdir(parents=True)
    (tree / ".hidden").mkdir()
    shutil.copy(images / "cat.png", tree / "cat.png")
    shutil.copy(images / "sunflower.png", tree / "garden" / "sunflower.png")
    shutil.copy(images / "grace_hopper.png", tree / "garden" / "more" / "grace_hopper.png")
    shutil.copy(images / "potato_chips.png", tree / ".hidden" / "potato_chips.png")

    flat = edge("run", str(mobilenet_bundle), "--source", str(tree))
    assert flat.returncode == 0, flat.stderr
    assert [Path(json.loads(x)["source"]).name for x in flat.stdout.splitlines()] == ["cat.png"]
    assert f"warning: {tree}: 1 subfolder(s) skipped; --recursive" in flat.stderr

    deep = edge("run", str(mobilenet_bundle), "--source", str(tree), "--recursive")
    assert deep.returncode == 0, deep.stderr
    found = {Path(json.loads(x)["source"]).name: json.loads(x)["top_k"][0]["label"] for x in deep.stdout.splitlines()}
    assert found == {"cat.png": "Egyptian cat", "sunflower.png": "daisy", "grace_hopper.png": "military uniform"}
    assert "warning" not in deep.stderr


def test_a_reader_that_stops_early_ends_the_run_quietly(mobilenet_bundle: Path, images: Path,
                                                        tmp_path: Path) -> None:
    many = tmp_path / "many"
    many.mkdir()
    n = 150
    for i in range(n):
        (many / f"img{i:03d}.png").symlink_to(images / "cat.png")
    # What `edge run ... | head -1` does: read one line, close the pipe.
    proc = subprocess.Popen([*EDGE, "run", str(mobilenet_bundle), "--source", str(many)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = json.loads(proc.stdout.readline())
    assert first["top_k"][0]["label"] == "Egyptian cat"
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert not re.search(r"error:|ERROR", err), err
    frames = int(re.search(r"(\d+) frame\(s\)", err).group(1))  # type: ignore[union-attr]
    assert frames < n, "inference must stop once nobody reads"


def test_library_logs_stay_off_stderr_unless_verbose(mobilenet_bundle: Path, images: Path) -> None:
    quiet = edge("run", str(mobilenet_bundle), "--source", str(images / "cat.png"))
    assert quiet.returncode == 0, quiet.stderr
    assert "XNNPACK" not in quiet.stderr and "INFO:" not in quiet.stderr
    assert quiet.stderr.splitlines() == [ln for ln in quiet.stderr.splitlines() if "frame(s)" in ln]
    # The same line is there with -v: the filter, not luck, kept it away.
    loud = edge("-v", "run", str(mobilenet_bundle), "--source", str(images / "cat.png"))
    assert loud.returncode == 0, loud.stderr
    assert "XNNPACK" in loud.stderr
