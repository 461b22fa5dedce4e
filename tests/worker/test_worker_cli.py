"""`edge worker` errors that need no broker: a missing extra, an unreachable broker, a bad URL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.net import free_port
from tests.support.paths import ROOT

# Makes every import of pika fail, like a machine without the [worker] extra.
_NO_PIKA = """
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] == "pika":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _Block())
sys.argv = ["edge", *sys.argv[1:]]
from edge_cli import main
main()
"""


def edge(*args: str, shim: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", shim, *args] if shim else [sys.executable, "-m", "edge_cli", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_without_pika_one_error_line_names_the_extra(mobilenet_bundle: Path) -> None:
    proc = edge("worker", str(mobilenet_bundle), "--broker", "amqp://127.0.0.1:9/", "--queue", "q", shim=_NO_PIKA)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: edge worker needs pika: pip install 'edge-runtime[worker]'"]


def test_an_unreachable_broker_is_one_error_line_without_the_password(mobilenet_bundle: Path) -> None:
    port = free_port()  # nothing listens there
    proc = edge("worker", str(mobilenet_bundle), "--broker", f"amqp://bob:s3cret@127.0.0.1:{port}/%2F",
                "--queue", "q")
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot connect to the broker amqp://bob:***@127.0.0.1:{port}/%2F"), last
    assert "s3cret" not in proc.stderr
    assert "Traceback" not in proc.stderr


def test_prefetch_is_bounded(mobilenet_bundle: Path) -> None:
    proc = edge("worker", str(mobilenet_bundle), "--broker", "amqp://127.0.0.1:9/", "--queue", "q",
                "--prefetch", "0")
    assert proc.returncode == 2
    assert "--prefetch" in proc.stderr and "0 is not in the range 1<=x<=1000" in proc.stderr
