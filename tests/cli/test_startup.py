"""What the CLI imports before it needs it: `edge --help` loads no ML stack, `edge run` to stdout no SQLite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Runs `edge ARGS...` in-process and reports, at exit, which of the named modules were imported.
_PROBE = """
import atexit, json, sys
watch = sys.argv[1].split(",")
atexit.register(lambda: print(json.dumps(sorted(m for m in watch if m in sys.modules)), file=sys.stderr))
sys.argv = ["edge", *sys.argv[2:]]
from edge_cli import main
main()
"""


def imported(watch: list[str], *args: str) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", _PROBE, ",".join(watch), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    found: list[str] = json.loads(proc.stderr.strip().splitlines()[-1])
    return found


def test_help_imports_no_runtime() -> None:
    assert imported(["edge_runtime", "numpy", "pydantic", "PIL", "cryptography"], "--help") == []
    assert imported(["edge_runtime", "numpy", "pydantic"], "cloud", "--help") == []


def test_run_to_stdout_imports_no_sqlite(mobilenet_bundle: Path, shared_data: Path) -> None:
    args = ["run", str(mobilenet_bundle), "--source", str(shared_data / "images" / "cat.png")]
    assert imported(["sqlite3", "ai_edge_litert"], *args) == ["ai_edge_litert"]


def test_run_one_image_imports_only_what_it_uses(mobilenet_bundle: Path, shared_data: Path) -> None:
    """One image from a bundle directory: no process pool (multiprocessing), no tar, no OpenSSL for
    a small model's hash, no PIL drawing, no numpy.ma (the summary's percentiles), no pydantic (the
    manifest and the device profiles are stdlib-validated records): each costs start-up time and resident
    memory (scripts/bench_startup.py)."""
    args = ["run", str(mobilenet_bundle), "--source", str(shared_data / "images" / "cat.png")]
    watch = ["multiprocessing", "concurrent.futures.process", "tarfile", "_hashlib", "PIL.ImageDraw", "numpy.ma",
             "pydantic", "pydantic_core"]
    assert imported(watch, *args) == []
