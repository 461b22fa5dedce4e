"""Running `edge` for the tests: in-process (exit code, stdout and stderr); in a subprocess against
a registry; or in a subprocess whose import system refuses some libraries, as a machine without
their extra would."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edge_cli import main
from tests.support.paths import ROOT, env_with_project
from tests.support.service import ADMIN_TOKEN


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


# Makes every import of the listed top-level packages fail, like a machine without them.
_BLOCKING_SHIM = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _Block())
sys.argv = ["edge", *sys.argv[2:]]
from edge_cli import main
main()
"""


def edge_without(blocked: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``edge *args`` in a subprocess where importing any of ``blocked`` (comma-separated top-level
    packages) fails; nothing is uninstalled from the shared environment."""
    return subprocess.run([sys.executable, "-c", _BLOCKING_SHIM, blocked, *args], cwd=ROOT,
                          env=env_with_project(), capture_output=True, text=True, timeout=300)


def edge_against(*args: str, url: str | None = None,
                 token: str | None = ADMIN_TOKEN) -> subprocess.CompletedProcess[str]:
    """``python -m edge_cli *args`` in a subprocess, the registry's URL and token through the
    environment (as an operator keeps the token out of `ps`), no ``EDGE_*`` of the machine running
    the tests."""
    env = env_with_project()
    if url is not None:
        env["EDGE_REGISTRY_URL"] = url
    if token is not None:
        env["EDGE_REGISTRY_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "edge_cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)
