"""The fd-2 filter around model loading: library chatter goes, real messages stay, -v keeps all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_CHILD = """
import logging, os, sys
from edge_cli._quiet import native_stderr_filtered, quiet_libraries
quiet_libraries(int(sys.argv[1]))
logging.basicConfig(level=logging.WARNING)
with native_stderr_filtered():
    # what C++ runtimes write straight to the descriptor
    os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n")
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
    os.write(2, b"I0000 00:00:1796139182.753232   18646 port.cc:153] oneDNN custom operations are on.\\n")
    os.write(2, b"ERROR: Didn't find op for builtin opcode 'FOO'\\n")
    logging.getLogger("edge_runtime.x").warning("a warning of ours")
    logging.getLogger("absl").warning("absl says hello")
print("done", flush=True)
"""


def run(verbose: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _CHILD, str(verbose)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_chatter_is_dropped_and_real_messages_pass() -> None:
    proc = run(0)
    assert proc.returncode == 0 and proc.stdout == "done\n"
    assert proc.stderr.splitlines() == ["ERROR: Didn't find op for builtin opcode 'FOO'",
                                        "WARNING:edge_runtime.x:a warning of ours"]


def test_verbose_keeps_everything() -> None:
    err = run(1).stderr
    for fragment in ("XNNPACK", "absl::InitializeLog", "oneDNN", "FOO", "a warning of ours", "absl says hello"):
        assert fragment in err
